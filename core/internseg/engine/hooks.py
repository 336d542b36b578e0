"""Runner hooks of our own."""

from __future__ import annotations

import numpy as np
from mmengine.hooks import Hook

from mmseg.registry import HOOKS

from ..env import versions


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
