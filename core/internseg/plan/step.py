"""Pricing a training step: seconds per iteration from the best source there is (a GPU
check or RESULTS.md measurement, the original's published log, or FLOPs at an assumed share
of A100 peak), and the trunk FLOPs they scale with."""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..sizing import PAPER_GPUS


GB = 1e9

A100_BF16_PEAK = 312e12

# Share of peak that large ViT training reaches with checkpointing; an assumption, stated.
# Slide inference without a measurement is priced at the same share.
ASSUMED_UTILISATION = 0.4

PER_GPU_BATCH = 2

_ITER_TIME = re.compile(r"Iter \[\d+/\d+\][^\n]*?\btime: ([0-9.]+)")

_RESULTS_ROW = re.compile(r"^\| `(\w+)`[^|]*\| ([^|]*)\| ([^|]*)\|", re.MULTILINE)


def regime_of(cfg) -> str:
    """The benchmark regime whose step a run repeats."""
    backbone = cfg.model.backbone
    if backbone.get("type") == "InternViTAdapter":
        # frozen trunk weights, but the adapter's gradients flow back through every block
        return "adapter"
    if backbone.get("freeze_trunk"):
        return "frozen"
    return "trained_master" if backbone.get("master_weights", True) else "trained_bf16"


def trunk_flops_per_image(backbone) -> float:
    """Forward FLOPs of the trunk blocks that run (up to the last tap) on one image."""
    from ..config import backbone_architecture

    arch = backbone_architecture(backbone)
    tokens = (backbone.img_size // arch["patch_size"]) ** 2 + 1
    dim = arch["embed_dim"]
    ranges = getattr(backbone, "interaction_indexes", None)
    # an adapter's out_indices name its maps; its blocks are those of its ranges
    blocks = ranges[-1][-1] + 1 if ranges else max(backbone.out_indices) + 1
    # qkv (3d^2), proj (d^2), MLP (2 x 4d^2) multiply-adds per token; QK^T and AV: 2 N d
    per_token = 2 * (12 * dim * dim) + 4 * tokens * dim
    return blocks * tokens * per_token


def flops_seconds_per_iteration(cfg, gpus: int) -> float:
    backbone = cfg.model.backbone
    # forward; + backward (2: input and weight gradients) + recompute when the trunk trains;
    # the adapter: forward, recompute and the input gradients only (the weights are frozen)
    passes = {"frozen": 1, "adapter": 3}.get(regime_of(cfg), 4)
    flops = trunk_flops_per_image(backbone) * passes * cfg.total_batch_size
    return flops / (gpus * A100_BF16_PEAK * ASSUMED_UTILISATION)


def read_text(path: Path, option: str) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as err:
        raise InputError(f"{option} {path}: not a text file (byte {err.start} is not "
                         "UTF-8)") from None


def measured_step_seconds(results_md: str) -> dict[str, float]:
    """Seconds per batch-2 step per regime from benchmarks/RESULTS.md ('–' = not measured)."""
    found = {}
    for regime, _gpu, seconds in _RESULTS_ROW.findall(results_md):
        try:
            found[regime] = float(seconds.strip())
        except ValueError:
            continue
    return found


def read_gpu_check(path: Path) -> dict:
    """gpu_check.json as a dict, or one line naming the file and what is wrong with it."""
    try:
        report = json.loads(read_text(path, "--gpu-check"))
    except json.JSONDecodeError as err:
        raise InputError(f"--gpu-check {path}: not valid JSON ({err.msg} at line "
                         f"{err.lineno}, column {err.colno})") from None
    if not isinstance(report, dict):
        raise InputError(f"--gpu-check {path}: expected gpu_check.py's report (a JSON "
                         f"object), got a {type(report).__name__}")
    return report


def _positive(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise InputError(f"{where} is {value!r}, not a number > 0")
    return float(value)


def _rows(report: dict, key: str, where: str) -> list[dict]:
    rows = report.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(f"{where}: {key} is not a list of objects")
    return rows


def on_a_gpu(report: dict) -> bool:
    """A CPU smoke run on the tiny trunk measures nothing about the 6B one."""
    return not report.get("tiny") and report.get("device", "cpu") != "cpu"


def gpu_check_step_seconds(report: dict, where: str = "gpu_check.json") -> dict[str, float]:
    """Seconds per batch-2 trunk step per regime from gpu_check.json (nothing from a CPU
    smoke run)."""
    if not on_a_gpu(report):
        return {}
    found = {}
    for i, row in enumerate(_rows(report, "trunk", where)):
        if not isinstance(row.get("regime"), str):
            raise InputError(f"{where}: trunk[{i}].regime is {row.get('regime')!r}, not a name")
        found[row["regime"]] = _positive(row.get("seconds_per_iter"),
                                         f"{where}: trunk[{i}].seconds_per_iter")
    return found


@dataclass(frozen=True)
class SlideSpeed:
    """The GPU check's slide inference: one image of ``image`` px cut into windows of
    ``crop`` every ``stride``, at ``images_per_s`` on one GPU (the linear-probing segmentor)."""

    images_per_s: float
    image: tuple[int, int]
    crop: tuple[int, int]
    stride: tuple[int, int]


def gpu_check_slide(report: dict, where: str = "gpu_check.json") -> SlideSpeed | None:
    if not on_a_gpu(report):
        return None
    for i, row in enumerate(_rows(report, "checks", where)):
        if row.get("check") != "slide_inference":
            continue
        at = f"{where}: checks[{i}]"
        sides = {}
        for key in ("image", "crop", "stride"):
            pair = row.get(key)
            if not isinstance(pair, list) or len(pair) != 2:
                raise InputError(f"{at}.{key} is {pair!r}, not [height, width]")
            sides[key] = tuple(int(_positive(v, f"{at}.{key}")) for v in pair)
        return SlideSpeed(_positive(row.get("images_per_s"), f"{at}.images_per_s"), **sides)
    return None


def published_iteration_seconds(log_text: str) -> float | None:
    """Median per-iteration `time:` of an mmcv 1.x training log (8 GPUs), None if absent."""
    times = [float(t) for t in _ITER_TIME.findall(log_text)]
    return statistics.median(times) if times else None


def step_seconds(cfg, gpus: int, measured: dict[str, float], published_seconds: float | None,
                 trunk_scale: float = 1.0, trace=None) -> tuple[float, str]:
    """Seconds of one training iteration on ``gpus`` and where the figure comes from, the
    best source first: measured (one GPU at the paper's per-GPU batch), the original's
    published log (8 GPUs), the rehearsal's traced FLOPs, the trunk's FLOPs. Measured and
    published times are of the 224px trunk; ``trunk_scale`` carries them to another."""
    regime = regime_of(cfg)
    scaled = "" if trunk_scale == 1.0 else f", x{trunk_scale:.3f} trunk FLOPs"
    if regime in measured:
        steps_per_gpu = cfg.total_batch_size / (PER_GPU_BATCH * gpus)
        return measured[regime] * steps_per_gpu * trunk_scale, "measured" + scaled
    if published_seconds is not None:
        return published_seconds * PAPER_GPUS / gpus * trunk_scale, "published log" + scaled
    if trace is not None:
        return (trace.flops_per_iteration / (gpus * A100_BF16_PEAK * ASSUMED_UTILISATION),
                f"traced FLOPs at {ASSUMED_UTILISATION:.0%} of A100 bf16 peak")
    return (flops_seconds_per_iteration(cfg, gpus),
            f"trunk FLOPs at {ASSUMED_UTILISATION:.0%} of A100 bf16 peak")
