"""The segmentor outside the Runner: built from a config as the Runner builds it. It imports
the plugin (the registries a config fills), so what the plugin's hooks need of a segmentor
lives in :mod:`internseg.engine.result`, which imports nothing of ours."""

from __future__ import annotations

import torch
from mmengine.config import Config


def build_segmentor(cfg: Config, device: str = "cpu"):
    """The segmentor ``cfg.model`` describes, built outside a Runner in mmseg's registry scope
    as the Runner would build it, SyncBN reverted to BN as a one-process Runner does; on
    ``device`` ("meta" builds it without allocating memory)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    from mmseg.registry import MODELS

    from .. import plugin  # noqa: F401  (the registries a config's custom_imports fill)

    with DefaultScope.overwrite_default_scope("mmseg"), torch.device(device):
        return revert_sync_batchnorm(MODELS.build(cfg.model))
