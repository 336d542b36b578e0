"""Facts about the running environment, logged and stamped into checkpoints."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("internseg", "torch", "onedl-mmengine", "onedl-mmcv", "onedl-mmsegmentation",
            "numpy", "huggingface_hub")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
