"""Runner hooks of our own."""

from __future__ import annotations

import numpy as np
from mmengine.hooks import Hook

from mmseg.registry import HOOKS

from ..env import versions
from ..errors import InputError


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
