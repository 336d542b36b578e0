"""The paper's few-shot training subsets, and the seeds recorded in its published training logs.

Recipe (InternVL's segmentation code): list the training images sorted by name, shuffle them with
Python's stdlib ``random`` seeded with the run's seed, keep the first ``total // N``.  The seed
was drawn at random for each run and survives only in that run's log, which is why it can be
read back from a log here.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from .datasets import DATASETS
from .errors import InputError
from .io import read_json, read_sidecar, sha256_file, sidecar_path, write_sidecar, write_text

# the published logs' runs drew from ADE20K's training images
TOTAL_TRAIN = DATASETS["ade20k"].train_count

_SEED_LINE = re.compile(r"Set random seed to (-?\d+), deterministic: (True|False)\b")
_SELECT_LINE = re.compile(r"Randomly select (\d+) images\b")


class SplitError(InputError):
    """A split, manifest or log that cannot be used; the message names the file."""


class LogFacts(NamedTuple):
    seed: int
    deterministic: bool
    selected: int | None  # None when the log has no "Randomly select" line


# ---------------------------------------------------------------- subsets


def subset_size(total: int, fraction: int) -> int:
    _check_fraction(fraction)
    return total // fraction


def _check_fraction(fraction) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, int) or fraction < 1:
        raise InputError(f"fraction must be an integer >= 1 (1/N of the data), got {fraction!r}")


def few_shot_subset(stems: Iterable[str], fraction: int, seed: int | None) -> list[str]:
    """The first ``len(stems) // fraction`` names of the sorted stems shuffled with ``seed``.

    Input order does not matter.  Stems and file names give the same subset: every name has
    the same suffix, so they sort alike, and the shuffle only depends on the count and seed.
    Fraction 1 keeps every stem in sorted order whatever the seed: the original's 1/1 config
    sets no ``max_image_num``, so its dataset list is never shuffled (the seed only drives the
    sampler). ``seed=None`` is allowed for ``fraction=1`` only.
    """
    _check_fraction(fraction)
    names = sorted(stems)
    if len(set(names)) != len(names):
        dupes = sorted({n for a, n in zip(names, names[1:]) if a == n})
        raise InputError(f"duplicate stems: {', '.join(dupes[:5])}")
    if seed is not None and not 0 <= seed < 2**32:
        # random.Random(-s) is random.Random(s): two seeds would draw one subset
        raise InputError(f"seed must be in 0..{2**32 - 1}, got {seed}")
    if fraction == 1:
        return names
    if seed is None:
        raise InputError(f"a 1/{fraction} subset needs a seed")
    keep = len(names) // fraction
    if keep == 0:
        raise InputError(f"1/{fraction} of {len(names)} stems selects no image")
    random.Random(seed).shuffle(names)
    return names[:keep]


def split_text(stems: Iterable[str]) -> str:
    return "".join(f"{s}\n" for s in stems)


def write_split(path: str | Path, stems: Iterable[str]) -> str:
    """Write one stem per line and a ``sha256sum``-format sidecar ``<path>.sha256``.

    Returns the SHA-256 of the split file.  The sidecar is written second, so a run killed in
    between leaves a split that fails :func:`read_split`'s check instead of one that passes.
    """
    path = Path(path)
    write_text(path, split_text(stems))
    digest = sha256_file(path)
    write_sidecar(path, digest)
    return digest


def checked_sha256(path: str | Path, *, sidecar_required: bool = True) -> str:
    """A split file's sha256, checked against the sidecar `split` wrote beside it."""
    path = Path(path)
    side = sidecar_path(path)
    if not sidecar_required and not side.exists():
        return sha256_file(path)
    recorded = read_sidecar(side)
    if recorded is None:
        raise SplitError(f"{side}: missing, empty or not a sha256 checksum file for {path}")
    actual = sha256_file(path)
    if actual != recorded:
        raise SplitError(f"{path}: sha256 {actual} does not match {side} ({recorded}); "
                         "the split changed after it was written")
    return actual


def read_split(path: str | Path) -> list[str]:
    """The stems of a split file after checking it against its sidecar."""
    checked_sha256(path)
    return Path(path).read_text().split()


def load_train_stems(manifest_path: str | Path) -> list[str]:
    """``train_stems`` of a manifest written by a dataset preparation (only a valid one)."""
    manifest = read_json(manifest_path, "dataset manifest")
    if manifest.get("valid") is not True:
        raise SplitError(f"{manifest_path}: not a valid dataset manifest (no 'valid: true')")
    stems = manifest.get("train_stems")
    if not isinstance(stems, list) or not all(isinstance(s, str) for s in stems):
        raise SplitError(f"{manifest_path}: no 'train_stems' list of names")
    return stems


# ---------------------------------------------------------------- training logs


def _single(values: list, what: str):
    """The one value a log states for ``what``, or None; conflicting values are an error."""
    distinct = sorted(set(values), key=values.index)
    if len(distinct) > 1:
        raise SplitError(f"conflicting {what} lines: {', '.join(map(str, distinct))}")
    return distinct[0] if distinct else None


def parse_training_log(text: str) -> LogFacts:
    """Seed, deterministic flag and selected-image count from an mmcv text training log.

    Lines may carry mmcv's ``<date> <time>,<ms> - mmseg - INFO - `` prefix.  A log that was
    appended to by a resumed run may repeat the lines; it must repeat the same values.
    """
    lines = _SEED_LINE.findall(text)
    if not lines:
        raise SplitError("no 'Set random seed to <N>, deterministic: <bool>' line")
    seed = _single([int(n) for n, _ in lines], "'Set random seed to <N>'")
    deterministic = _single([flag == "True" for _, flag in lines], "'deterministic: <bool>'")
    selected = _single([int(k) for k in _SELECT_LINE.findall(text)],
                       "'Randomly select <K> images'")
    return LogFacts(seed=seed, deterministic=deterministic, selected=selected)


def check_selected(facts: LogFacts, fraction: int, total: int) -> None:
    """The log's subset size must be the one this fraction gives; missing is only a warning."""
    expected = subset_size(total, fraction)
    if facts.selected is None:
        if fraction != 1:
            warnings.warn(f"log has no 'Randomly select' line; cannot confirm it is a "
                          f"1/{fraction} run", stacklevel=3)
    elif facts.selected != expected:
        raise SplitError(f"the log selected {facts.selected} images, but 1/{fraction} of "
                         f"{total} is {expected}")


def seed_from_log(path: str | Path, fraction: int | None = None,
                  total: int = TOTAL_TRAIN) -> LogFacts:
    """:func:`parse_training_log` on a file; with ``fraction``, also check the subset size."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as err:
        raise SplitError(f"{path}: cannot read log ({err.strerror})") from None
    try:
        facts = parse_training_log(text)
        if fraction is not None:
            check_selected(facts, fraction, total)
    except ValueError as err:
        raise SplitError(f"{path}: {err}") from None
    return facts
