"""What a config's ``custom_imports`` makes mmengine import (``configs/_base_/default_runtime.py``).

Importing it registers internseg's models, hooks, metrics, strategies, optimizer wrappers and
transforms in the mmseg/mmengine registries, and makes every checkpoint mmengine loads for us
a weights-only load.
"""

from . import models, safe_load, transforms  # noqa: F401
from .engine import (batching, hooks, identity, layer_decay, metrics,  # noqa: F401
                     observe, resilience, sharding)

safe_load.install()
