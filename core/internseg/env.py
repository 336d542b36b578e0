"""Facts about the running environment, logged and stamped into checkpoints."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("torch", "onedl-mmengine", "onedl-mmcv", "onedl-mmsegmentation", "numpy",
            "huggingface_hub")


def versions() -> dict[str, str]:
    """Python's, ours and the libraries'. Ours is the package's constant, not the installed
    distribution's metadata, which an editable install leaves at the version it was installed
    with. Never part of a run's identity: a new release does not retrain finished runs."""
    from . import __version__

    out = {"python": platform.python_version(), "internseg": __version__}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The commit of the checkout this package runs from (an editable install, as `make
    install` makes), with ``-dirty`` when tracked files differ from it; None elsewhere."""
    root = Path(__file__).resolve().parents[2]

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=20)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def hardware() -> dict:
    """What the process computes on: the GPU model and how many this process sees, or the
    CPU."""
    import torch

    if torch.cuda.is_available():
        return dict(device=torch.cuda.get_device_name(0), gpus_visible=torch.cuda.device_count())
    return dict(device=f"cpu ({platform.machine()})", gpus_visible=0)
