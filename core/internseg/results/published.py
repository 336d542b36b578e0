"""What the original's published training logs say about validation during training.

The original validated every 1000 iterations and kept its best checkpoint (`save_best`).
mmcv's text logger writes each validation as an ``Iter(val) [...]`` line with ``mIoU: <v>``,
and mmcv's EvalHook writes ``Best mIoU is <v> at <N> iter.`` whenever the best improves; mmseg
0.x logs these metrics as fractions (0.5490 for 54.90 %). Comparing the last validation with
the last best tells which one the paper's number is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

_VALIDATION = re.compile(r"Iter\(val\)[^\n]*?[\s,]mIoU: ([0-9.]+)")
_BEST = re.compile(r"Best mIoU is ([0-9.]+) at (\d+) iter")


@dataclass(frozen=True)
class PublishedValidation:
    final_miou: float | None = None
    best_miou: float | None = None
    best_iter: int | None = None


def _percent(value: str) -> float:
    number = float(value)
    return round(100 * number if number <= 1 else number, 2)


def parse_published_validation(text: str) -> PublishedValidation:
    """The last validation's mIoU and the last 'best' line (both in %); None where absent."""
    finals = _VALIDATION.findall(text)
    bests = _BEST.findall(text)
    best_miou, best_iter = bests[-1] if bests else (None, None)
    return PublishedValidation(
        final_miou=_percent(finals[-1]) if finals else None,
        best_miou=None if best_miou is None else _percent(best_miou),
        best_iter=None if best_iter is None else int(best_iter),
    )


def read_published_validation(path: str | Path) -> PublishedValidation:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as err:
        raise InputError(f"{path}: cannot read published log ({err.strerror})") from None
    return parse_published_validation(text)
