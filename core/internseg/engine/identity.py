"""A run's identity: one digest of everything that decides its weights.

A work dir holds the checkpoints of one identity (``run_identity.json``). Resuming continues
only that identity: a changed seed, lr, split, pretrained file or dataset starts from
iteration 0, and the old work dir is moved aside, never deleted. The digest is also stored in
every checkpoint's meta and in ``final.pth``.

What does not decide the weights stays out: paths (their contents are hashed instead), the
work dir, validation and checkpoint settings, the launcher. The batch layout stays in: with
gradient accumulation an iteration is a micro-batch, so a checkpoint of one layout does not
mean the same point of training in another.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmengine.hooks import Hook

from mmseg.registry import HOOKS

from ..errors import InputError, MissingFileError
from ..io import hash_file, read_json, recorded_sha256, write_json
from ..splits import checked_sha256

log = logging.getLogger("internseg")

IDENTITY_FILE = "run_identity.json"
# Top-level config entries that decide the weights (everything else is bookkeeping).
WEIGHT_DECIDING_KEYS = ("model", "optim_wrapper", "param_scheduler", "train_dataloader",
                        "train_cfg", "randomness", "custom_hooks", "batch_plan",
                        "total_batch_size")
# Hooks that only observe or save; the others (seeding, schedule stepping, EMA) shape training.
OBSERVING_HOOKS = {"PreemptionHook", "RunIdentityHook", "GatheredValidationHook",
                   "VersionsMetaHook", "PlainMessageHubHook", "FiniteLossHook",
                   "BestWeightsHook", "DriftHook", "DriftStopHook"}
# How long ranks other than 0 wait for rank 0 to settle the work dir.
SETTLE_TIMEOUT_S = 600


class WorkDirBusy(InputError):
    """Another trainer holds the work dir."""


def training_config(cfg) -> dict:
    """The weight-deciding part of a resolved config, with paths removed (hashed elsewhere)."""
    resolved = cfg.to_dict()
    out = {key: resolved[key] for key in WEIGHT_DECIDING_KEYS if key in resolved}
    model = out.get("model", {})
    model.pop("test_cfg", None)
    model.get("backbone", {}).pop("pretrained", None)
    dataset = out.get("train_dataloader", {}).get("dataset", {})
    for path_key in ("data_root", "ann_file"):
        dataset.pop(path_key, None)
    out.get("train_cfg", {}).pop("val_interval", None)
    out.get("optim_wrapper", {}).pop("grad_norm_window", None)  # what is logged, not trained
    out.get("randomness", {}).pop("seed", None)  # a component of its own
    out["custom_hooks"] = [h for h in out.get("custom_hooks", [])
                           if h.get("type") not in OBSERVING_HOOKS]
    return out


def identity_components(cfg, *, split: str | None, pretrained: str | None,
                        load_from: str | None, data_root: str | None) -> dict:
    config_text = json.dumps(training_config(cfg), sort_keys=True, default=str)
    manifest = Path(data_root).parent / "manifest.json" if data_root else None
    return dict(
        config_sha256=hashlib.sha256(config_text.encode()).hexdigest(),
        seed=(cfg.get("randomness") or {}).get("seed"),
        split_sha256=checked_sha256(split, sidecar_required=False) if split else None,
        pretrained_sha256=recorded_sha256(existing(pretrained, "pretrained trunk"))
        if pretrained else None,
        load_from_sha256=(recorded_sha256(existing(load_from, "--load-from checkpoint"))
                          if load_from else None),
        dataset_manifest_sha256=(hash_file(manifest, "sha256")
                                 if manifest and manifest.is_file() else None),
    )


def existing(path: str | Path, what: str) -> Path:
    if not Path(path).is_file():
        raise MissingFileError(f"{what} not found: {path}")
    return Path(path)


def make_identity(cfg, **paths) -> dict:
    components = identity_components(cfg, **paths)
    return dict(digest=digest_of(components), components=components)


def digest_of(components: dict) -> str:
    return hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()


def read_identity(work_dir: str | Path) -> dict | None:
    path = Path(work_dir) / IDENTITY_FILE
    if not path.is_file():
        return None
    return read_json(path, "run identity")


def holds_a_run(work_dir: Path) -> bool:
    return work_dir.is_dir() and any(work_dir.glob("iter_*.pth"))


def settle_work_dir(work_dir: str | Path, identity: dict, keep: bool = False) -> Path | None:
    """Make ``work_dir`` this identity's: keep it if it holds the same run, else move it
    aside (returns where to) so that training starts from iteration 0. Records the identity.
    ``keep``: an explicit --resume-from, whose file may be in the work dir, keeps it."""
    work_dir = Path(work_dir)
    recorded = read_identity(work_dir)
    moved = None
    if recorded and recorded.get("digest") == identity["digest"]:
        return None
    if keep and (recorded or holds_a_run(work_dir)):
        log.warning("work dir %s holds another run; resuming from the given checkpoint as run "
                    "%s all the same", work_dir, identity["digest"][:12])
    elif recorded or holds_a_run(work_dir):
        if recorded:
            old = recorded.get("components", {})
            changed = sorted(k for k in {**old, **identity["components"]}
                             if old.get(k) != identity["components"].get(k))
            why = f"its run differs in {', '.join(changed)}"
            tag = recorded.get("digest", "unknown")[:12]
        else:
            why, tag = "it records no run identity", "unknown"
        moved = work_dir.with_name(f"{work_dir.name}.superseded-{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
        work_dir.rename(moved)
        log.warning("work dir %s: %s; moved it to %s and training from iteration 0",
                    work_dir, why, moved)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json(work_dir / IDENTITY_FILE, identity)
    return moved


def wait_for_identity(work_dir: str | Path, digest: str, timeout: float = SETTLE_TIMEOUT_S):
    """Ranks other than 0: wait until rank 0 has settled the work dir for this identity."""
    deadline = time.monotonic() + timeout
    while (read_identity(work_dir) or {}).get("digest") != digest:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{work_dir}: rank 0 did not record run identity {digest[:12]} "
                               f"within {timeout:.0f} s (do all ranks see the same config?)")
        time.sleep(0.5)


@contextmanager
def work_dir_lock(work_dir: str | Path) -> Iterator[None]:
    """Exclusive lock on a work dir for the life of a trainer. The lock file sits beside the
    work dir, not in it, because a superseded work dir is renamed; it holds the trainer's pid
    for the message a second trainer gets (``filelock`` records no holder)."""
    work_dir = Path(work_dir)
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = work_dir.with_name(f".{work_dir.name}.lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise WorkDirBusy(f"{work_dir} is in use by another trainer (pid {holder}, lock "
                              f"{lock_path}); wait for it or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@HOOKS.register_module()
class RunIdentityHook(Hook):
    """Writes the run identity into every checkpoint's meta; warns when a resumed checkpoint
    belongs to another run (possible only with an explicit ``--resume-from``)."""

    priority = "VERY_LOW"

    def __init__(self, digest: str):
        self.digest = digest

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault("meta", {})["run_identity"] = self.digest

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        found = (checkpoint.get("meta") or {}).get("run_identity")
        if found and found != self.digest and runner._resume:
            runner.logger.warning(f"resuming a checkpoint of run {found[:12]} as run "
                                  f"{self.digest[:12]}: the two differ in their inputs")
