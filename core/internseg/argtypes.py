"""argparse value types shared by the subcommands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in its error
    return parse


def seed(text: str) -> int:
    """A seed numpy accepts (0 .. 2**32 - 1). Python's random would take a negative one and
    silently use its absolute value, so -1 and 1 would draw the same subset."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in 0..{2**32 - 1}, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (a tolerance: -1 or nan would make every verdict meaningless)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def open_unit_interval(text: str) -> float:
    """A number strictly between 0 and 1 (a momentum)."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value
