"""What a long run shows while it trains: the gradient norm of every update, with its mean
and standard deviation over a sliding window (the original's training utilities track this
to spot instabilities), beside the loss and lr that mmengine logs already."""

from __future__ import annotations

import math

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmseg.registry import OPTIM_WRAPPERS

from ..errors import InputError

GRAD_NORM = "train/grad_norm"


def total_grad_norm(params) -> torch.Tensor | float:
    """L2 norm over all gradients; sharded (DTensor) gradients are reduced over the ranks.
    A 0-dim tensor, not a number: the message hub reads its value when it records it, so
    the norm itself needs no value (a rehearsal on fake tensors computes it as it is)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm


def window_stats(values) -> tuple[float, float]:
    """Mean and population standard deviation of the window's values."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


class GradNormRecording:
    """Records ``grad_norm`` at every optimizer update (not every accumulated micro-batch), and
    ``grad_norm_mean`` / ``grad_norm_std`` over the last ``grad_norm_window`` updates. It only
    reads the gradients: training is unchanged. ``max_grad_norm`` clips the total norm to it
    (None, as in the paper configs and the original: no clipping); mmengine's clipping then
    reports the pre-clip norm."""

    def __init__(self, *args, grad_norm_window: int = 50, max_grad_norm: float | None = None,
                 **kwargs):
        if max_grad_norm is not None:
            if max_grad_norm <= 0:
                raise InputError(f"max_grad_norm must be > 0, got {max_grad_norm}")
            kwargs["clip_grad"] = dict(max_norm=float(max_grad_norm))
        super().__init__(*args, **kwargs)
        if grad_norm_window < 1:
            raise InputError(f"grad_norm_window must be >= 1, got {grad_norm_window}")
        self.grad_norm_window = grad_norm_window

    def _record_grad_norm(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.message_hub.update_scalar(GRAD_NORM, total_grad_norm(params))

    def _record_window(self) -> None:
        history = self.message_hub.log_scalars.get(GRAD_NORM)
        if history is not None:
            values = history.data[0][-self.grad_norm_window:]
            mean, std = window_stats(values)
            self.message_hub.update_scalar(f"{GRAD_NORM}_mean", mean)
            self.message_hub.update_scalar(f"{GRAD_NORM}_std", std)


@OPTIM_WRAPPERS.register_module()
class GradNormOptimWrapper(GradNormRecording, OptimWrapper):
    """mmengine's OptimWrapper with the gradient-norm record of :class:`GradNormRecording`."""

    def step(self, **kwargs) -> None:
        if not self.clip_grad_kwargs:
            self._record_grad_norm()
        # with clip_grad, super().step() logs the norm under the same name while clipping
        super().step(**kwargs)
        self._record_window()


@OPTIM_WRAPPERS.register_module()
class GradNormAmpOptimWrapper(GradNormRecording, AmpOptimWrapper):
    """mmengine's AmpOptimWrapper (autocast, fp32 masters, dynamic loss scale; GPU only) with
    the same record. The gradients are unscaled before they are measured, so the norm is the
    true one; the scaler then skips a step whose gradients overflowed, as it does anyway."""

    def step(self, **kwargs) -> None:
        if not self.clip_grad_kwargs:
            # super().step() unscales only to clip; unscaling here once is what it would do
            self.loss_scaler.unscale_(self.optimizer)
            self._record_grad_norm()
        super().step(**kwargs)
        self._record_window()
