"""internseg: the InternViT-6B ADE20K segmentation experiments, reproducible end to end."""

__version__ = "0.1.0"


def register_all() -> None:
    """Import the modules whose import registers models, hooks, metrics and constructors, and
    make every checkpoint mmengine loads for us a weights-only load."""
    from . import models, safe_load, transforms  # noqa: F401
    from .engine import (batching, hooks, identity, layer_decay, metrics,  # noqa: F401
                         observe, resilience, sharding)

    safe_load.install()
