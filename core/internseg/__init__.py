"""internseg: the InternViT-6B ADE20K segmentation experiments, reproducible end to end."""

__version__ = "0.1.0"
