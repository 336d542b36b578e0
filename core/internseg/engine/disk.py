"""What a run leaves on disk, and giving back what the current runs do not use.

A run's work dir holds its resumable checkpoints (``iter_N.pth``, the newest
``max_keep_ckpts``), mmengine's per-launch log folders and ``run_identity.json``. A work dir
of a changed run is moved aside to ``<run>.superseded-<identity>-<time>``
(:func:`internseg.engine.identity.settle_work_dir`), and brought back to resume when the
run's inputs are changed back. When a run starts, the newest :data:`KEEP_SUPERSEDED` of its
superseded work dirs are kept, and those of the identity starting; older ones are removed,
each said before it goes. A writer killed mid-file leaves a temporary file
(:func:`internseg.io.atomic_path`); those of dead writers are removed too. ``internseg clean``
lists all of it with its size and removes it on request. A superseded entry that is a link
(moved aside by versions that did not follow a linked work dir) is unlinked: removing never
follows a link out of what is removed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from ..io import remove_path, remove_stale_temp_files, stale_temp_files
from ..locks import LockHeld
from .identity import SUPERSEDED, superseded_dirs, superseded_identity, work_dir_lock

log = logging.getLogger("internseg")

# Superseded work dirs kept per run when it starts (the newest ones); `--keep-superseded`.
KEEP_SUPERSEDED = 1


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (links not followed)."""
    try:
        if path.is_symlink() or path.is_file():
            return path.lstat().st_size
        return sum(size_of(child) for child in path.iterdir())
    except FileNotFoundError:  # removed while we looked
        return 0


def human(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def remove_entry(path: Path, why: str, report=log.info) -> int:
    """Remove a superseded work dir, saying so first. A link is unlinked, never followed:
    its target is outside what is being removed."""
    if path.is_symlink():
        target = path.readlink()
        report(f"removing {path}, a link to {target} (left where it is: remove it yourself if "
               f"no run needs it): {why}")
        path.unlink()
        return 0
    size = size_of(path)
    report(f"removing {path} ({human(size)}): {why}")
    shutil.rmtree(path)
    return size


def prune_superseded(work_dir: str | Path, keep: int, starting: str) -> list[Path]:
    """Remove all but the newest ``keep`` superseded work dirs of a run, never one of the
    identity ``starting`` (a digest): that is the run being started. The caller holds the
    run's work-dir lock (no trainer renames or reads them meanwhile)."""
    old = [p for p in superseded_dirs(work_dir)
           if superseded_identity(p) != starting[:12]][keep:]
    for path in old:
        remove_entry(path, f"superseded work dir beyond the newest {keep} (--keep-superseded)")
    return old


def tidy_at_start(work_dir: str | Path, keep_superseded: int, starting: str) -> None:
    """What a trainer gives back before it starts, holding the work-dir lock: temporary files
    of killed writers in the work dir (every one is dead: writers there hold the lock) and
    superseded work dirs beyond the newest ``keep_superseded`` (of identities other than the
    one ``starting``)."""
    remove_stale_temp_files(work_dir, no_live_writer=True)
    prune_superseded(work_dir, keep_superseded, starting)


def disk_report(work_dir: str | Path, outputs: Iterable[str | Path]) -> str:
    """One line: every entry of the work dir with its size, the run's output files, its
    superseded work dirs, and the total."""
    work_dir = Path(work_dir)
    entries = sorted(work_dir.iterdir()) if work_dir.is_dir() else []
    sizes = {p: size_of(p) for p in entries}
    inside = ", ".join(f"{p.name}{'/' if p.is_dir() else ''} {human(s)}"
                       for p, s in sizes.items())
    files = {Path(p): size_of(Path(p)) for p in outputs if Path(p).exists()}
    aside = {p: size_of(p) for p in superseded_dirs(work_dir)}
    total = sum(sizes.values()) + sum(files.values()) + sum(aside.values())
    parts = [f"work dir {work_dir} {human(sum(sizes.values()))} ({inside})"]
    parts += [f"{p} {human(s)}" for p, s in files.items()]
    parts += [f"superseded {p} {human(s)}" for p, s in aside.items()]
    return f"on disk for this run: {'; '.join(parts)}; total {human(total)}"


# ---------------------------------------------------------------- internseg clean


def _age_days(path: Path) -> float:
    stamp = SUPERSEDED.match(path.name)["time"]
    return (time.time() - time.mktime(time.strptime(stamp, "%Y%m%d-%H%M%S"))) / 86400


def _runs_with_superseded(root: Path) -> list[Path]:
    """The work dirs (existing or not) under ``root`` that have superseded work dirs: beside
    them, or, for a work dir that is a link, beside its target (on other storage)."""
    runs = []
    for path in sorted(root.rglob("*")):
        if any(SUPERSEDED.match(p.name) for p in path.relative_to(root).parents):
            continue  # inside a superseded work dir
        if match := SUPERSEDED.match(path.name):
            runs.append(path.with_name(match["run"]))
        elif path.is_symlink() and path.is_dir():
            runs.append(path)
    return [run for run in dict.fromkeys(runs) if superseded_dirs(run)]


def clean(root: str | Path, *, remove: bool, keep: int = 0,
          older_than: float | None = None, report=print) -> int:
    """List (and with ``remove`` delete) under ``root``: superseded work dirs beyond the
    newest ``keep`` of each run and, with ``older_than``, only those older than that many
    days; temporary files of dead writers. A run being trained is skipped (its lock is
    held). Returns the bytes listed (or removed)."""
    root = Path(root)
    total = 0
    for run in _runs_with_superseded(root):
        try:
            with work_dir_lock(run):
                for path in superseded_dirs(run)[keep:]:
                    age = _age_days(path)
                    if older_than is not None and age < older_than:
                        continue
                    if remove:
                        total += remove_entry(path, f"{age:.1f} days old", report)
                        continue
                    if path.is_symlink():
                        report(f"superseded {path}: a link to {path.readlink()}, {age:.1f} "
                               "days old")
                        continue
                    size = size_of(path)
                    total += size
                    report(f"superseded {path}: {human(size)}, {age:.1f} days old")
        except LockHeld as err:
            report(f"skipping {run}: {err}")
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for folder in folders:
        for path in stale_temp_files(folder):
            size = size_of(path)
            total += size
            report(f"{'removing' if remove else 'temporary file of a dead writer'} {path}: "
                   f"{human(size)}")
            if remove:
                remove_path(path)
    report(f"{'removed' if remove else 'would remove (--remove)'}: {human(total)} under {root}")
    return total
