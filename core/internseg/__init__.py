"""internseg: the InternViT-6B ADE20K segmentation experiments, reproducible end to end."""

__version__ = "0.1.0"


def register_all() -> None:
    """Import the modules whose import registers models, hooks, metrics and constructors."""
    from . import models, transforms  # noqa: F401
    from .engine import batching, hooks, layer_decay, metrics, resilience, sharding  # noqa: F401
