"""Runner hooks of our own."""

from __future__ import annotations

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
