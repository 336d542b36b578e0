"""What the original's published training logs say: training curves, validation, speed.

The original validated every 1000 iterations and kept its best checkpoint (`save_best`).
mmcv's text logger writes each validation as an ``Iter(val) [...]`` line with ``mIoU: <v>``,
and mmcv's EvalHook writes ``Best mIoU is <v> at <N> iter.`` whenever the best improves; mmseg
0.x logs these metrics as fractions (0.5490 for 54.90 %). Comparing the last validation with
the last best tells which one the paper's number is.

mmcv 1.x's TextLoggerHook writes a training line every 50 iterations as
``Iter [16000/160000]\tlr: 5.400e-05, eta: 8:40:17, time: 0.249, data_time: 0.005,
memory: 35982, decode.loss_ce: 0.5778, ..., loss: 0.5778`` (time in s per iteration, memory
the peak MB allocated on the logging GPU); ``Iter(val) [250]`` counts validation batches, not
training iterations, so a validation belongs to the training line before it.
"""

from __future__ import annotations

import logging
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

# the value as written, up to its delimiter: "nan", or a number cut by the end of the file
_VALIDATION = re.compile(r"Iter\(val\)[^\n]*?[\s,]mIoU: ([^,\s]*)")
_BEST = re.compile(r"Best mIoU is ([0-9.]+) at (\d+) iter")
_TRAIN_LINE = re.compile(r"Iter \[(\d+)/(\d+)\]\t(.*)$")
_VAL_LINE = re.compile(r"Iter\(val\) \[\d+\]\t(.*)$")



@dataclass(frozen=True)
class PublishedValidation:
    final_miou: float | None = None
    best_miou: float | None = None
    best_iter: int | None = None
    # why final_miou is None although a log was read: its last validation is not a number
    # ("nan", cut inside the number), or it has none; the table says "not measured"
    final_missing: str | None = None


def _percent(value: str | float) -> float:
    number = float(value)
    return round(100 * number if number <= 1 else number, 2)


def _last_validation(text: str) -> tuple[float | None, str | None]:
    """The last validation's mIoU in %, or None and why: never an earlier validation's value
    in place of a last one that is not a number."""
    import math

    finals = list(_VALIDATION.finditer(text))
    if not finals:
        return None, "no validation (Iter(val)) line"
    last = finals[-1]
    if last.end() == len(text):
        return None, f"the log ends inside its last validation's mIoU ({last.group(1)!r})"
    try:
        value = float(last.group(1))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        return None, f"its last validation's mIoU reads {last.group(1)!r}"
    return _percent(value), None


def parse_published_validation(text: str) -> PublishedValidation:
    """The last validation's mIoU and the last 'best' line (both in %); None where absent."""
    final, missing = _last_validation(text)
    bests = _BEST.findall(text)
    best_miou, best_iter = bests[-1] if bests else (None, None)
    return PublishedValidation(
        final_miou=final, final_missing=missing,
        best_miou=None if best_miou is None else _percent(best_miou),
        best_iter=None if best_iter is None else int(best_iter),
    )


@dataclass(frozen=True)
class PublishedLog:
    """Everything a published log records, per iteration of the original's 8-GPU run."""

    max_iters: int | None = None
    train: list[dict] = field(default_factory=list)       # iter, lr, loss, time, memory, ...
    validation: list[tuple[int, float]] = field(default_factory=list)  # (iter, mIoU %)
    summary: PublishedValidation = PublishedValidation()

    @property
    def seconds_per_iter(self) -> float | None:
        """Median of the logged ``time`` (s per iteration, averaged over 50 by mmcv)."""
        times = [r["time"] for r in self.train if "time" in r]
        return round(statistics.median(times), 3) if times else None

    @property
    def memory_mb(self) -> int | None:
        """Largest logged ``memory`` (peak MB allocated on the logging GPU)."""
        memory = [r["memory"] for r in self.train if "memory" in r]
        return int(max(memory)) if memory else None


def _fields(text: str) -> dict[str, float]:
    """``key: value, key: value`` with the numeric values only (``eta: 8:40:17`` is not)."""
    out = {}
    for part in text.split(", "):
        key, sep, value = part.partition(": ")
        try:
            if sep:
                out[key.strip()] = float(value)
        except ValueError:
            continue
    return out


def parse_published_log(text: str) -> PublishedLog:
    train, validation, max_iters, last_iter = [], [], None, None
    for line in text.splitlines():
        if m := _TRAIN_LINE.search(line):
            last_iter, max_iters = int(m.group(1)), int(m.group(2))
            train.append({"iter": last_iter, **_fields(m.group(3))})
        elif (m := _VAL_LINE.search(line)) and last_iter is not None:
            metrics = _fields(m.group(1))
            if "mIoU" in metrics:
                validation.append((last_iter, _percent(metrics["mIoU"])))
    return PublishedLog(max_iters=max_iters, train=train, validation=validation,
                        summary=parse_published_validation(text))


def read_published_log(path: str | Path) -> PublishedLog:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as err:
        raise InputError(f"{path}: cannot read published log ({err.strerror})") from None
    log = parse_published_log(text)
    if log.summary.final_missing:
        logging.getLogger("internseg").warning("%s: final validation not measured: %s", path,
                                               log.summary.final_missing)
    return log
