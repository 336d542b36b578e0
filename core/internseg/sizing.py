"""What the plan and the rehearsal share about a run's shape, so that neither imports the
other: the paper's GPU count, the size the test pipeline takes a validation image to (the
one its dataset's entry assumes), and how many windows slide inference cuts it into."""

from __future__ import annotations

from .errors import InputError

PAPER_GPUS = 8  # the published logs ran on 8 A100-80GB


def resized_for_test(pipeline, height: int, width: int, where: str) -> tuple[int, int]:
    """The size an image of ``height`` x ``width`` reaches through a test pipeline, with the
    rounding of mmcv's ``imrescale`` (what the resize steps our configs use hand it)."""
    for step in pipeline:
        kind = step["type"]
        if kind == "ShortSideResize":
            factor = step["short_side"] / min(height, width)
        elif kind == "Resize" and step.get("keep_ratio"):
            factor = min(max(step["scale"]) / max(height, width),
                         min(step["scale"]) / min(height, width))
        elif kind == "ResizeToMultiple":
            d = step["size_divisor"]
            height, width = -(-height // d) * d, -(-width // d) * d
            continue
        elif "Resize" in kind:
            raise InputError(f"{where}: the plan cannot size the test pipeline's {kind} step "
                             "(it knows ShortSideResize, Resize with keep_ratio and "
                             "ResizeToMultiple)")
        else:
            continue
        height, width = int(height * factor + 0.5), int(width * factor + 0.5)
    return height, width


def slide_windows(height: int, width: int, crop, stride) -> int:
    """How many windows mmseg's slide inference runs on an image of that size."""
    rows = max(height - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(width - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    return rows * cols
