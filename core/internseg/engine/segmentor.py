"""The segmentor outside the Runner: built from a config as the Runner builds it, which of
its state keys are the pretrained trunk's, and the state a run keeps as its result."""

from __future__ import annotations

import torch
from mmengine.config import Config
from mmengine.hooks import EMAHook
from mmengine.runner import FlexibleRunner


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


def is_trunk_key(model, key: str) -> bool:
    """Whether a segmentor state key is the pretrained trunk's (an adapter's own parts are
    not: they are trained, and kept, even when the trunk is frozen)."""
    backbone = model.backbone
    return key.startswith("backbone.") and (
        not hasattr(backbone, "is_trunk") or backbone.is_trunk(key.removeprefix("backbone.")))


def trainable_state(runner, as_validated: bool = False) -> dict:
    """State to keep as the run's result: everything (the EMA weights when an EMAHook
    averages them), minus a frozen trunk (it is the pretrained file, unchanged), as in the
    released head-only checkpoints. ``as_validated``: the model's weights as they are, which
    during a validation are already the EMA ones (the hook swaps them in). Collective under
    sharding (every rank gathers; rank 0 receives the state)."""
    ema = None if as_validated else next(
        (hook for hook in getattr(runner, "hooks", ()) if isinstance(hook, EMAHook)), None)
    if isinstance(runner, FlexibleRunner):
        model, state = runner.model, runner.strategy.model_state_dict()
    else:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        # with EMA the result is the average, as mmengine saves it in `state_dict`
        state = (ema.ema_model.module if ema is not None else model).state_dict()
    if getattr(model.backbone, "freeze_trunk", False):
        state = {k: v for k, v in state.items() if not is_trunk_key(model, k)}
    return {k: v.detach().cpu() for k, v in state.items()}


