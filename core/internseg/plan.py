"""`internseg plan`: what a preset's runs will cost, before anything is submitted.

Per run: GPUs, seconds per iteration and where that figure comes from, wall time, GPU-hours,
peak GPU and host memory, checkpoint and work-dir disk. The model is built on the meta
device, so the 6B configs are planned in seconds on a laptop.

Seconds per iteration come from the best source there is, and the plan says which:
1. ``measured``: ``benchmarks/gpu_check.json`` (written by ``benchmarks/gpu_check.sh`` on a
   GPU), else ``benchmarks/RESULTS.md``: one GPU at batch 2 per regime (the paper's per-GPU
   batch), scaled to the run's GPU count;
2. ``published log``: the original's per-iteration ``time:`` on 8 A100s, scaled likewise;
3. ``FLOPs``: the trunk's matmul and attention FLOPs (forward, backward and the recompute of
   activation checkpointing for a trained trunk) at an assumed share of A100 bf16 peak; the
   heads are not counted, so UperNet runs come out low.
Memory and disk are arithmetic from the parameter counts and the dtypes the config stores.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

GB = 1e9
A100_BF16_PEAK = 312e12
# Share of peak that large ViT training reaches with checkpointing; an assumption, stated.
ASSUMED_UTILISATION = 0.4
PAPER_GPUS = 8  # the published logs ran on 8 A100-80GB
PER_GPU_BATCH = 2
# Activations, gathered shards and allocator slack per GPU beyond the stored state: the
# per-regime arithmetic in docs/cluster.md (one gathered block with its grads twice with prefetch,
# checkpointed block inputs, one block's recompute). The adapter's is the trained figure, not
# worked out: a guess until a GPU measures it (its 1/4 map alone is 0.2 GB per image in fp32).
WORKING_SET_GB = {"frozen": 4.0, "trained": 6.0, "adapter": 6.0}

_ITER_TIME = re.compile(r"Iter \[\d+/\d+\][^\n]*?\btime: ([0-9.]+)")
_RESULTS_ROW = re.compile(r"^\| `(\w+)`[^|]*\| ([^|]*)\| ([^|]*)\|", re.MULTILINE)


@dataclass(frozen=True)
class RunCost:
    run: str
    experiment: str
    trunk: str
    dataset: str
    regime: str
    gpus: int
    iterations: int
    seconds_per_iteration: float
    source: str
    wall_hours: float
    gpu_hours: float
    gpu_memory_gb: float
    host_memory_gb: float
    checkpoint_gb: float
    work_dir_gb: float


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
    from .config import backbone_architecture

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


def measured_step_seconds(results_md: str) -> dict[str, float]:
    """Seconds per batch-2 step per regime from benchmarks/RESULTS.md ('–' = not measured)."""
    found = {}
    for regime, _gpu, seconds in _RESULTS_ROW.findall(results_md):
        try:
            found[regime] = float(seconds.strip())
        except ValueError:
            continue
    return found


def gpu_check_step_seconds(report: dict) -> dict[str, float]:
    """Seconds per batch-2 trunk step per regime from gpu_check.json; a CPU smoke run on
    the tiny trunk measures nothing about the 6B one and gives nothing."""
    if report.get("tiny") or report.get("device", "cpu") == "cpu":
        return {}
    return {row["regime"]: float(row["seconds_per_iter"]) for row in report.get("trunk", [])}


def published_iteration_seconds(log_text: str) -> float | None:
    """Median per-iteration `time:` of an mmcv 1.x training log (8 GPUs), None if absent."""
    times = [float(t) for t in _ITER_TIME.findall(log_text)]
    return statistics.median(times) if times else None


@dataclass(frozen=True)
class StoredBytes:
    """Bytes per trained parameter: held while training (weights, grads, two AdamW moments),
    in a work-dir checkpoint (weights and moments), in final.pth (weights)."""
    training: int
    checkpoint: int
    weights: int


def stored_bytes(cfg) -> StoredBytes:
    backbone = cfg.model.backbone
    if not backbone.get("freeze_trunk") and not backbone.get("master_weights", True):
        return StoredBytes(2 + 2 + 4, 2 + 4, 2)  # bf16 weights, grads and moments
    return StoredBytes(4 + 4 + 8, 4 + 8, 4)


def run_cost(run, cfg, counts: dict, gpus: int, *, measured: dict[str, float],
             published_seconds: float | None, trunk_scale: float = 1.0) -> RunCost:
    """The cost of ``run`` (an :class:`internseg.registry.Run`). Measured and published
    times are of the 224px trunk the paper's rows start from; ``trunk_scale`` (the ratio of
    trunk FLOPs, 1 on that trunk) carries them to another trunk."""
    regime = regime_of(cfg)
    iterations = cfg.train_cfg.max_iters
    steps_per_gpu = cfg.total_batch_size / (PER_GPU_BATCH * gpus)
    scaled = "" if trunk_scale == 1.0 else f", x{trunk_scale:.3f} trunk FLOPs"
    if regime in measured:
        seconds = measured[regime] * steps_per_gpu * trunk_scale
        source = "measured" + scaled
    elif published_seconds is not None:
        seconds = published_seconds * PAPER_GPUS / gpus * trunk_scale
        source = "published log" + scaled
    else:
        seconds = flops_seconds_per_iteration(cfg, gpus)
        source = f"trunk FLOPs at {ASSUMED_UTILISATION:.0%} of A100 bf16 peak"
    wall = iterations * seconds / 3600

    total, trainable = counts["total_params"], counts["trainable_params"]
    frozen = total - trainable
    size = stored_bytes(cfg)
    sharded = gpus > 1 and cfg.get("strategy") is not None
    state = trainable * size.training / (gpus if sharded else 1)
    # a frozen trunk is stored in bf16 on every GPU
    gpu_memory = (state + frozen * 2) / GB + WORKING_SET_GB[
        regime if regime in WORKING_SET_GB else "trained"]
    # every rank builds the model in fp32 in host memory before sharding or casting
    host_memory = gpus * total * 4 / GB
    checkpoint = (trainable * size.checkpoint + frozen * 2) / GB
    keep = cfg.default_hooks.checkpoint.get("max_keep_ckpts") or 1
    # the kept checkpoints, one more being written beside them, and final.pth (a frozen
    # trunk is left out of it: it is the pretrained file)
    work_dir = checkpoint * (keep + 1) + trainable * size.weights / GB
    return RunCost(run.id, run.experiment, run.trunk, run.dataset, regime, gpus, iterations,
                   round(seconds, 3), source,
                   round(wall, 1), round(wall * gpus, 1), round(gpu_memory, 1),
                   round(host_memory, 1), round(checkpoint, 1), round(work_dir, 1))


def plan(runs: Iterable, preset: str, gpus: int, *, results_md: Path | None = None,
         gpu_check: Path | None = None,
         published_logs: dict[str, Path] | None = None) -> list[RunCost]:
    """One cost per run (:class:`internseg.registry.Run`, as ``plan_runs`` makes them).
    ``published_logs`` are keyed by experiment: the original's run on the config's own trunk
    and dataset."""
    from .config import load_config
    from .engine.inspect import describe
    from .registry import experiments as registered, resolve_run

    measured = (measured_step_seconds(results_md.read_text())
                if results_md and results_md.is_file() else {})
    if gpu_check and gpu_check.is_file():
        measured.update(gpu_check_step_seconds(json.loads(gpu_check.read_text())))
    known = registered(preset)
    written, per_cell, costs = {}, {}, []
    for run in runs:
        key = (run.experiment, run.trunk, run.dataset)
        if key in per_cell:  # another seed of the same run costs the same
            costs.append(replace(per_cell[key], run=run.id))
            continue
        if run.experiment not in written:
            written[run.experiment] = load_config(f"{preset}/{run.experiment}")
        own, exp = written[run.experiment], known[run.experiment]
        cfg = own if (run.trunk, run.dataset) == (exp.trunk.name, exp.dataset.name) else (
            resolve_run(preset, run))
        cfg.model.backbone.pretrained = None
        log = (published_logs or {}).get(run.experiment)
        published = (published_iteration_seconds(log.read_text(errors="replace"))
                     if log and log.is_file() else None)
        scale = (trunk_flops_per_image(cfg.model.backbone)
                 / trunk_flops_per_image(own.model.backbone))
        per_cell[key] = run_cost(run, cfg, describe(cfg), gpus, measured=measured,
                                 published_seconds=published, trunk_scale=round(scale, 6))
        costs.append(per_cell[key])
    return costs


def totals(costs: list[RunCost]) -> dict:
    return dict(runs=len(costs), wall_hours=round(sum(c.wall_hours for c in costs), 1),
                gpu_hours=round(sum(c.gpu_hours for c in costs), 1),
                peak_gpu_memory_gb=max((c.gpu_memory_gb for c in costs), default=0),
                peak_host_memory_gb=max((c.host_memory_gb for c in costs), default=0),
                work_dir_gb=round(sum(c.work_dir_gb for c in costs), 1))


COLUMNS = ["run", "regime", "gpus", "iterations", "seconds_per_iteration", "source",
           "wall_hours", "gpu_hours", "gpu_memory_gb", "host_memory_gb", "checkpoint_gb",
           "work_dir_gb"]


def to_markdown(costs: list[RunCost]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(asdict(c)[k]) for k in COLUMNS) + " |" for c in costs]
    t = totals(costs)
    lines.append(f"\n{t['runs']} runs: {t['gpu_hours']} GPU-hours ({t['wall_hours']} h if run "
                 f"one after another), peak {t['peak_gpu_memory_gb']} GB per GPU and "
                 f"{t['peak_host_memory_gb']} GB host memory per node, "
                 f"{t['work_dir_gb']} GB of work dirs.")
    return "\n".join(lines) + "\n"
