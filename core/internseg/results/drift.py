"""The original's course, from its published log, as bands a run can be compared with while
it trains (``internseg train --reference-log``; the hooks are in engine/hooks.py).

Loss: mmcv 1.x logged the mean loss of the 50 iterations before each training line. At each
logged iteration the reference is the mean of the last ``LOSS_WINDOW`` lines (500 iterations
in the published logs), and the run is compared with the mean of its own per-iteration losses
over the same iterations. mIoU: the run's validation is compared with the original's at the
same iteration.

How far is too far comes from the log itself: the spread (standard deviation) of the
original's values in the same trailing window (the loss lines the mean is taken over; the
last ``MIOU_WINDOW`` validations), never less than the median spread over the whole log, so
that a flat stretch or the first point (one value, no spread) does not make the band zero.
A run has drifted where its gap exceeds ``tolerance`` times that spread: ``DEFAULT_TOLERANCE``
(3) unless ``--drift-tolerance`` says otherwise.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .published import read_published_log

DEFAULT_TOLERANCE = 3.0
LOSS_WINDOW = 10  # training lines: 500 iterations of the published logs
MIOU_WINDOW = 5  # validations: 5000 iterations
# Written into the work dir when --stop-on-drift stops a run; while it is there, a restart
# with --stop-on-drift (the workflow's retries) is refused at once instead of rebuilding the
# model and resuming into the same drift.
DRIFT_STOP_FILE = "drift_stop.json"


@dataclass(frozen=True)
class Band:
    """The original at iteration ``end``: ``centre`` (the mean of its window for the loss,
    the value itself for mIoU) and ``spread``; a loss window covers iterations
    ``start + 1`` .. ``end``."""

    start: int
    end: int
    centre: float
    spread: float


def bands(points: dict[int, float], window: int, centre_on_mean: bool) -> dict[int, Band]:
    """One band per point of ``points`` (iteration -> value), from the ``window`` points up
    to it."""
    iterations = sorted(points)
    raw = []
    for k, end in enumerate(iterations):
        values = [points[i] for i in iterations[max(0, k - window + 1):k + 1]]
        start = iterations[k - window] if k >= window else 0
        mean = statistics.fmean(values)
        raw.append((start, end, mean if centre_on_mean else points[end],
                    statistics.pstdev(values), len(values)))
    spreads = [spread for *_, spread, n in raw if n > 1]
    floor = statistics.median(spreads) if spreads else 0.0
    return {end: Band(start, end, centre, max(spread, floor))
            for start, end, centre, spread, _ in raw}


@dataclass(frozen=True)
class Reference:
    path: str
    max_iters: int | None
    loss: dict[int, Band]
    miou: dict[int, Band]


def read_reference(path: str | Path) -> Reference:
    """The bands of an mmcv 1.x training log; one line naming the file if it has neither a
    training loss nor a validation mIoU."""
    log = read_published_log(path)
    # a resumed original logs some iterations twice: the later line is the one it went on from
    losses = {row["iter"]: row["loss"] for row in log.train if "loss" in row}
    mious = dict(log.validation)
    if not losses and not mious:
        raise InputError(f"{path}: no training line with a loss and no validation mIoU (not "
                         "an mmcv 1.x training log?)")
    return Reference(str(path), log.max_iters, bands(losses, LOSS_WINDOW, True),
                     bands(mious, MIOU_WINDOW, False))


def drift_args(reference_log: str | Path, settings: dict | None) -> list[str]:
    """``internseg train`` options comparing a run with its published log, from
    config.yaml's ``drift`` settings (``tolerance``: null = the default; ``stop``)."""
    settings = settings or {}
    words = ["--reference-log", str(reference_log)]
    if settings.get("tolerance") is not None:
        words += ["--drift-tolerance", str(settings["tolerance"])]
    if settings.get("stop"):
        words.append("--stop-on-drift")
    return words
