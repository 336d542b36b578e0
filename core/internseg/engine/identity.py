"""A run's identity: one digest of everything that decides its weights.

A work dir holds the checkpoints of one identity (``run_identity.json``). Resuming continues
only that identity: a changed seed, lr, split, pretrained file or dataset starts from
iteration 0, and the old work dir is moved aside; changed back, that identity's own work dir
is brought back and resumes. The digest is also stored in every checkpoint's meta and in
``final.pth``.

What does not decide the weights stays out: paths (their contents are hashed instead), the
work dir, validation and checkpoint settings, the launcher. The batch layout stays in: with
gradient accumulation an iteration is a micro-batch, so a checkpoint of one layout does not
mean the same point of training in another.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

from mmengine.hooks import Hook

from mmseg.registry import HOOKS

from ..errors import InputError, MissingFileError
from ..io import hash_file, read_json, recorded_sha256, write_json
from ..locks import exclusive
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
# A work dir moved aside: <run>.superseded-<first 12 digits of its identity>-<time>
SUPERSEDED = re.compile(r"^(?P<run>.+)\.superseded-(?P<identity>[0-9a-f]+|unknown)-"
                        r"(?P<time>\d{8}-\d{6})$")
# How long ranks other than 0 wait for rank 0 to settle the work dir.
SETTLE_TIMEOUT_S = 600


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
        dataset_sha256=dataset_digest(manifest) if manifest and manifest.is_file() else None,
    )


def dataset_digest(manifest: Path) -> str:
    """The prepared data's content digest (:func:`internseg.preparation.data_sha256`) from the
    manifest the workflow wrote beside the tree; a manifest of an earlier version, whose fields
    differ, by its bytes."""
    from ..preparation import MANIFEST_VERSION, data_sha256, manifest_problem

    found = read_json(manifest, "dataset manifest")
    if found.get("manifest_version") == MANIFEST_VERSION:
        problem = manifest_problem(found)
        if problem:
            raise InputError(f"{manifest}: {problem}; prepare the dataset again "
                             "(internseg prepare) to write it anew")
        return data_sha256(found)
    return hash_file(manifest, "sha256")


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


def location(work_dir: str | Path) -> Path:
    """Where a work dir's files are: the target of a work dir that is a link (to scratch
    storage, say), which is moved aside and brought back on its own file system, so that the
    run never leaves it and the link keeps pointing at the run's folder; else the work dir."""
    work_dir = Path(work_dir)
    return work_dir.resolve() if work_dir.is_symlink() else work_dir


def superseded_dirs(work_dir: str | Path) -> list[Path]:
    """The superseded work dirs of the run at ``work_dir``, newest first: beside its
    :func:`location`, and, for a link, beside the link itself, where versions before the
    link was followed moved the link aside (such an entry is a link too)."""
    work_dir = Path(work_dir)
    found = set()
    for place in {location(work_dir), work_dir}:
        for path in place.parent.glob(f"{glob.escape(place.name)}.superseded-*"):
            match = SUPERSEDED.match(path.name)
            if match and match["run"] == place.name and (path.is_dir() or path.is_symlink()):
                found.add(path)
    return sorted(found, key=lambda p: (SUPERSEDED.match(p.name)["time"], p.name), reverse=True)


def superseded_identity(path: Path) -> str:
    """The identity (its first 12 digits, or "unknown") a superseded work dir's name gives."""
    return SUPERSEDED.match(path.name)["identity"]


def own_superseded(work_dir: Path, digest: str) -> Path | None:
    """The newest superseded work dir of this very identity: the run an undone edit asks
    for again. Its name gives the identity's first digits; its record, all of them."""
    for path in superseded_dirs(work_dir):
        if (superseded_identity(path) == digest[:12]
                and (read_identity(path) or {}).get("digest") == digest):
            return path
    return None


def settle_work_dir(work_dir: str | Path, identity: dict, keep: bool = False) -> Path | None:
    """Make ``work_dir`` this identity's: keep it if it holds the same run; else move it aside
    (returns where to) and bring back this identity's own superseded work dir, which then
    resumes, or start from iteration 0. Records the identity. ``keep``: an explicit
    --resume-from, whose file may be in the work dir, keeps it as it is."""
    work_dir = Path(work_dir)
    recorded = read_identity(work_dir)
    if recorded and recorded.get("digest") == identity["digest"]:
        return None
    place, moved, said = location(work_dir), None, f"work dir {work_dir}: "
    holds = bool(recorded) or holds_a_run(work_dir)
    if keep:
        if holds:
            log.warning("work dir %s holds another run; resuming from the given checkpoint as "
                        "run %s all the same", work_dir, identity["digest"][:12])
        back = None
    else:
        back = own_superseded(work_dir, identity["digest"])
    if not keep and (holds or (back and place.is_dir() and any(place.iterdir()))):
        if recorded:
            old = recorded.get("components", {})
            changed = sorted(k for k in {**old, **identity["components"]}
                             if old.get(k) != identity["components"].get(k))
            why = f"its run differs in {', '.join(changed)}"
            tag = recorded.get("digest", "unknown")[:12]
        else:
            why, tag = "it records no run identity", "unknown"
        moved = place.with_name(f"{place.name}.superseded-{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
        place.rename(moved)
        said += f"{why}; moved it to {moved} and "
    if back:
        # back where it was moved aside from: the link's target, or, for an entry that is
        # itself a link, the work dir's own name (a link there is replaced)
        home = back.with_name(SUPERSEDED.match(back.name)["run"])
        if home.is_dir() and not home.is_symlink():
            home.rmdir()  # empty, so it was not moved aside
        os.replace(back, home)
        log.warning("%sbrought back %s, this run's own work dir from before its inputs "
                    "changed: resuming it", said, back)
        return moved
    if moved:
        log.warning("%straining from iteration 0", said)
    place.mkdir(parents=True, exist_ok=True)
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


def work_dir_lock(work_dir: str | Path):
    """Exclusive lock on a work dir for the life of a trainer (and of ``internseg clean``
    removing its superseded work dirs). The lock file sits beside the work dir, not in it,
    because a superseded work dir is renamed; it records its holder for the message a second
    one gets: it is refused at once, naming the holder's pid and command."""
    work_dir = Path(work_dir)
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    return exclusive(work_dir.with_name(f".{work_dir.name}.lock"), what=str(work_dir),
                     wait=False)


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
