"""internseg: the InternViT-6B ADE20K segmentation experiments, reproducible end to end."""

import re
import warnings

# The release: `internseg --version`, every run's provenance, pyproject's version (read from
# here), CHANGELOG.md's headings.
__version__ = "0.3.0"

# Two library warnings about choices made on purpose, filtered by their exact message so that
# a command's first line is ours. Here, because this file runs before any module of the
# package imports mmcv or mmseg (the CLI, a config's custom_imports, a spawned rank alike):
# - mmcv-lite has no compiled ops, and mmcv.cnn.bricks.transformer says so at import; our
#   multi-scale deformable attention is our own, in PyTorch (models/deform_attn.py).
# - mmseg's CrossEntropyLoss warns at every build whose avg_non_ignore is False, even when a
#   config sets it: the original's losses ran with False, and ours keep it.
for _message in (
        "Fail to import ``MultiScaleDeformableAttention`` from "
        "``mmcv.ops.multi_scale_deform_attn``, You should install ``mmcv`` rather than "
        "``mmcv-lite`` if you need this module. ",
        "Default ``avg_non_ignore`` is False, if you would like to ignore the certain label and "
        "average loss over non-ignore labels, which is the same with PyTorch official "
        "cross_entropy, set ``avg_non_ignore=True``."):
    warnings.filterwarnings("ignore", message=re.escape(_message) + r"\Z", category=UserWarning)
del _message
