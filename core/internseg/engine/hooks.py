"""Runner hooks of our own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mmengine.hooks import Hook

from mmseg.registry import HOOKS

from ..env import versions
from ..errors import InputError
from ..io import save_torch
from .segmentor import trainable_state


class TrainingDiverged(InputError):
    """The loss became NaN or infinite; the message names the iteration and what is kept."""


@HOOKS.register_module()
class VersionsMetaHook(Hook):
    """Stamps library versions into every checkpoint's ``meta`` (config text, class names and
    palette are already put there by mmengine)."""

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault("meta", {})["versions"] = versions()


@HOOKS.register_module()
class PlainMessageHubHook(Hook):
    """Keeps the Runner's checkpoints loadable with ``torch.load(weights_only=True)``.

    The message hub's ``HistoryBuffer`` objects pickle numpy arrays and the buffer's
    statistics methods (through ``getattr``), which a weights-only load refuses. They are
    saved as plain tensors (float64 and int64 hold numpy's values exactly) and rebuilt on
    load, so a resumed run logs and trains exactly as before. Numpy scalars in the runtime
    info (the ETA) become Python numbers, which hold the same value.
    """

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub")
        if hub and "log_scalars" in hub:
            # a new dict: the hub's state may share objects with the live hub
            checkpoint["message_hub"] = hub = dict(hub, log_scalars={
                key: plain_history(buffer) for key, buffer in hub["log_scalars"].items()})
        if hub and "runtime_info" in hub:
            hub["runtime_info"] = {key: value.item() if isinstance(value, np.generic) else value
                                   for key, value in hub["runtime_info"].items()}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub")
        if hub and "log_scalars" in hub:
            hub["log_scalars"] = {key: history_buffer(value) if isinstance(value, dict) else value
                                  for key, value in hub["log_scalars"].items()}


def plain_history(buffer) -> dict:
    import torch

    from mmengine.logging import HistoryBuffer

    if not isinstance(buffer, HistoryBuffer):
        return buffer
    return dict(log_history=torch.from_numpy(buffer._log_history.copy()),
                count_history=torch.from_numpy(buffer._count_history.copy()),
                max_length=int(buffer.max_length))


def history_buffer(state: dict):
    from mmengine.logging import HistoryBuffer

    return HistoryBuffer(state["log_history"].numpy(), state["count_history"].numpy(),
                         state["max_length"])


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stops the run when the loss is not finite, before the checkpoint hook could save the
    diverged state: the newest checkpoint in the work dir stays the last finite one. Every
    rank learns of a NaN on any rank, so they all stop at the same iteration."""

    priority = "ABOVE_NORMAL"  # before CheckpointHook (VERY_LOW) and PreemptionHook

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        import torch
        from mmengine import dist

        loss = (outputs or {}).get("loss")
        if loss is None:
            return
        loss = torch.as_tensor(loss).detach().float().sum()
        bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0])
        if dist.get_world_size() > 1:
            dist.all_reduce(bad, op="max")
        if bad.item():
            last = runner.message_hub.get_info("last_ckpt") or "none (no checkpoint yet)"
            raise TrainingDiverged(f"loss is {loss.item()} at "
                                   f"iteration {runner.iter + 1} of {runner.cfg.work_dir}; "
                                   f"last finite checkpoint: {last}")


@HOOKS.register_module()
class BestWeightsHook(Hook):
    """Keeps the weights of the best validations, as the original's ``save_best`` does, but
    weights only: after a validation whose ``metric`` beats every earlier one, the state a
    run's result holds (``trainable_state``: a frozen trunk left out) in ``dtype``, written
    atomically to ``best_<metric>_iter_<N>.pth`` in the work dir; the ``keep`` best stay.
    No optimizer state, so a file is a sixth of a resume checkpoint in bf16. Runs before
    mmengine's EMAHook swaps the raw weights back: with EMA it keeps the validated (EMA) ones.
    """

    priority = "ABOVE_NORMAL"

    def __init__(self, metric: str = "mIoU", keep: int = 1, dtype: str = "bfloat16"):
        import torch

        if keep < 1:
            raise InputError(f"BestWeightsHook: keep is {keep}; it keeps at least one file")
        self.metric, self.keep, self.dtype = metric, keep, getattr(torch, dtype)
        self.best: float | None = None
        self.kept: list[str] = []

    def after_val_epoch(self, runner, metrics=None) -> None:
        value = (metrics or {}).get(self.metric)
        if value is None or (self.best is not None and value <= self.best):
            return
        self.best = float(value)
        # collective under sharding: every rank calls it
        state = trainable_state(runner, as_validated=True)
        if runner.rank != 0:
            return
        state = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in state.items()}
        name = f"best_{self.metric}_iter_{runner.iter}.pth"
        save_torch(Path(runner.work_dir) / name, dict(
            meta=dict(iteration=runner.iter, metric=self.metric, value=self.best),
            state_dict=state))
        self.kept.append(name)
        while len(self.kept) > self.keep:
            (Path(runner.work_dir) / self.kept.pop(0)).unlink(missing_ok=True)
        runner.logger.info(f"best {self.metric} {self.best:.2f} at {runner.iter}: {name}")

    # remembered in the resume checkpoints: a resumed run keeps comparing with its best
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["best_weights"] = dict(best=self.best, kept=list(self.kept))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get("best_weights") or {}
        self.best, self.kept = saved.get("best"), list(saved.get("kept", []))
