"""The aggregated table and plots."""
