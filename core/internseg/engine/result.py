"""What a run keeps as its result: which of a segmentor's state keys are the pretrained
trunk's, and the state saved as ``final.pth`` (a frozen trunk left out)."""

from __future__ import annotations

from mmengine.hooks import EMAHook
from mmengine.runner import FlexibleRunner


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


