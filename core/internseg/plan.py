"""`internseg plan`: what a preset's runs will cost, before anything is submitted.

Per run: GPUs, seconds per iteration and where that figure comes from, and the hours of
everything the job holds its GPUs for: the training steps, the validations every
``train_cfg.val_interval`` iterations, the checkpoints every
``default_hooks.checkpoint.interval`` (and one at each time-limit stop), and reading the
trunk file at every start (and the checkpoint at every resume); wall time and GPU-hours of
all of it, peak GPU and host memory, checkpoint and work-dir disk. The model is built on the
meta device, so the 6B configs are planned in seconds on a laptop.

Seconds per iteration come from the best source there is, and the plan says which:
1. ``measured``: ``benchmarks/gpu_check.json`` (written by ``benchmarks/gpu_check.sh`` on a
   GPU), else ``benchmarks/RESULTS.md``: one GPU at batch 2 per regime (the paper's per-GPU
   batch), scaled to the run's GPU count;
2. ``published log``: the original's per-iteration ``time:`` on 8 A100s, scaled likewise;
3. ``FLOPs``: the trunk's matmul and attention FLOPs (forward, backward and the recompute of
   activation checkpointing for a trained trunk) at an assumed share of A100 bf16 peak; the
   heads are not counted, so UperNet runs come out low.
A validation pass takes the GPU check's slide-inference images/s where it ran on a GPU, else
the trunk FLOPs of the slide windows an (assumed) average validation image is cut into.
Checkpoint writes and file reads take assumed file-system bandwidths, and a run starts as
often as the Slurm profile's job limits make it (or ``--starts``). Every assumption is named
in the output (:func:`assumptions`). Memory per GPU and per node comes from the run's
rehearsal where its shape has a trace (``internseg rehearse``: the real model on fake
tensors; the step's FLOPs then count the whole model), else it is arithmetic from the
parameter counts and the dtypes the config stores; disk is arithmetic.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import InputError

GB = 1e9
A100_BF16_PEAK = 312e12
# Share of peak that large ViT training reaches with checkpointing; an assumption, stated.
# Slide inference without a measurement is priced at the same share.
ASSUMED_UTILISATION = 0.4
PAPER_GPUS = 8  # the published logs ran on 8 A100-80GB
PER_GPU_BATCH = 2
# Activations, gathered shards and allocator slack per GPU beyond the stored state: the
# per-regime arithmetic in docs/cluster.md (one gathered block with its grads twice with prefetch,
# checkpointed block inputs, one block's recompute). The adapter's is the trained figure, not
# worked out: a guess until a GPU measures it (its 1/4 map alone is 0.2 GB per image in fp32).
WORKING_SET_GB = {"frozen": 4.0, "trained": 6.0, "adapter": 6.0}
# Assumed file-system bandwidths of a shared cluster file system: one writer (rank 0 writes a
# checkpoint while the other ranks wait) and one reader per node (the ranks memory-map the
# trunk file and a resumed checkpoint, so a node's ranks share one read through the page
# cache). Change them with --fs-write-gbps / --fs-read-gbps.
ASSUMED_FS_WRITE_GBPS = 2.0
ASSUMED_FS_READ_GBPS = 2.0
# A sharded run's periodic checkpoint is written by every rank at once (distributed
# checkpoint, a shard each): each rank at the one-writer figure, all of them together capped
# at this assumed whole-file-system figure (--fs-aggregate-write-gbps).
ASSUMED_FS_AGGREGATE_WRITE_GBPS = 8.0
# profiles/slurm/config.yaml: a training job gets min(1440 * attempt, 2880) minutes and
# SIGURG 600 s before the limit, then saves a checkpoint and is resubmitted (`retries`).
FIRST_JOB_HOURS = 24
MAX_JOB_HOURS = 48
STOP_WARNING_S = 600
# The what-ifs the markdown prices: validating and checkpointing every this many iterations,
# which leaves the trained weights as they are (neither is part of the run identity).
WHAT_IF_INTERVAL = 4000

_ITER_TIME = re.compile(r"Iter \[\d+/\d+\][^\n]*?\btime: ([0-9.]+)")
_RESULTS_ROW = re.compile(r"^\| `(\w+)`[^|]*\| ([^|]*)\| ([^|]*)\|", re.MULTILINE)


@dataclass(frozen=True)
class Bandwidth:
    """The assumed file-system figures (GB/s) and, if given, how often every run starts."""

    write_gbps: float = ASSUMED_FS_WRITE_GBPS
    read_gbps: float = ASSUMED_FS_READ_GBPS
    starts: int | None = None  # None: as many jobs as the profile's time limits need
    aggregate_write_gbps: float = ASSUMED_FS_AGGREGATE_WRITE_GBPS

    def checkpoint_write_gbps(self, writers: int) -> float:
        """What ``writers`` ranks writing their shards at once reach together."""
        return min(writers * self.write_gbps, self.aggregate_write_gbps)


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
    train_hours: float
    validations: int
    validation_seconds: float  # one pass over the validation set, on all the run's GPUs
    validation_source: str
    validation_hours: float
    checkpoints: int  # written: every interval, the last, and one per time-limit stop
    checkpoint_hours: float  # those and final.pth, written at the assumed bandwidth
    starts: int
    load_hours: float  # the trunk file at every start, the checkpoint at every resume
    io_source: str
    wall_hours: float
    gpu_hours: float
    gpu_memory_gb: float
    host_memory_gb: float
    checkpoint_gb: float
    work_dir_gb: float
    saved_gpu_hours: dict  # what-if -> GPU-hours it saves (see WHAT_IF_INTERVAL)
    memory_source: str = "arithmetic"  # "traced": gpu and host memory from its rehearsal


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


def validation_pass(cfg, dataset: str, gpus: int, slide: SlideSpeed | None,
                    measured_flops: float | None, where: str,
                    trace=None) -> tuple[float, str]:
    """Seconds of one validation (every image of the run's dataset, shared by its GPUs) and
    where the figure comes from. ``measured_flops``: the trunk FLOPs of one window of the
    segmentor the GPU check timed; ``where``: the run, for errors; ``trace``: its rehearsal,
    which ran the same assumed image through the whole segmentor."""
    from .datasets import get_dataset

    images = get_dataset(dataset).val_count
    test = cfg.model.test_cfg
    size = get_dataset(dataset).val_image
    resized = resized_for_test(cfg.val_dataloader.dataset.pipeline, *size, where)
    windows = slide_windows(*resized, test.crop_size, test.stride)
    window_flops = trunk_flops_per_image(cfg.model.backbone)
    if slide is not None:
        scale = (windows / slide_windows(*slide.image, slide.crop, slide.stride)
                 * window_flops / measured_flops)
        per_image = scale / slide.images_per_s
        source = (f"measured slide inference (linear head), x{scale:.3f} windows and trunk "
                  f"FLOPs ({windows} per assumed {size[0]}x{size[1]} image)")
    elif trace is not None:
        per_image = trace.flops_per_val_image / (A100_BF16_PEAK * ASSUMED_UTILISATION)
        source = (f"traced FLOPs at {ASSUMED_UTILISATION:.0%} of A100 bf16 peak, {windows} "
                  f"windows per assumed {size[0]}x{size[1]} image")
    else:
        per_image = windows * window_flops / (A100_BF16_PEAK * ASSUMED_UTILISATION)
        source = (f"trunk FLOPs at {ASSUMED_UTILISATION:.0%} of A100 bf16 peak, {windows} "
                  f"windows per assumed {size[0]}x{size[1]} image")
    return images * per_image / gpus, source


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


@dataclass(frozen=True)
class Events:
    """Wall seconds of each thing a run does, once."""

    step: float
    validation: float
    checkpoint_write: float
    final_write: float
    trunk_read: float
    checkpoint_read: float


@dataclass(frozen=True)
class Timeline:
    validations: int
    checkpoints: int
    starts: int
    train_s: float
    validation_s: float
    checkpoint_s: float
    load_s: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.validation_s + self.checkpoint_s + self.load_s


def job_seconds(attempts: int) -> float:
    """Training time in ``attempts`` jobs of the Slurm profile: 24 h, then 48 h each, each
    stopped at its SIGURG, 600 s before the limit."""
    return sum(min(FIRST_JOB_HOURS * a, MAX_JOB_HOURS) * 3600 - STOP_WARNING_S
               for a in range(1, attempts + 1))


def timeline(iterations: int, events: Events, val_interval: int, checkpoint_interval: int,
             save_last: bool, starts: int | None = None) -> Timeline:
    """How often a run validates, checkpoints and starts, and the seconds of each.

    mmengine validates every ``val_interval`` iterations and after the last; CheckpointHook
    saves every ``checkpoint_interval`` and (``save_last``) after the last; every start after
    the first follows a time-limit stop, which saved a checkpoint of its own, and resumes from
    it. ``starts`` None: as many jobs as the profile's time limits need for all of it."""
    validations = -(-iterations // val_interval)
    regular = iterations // checkpoint_interval + (
        1 if save_last and iterations % checkpoint_interval else 0)

    def at(n: int) -> Timeline:
        return Timeline(
            validations=validations, checkpoints=regular + n - 1, starts=n,
            train_s=iterations * events.step, validation_s=validations * events.validation,
            checkpoint_s=(regular + n - 1) * events.checkpoint_write + events.final_write,
            load_s=n * events.trunk_read + (n - 1) * events.checkpoint_read)

    if starts is not None:
        return at(starts)
    n = 1
    while job_seconds(n) < at(n).total_s:
        n += 1
    return at(n)


def run_cost(run, cfg, counts: dict, gpus: int, *, measured: dict[str, float],
             published_seconds: float | None, trunk_scale: float = 1.0,
             slide: SlideSpeed | None = None, slide_flops: float | None = None,
             bandwidth: Bandwidth = Bandwidth(), trace=None) -> RunCost:
    """The cost of ``run`` (an :class:`internseg.registry.Run`). Measured and published
    times are of the 224px trunk the paper's rows start from; ``trunk_scale`` (the ratio of
    trunk FLOPs, 1 on that trunk) carries them to another trunk. ``slide`` and
    ``slide_flops``: the GPU check's slide inference and the trunk FLOPs of its window.
    ``trace``: the run's rehearsal (:class:`internseg.engine.rehearse.Trace`), whose memory
    and whole-model FLOPs replace the arithmetic ones."""
    from .trunks import TRUNKS

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
    elif trace is not None:
        seconds = trace.flops_per_iteration / (gpus * A100_BF16_PEAK * ASSUMED_UTILISATION)
        source = f"traced FLOPs at {ASSUMED_UTILISATION:.0%} of A100 bf16 peak"
    else:
        seconds = flops_seconds_per_iteration(cfg, gpus)
        source = f"trunk FLOPs at {ASSUMED_UTILISATION:.0%} of A100 bf16 peak"

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
    if trace is not None:
        gpu_memory = trace.peak_bytes / GB
        host_memory = gpus * trace.host_bytes / GB
    checkpoint = (trainable * size.checkpoint + frozen * 2) / GB
    # final.pth: the trained weights (a frozen trunk is left out of it: it is the
    # pretrained file)
    final = trainable * size.weights / GB
    trunk = TRUNKS[run.trunk]
    # a synthetic trunk has no pinned size: its parameters as the released files store them
    trunk_gb = (trunk.size if trunk.size else
                (counts["backbone_params"] - counts["adapter_params"]) * 2) / GB

    validation, validation_source = validation_pass(cfg, run.dataset, gpus, slide,
                                                    slide_flops, f"run {run.id}", trace)
    write, read = bandwidth.write_gbps, bandwidth.read_gbps
    # final.pth is one file in the released layout, written by rank 0 alone
    periodic_write = bandwidth.checkpoint_write_gbps(gpus) if sharded else write
    events = Events(step=seconds, validation=validation,
                    checkpoint_write=checkpoint / periodic_write,
                    final_write=final / write, trunk_read=trunk_gb / read,
                    checkpoint_read=checkpoint / read)
    hook = cfg.default_hooks.checkpoint
    save_last = hook.get("save_last", True)

    def plan_of(val_interval: int, checkpoint_interval: int) -> Timeline:
        return timeline(iterations, events, val_interval, checkpoint_interval, save_last,
                        bandwidth.starts)

    times = plan_of(cfg.train_cfg.val_interval, hook.interval)
    what_ifs = {f"val_interval={WHAT_IF_INTERVAL}": plan_of(WHAT_IF_INTERVAL, hook.interval),
                f"checkpoint_interval={WHAT_IF_INTERVAL}": plan_of(
                    cfg.train_cfg.val_interval, WHAT_IF_INTERVAL)}
    starts_from = ("--starts" if bandwidth.starts is not None else
                   f"{FIRST_JOB_HOURS} h, then {MAX_JOB_HOURS} h jobs")
    io_source = (f"assumed {write:g} GB/s write and {read:g} GB/s read; {times.starts} "
                 f"start(s) ({starts_from})")
    keep = hook.get("max_keep_ckpts") or 1
    # left behind: the kept checkpoints and the one of each time-limit stop (CheckpointHook
    # deletes only its own), one more being written beside them, and final.pth
    work_dir = checkpoint * (keep + times.starts) + final
    wall = times.total_s / 3600
    return RunCost(
        run.id, run.experiment, run.trunk, run.dataset, regime, gpus, iterations,
        _sig(seconds), source, _sig(times.train_s / 3600), times.validations,
        _sig(validation), validation_source, _sig(times.validation_s / 3600),
        times.checkpoints, _sig(times.checkpoint_s / 3600), times.starts,
        _sig(times.load_s / 3600), io_source, _sig(wall), _sig(wall * gpus),
        _sig(gpu_memory), _sig(host_memory), _sig(checkpoint), _sig(work_dir),
        {name: _sig((times.total_s - alt.total_s) * gpus / 3600)
         for name, alt in what_ifs.items()},
        "traced" if trace is not None else "arithmetic")


def _sig(value: float, digits: int = 6) -> float:
    """Rounded to significant digits, not decimals: the demo's tiny runs take fractions of a
    second and megabytes, which two decimals of hours and gigabytes made 0.0."""
    return float(f"{value:.{digits}g}")


def plan(runs: Iterable, preset: str, gpus: int, *, results_md: Path | None = None,
         gpu_check: Path | None = None, published_logs: dict[str, Path] | None = None,
         bandwidth: Bandwidth = Bandwidth(), val_interval: int | None = None,
         checkpoint_interval: int | None = None, traces: Path | None = None,
         gpu_memory_gb: float | None = None) -> list[RunCost]:
    """One cost per run (:class:`internseg.registry.Run`, as ``plan_runs`` makes them).
    ``published_logs`` are keyed by experiment: the original's run on the config's own trunk
    and dataset. ``val_interval`` and ``checkpoint_interval`` replace the configs' (what-ifs:
    neither changes the trained weights). ``traces``: the folder of rehearsal traces
    (``internseg rehearse``), read where a run's shape has one; a run whose traced peak per
    GPU exceeds ``gpu_memory_gb`` is refused (InputError naming it) before anything else."""
    from .config import load_config
    from .engine.inspect import describe
    from .engine.rehearse import refuse_unfit, stored_traces
    from .registry import experiments as registered, resolve_run

    runs = list(runs)
    traced = stored_traces(preset, runs, gpus, traces) if traces else {}
    if gpu_memory_gb is not None:
        refuse_unfit(traced, gpu_memory_gb)

    measured = (measured_step_seconds(read_text(results_md, "--results"))
                if results_md and results_md.is_file() else {})
    slide, slide_flops = None, None
    if gpu_check and gpu_check.is_file():
        report = read_gpu_check(gpu_check)
        where = f"--gpu-check {gpu_check}"
        measured.update(gpu_check_step_seconds(report, where))
        slide = gpu_check_slide(report, where)
        if slide is not None:  # the check times the paper's linear-probing segmentor
            slide_flops = trunk_flops_per_image(
                load_config("paper/linear_probing").model.backbone)
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
        if val_interval:
            cfg.train_cfg.val_interval = val_interval
        if checkpoint_interval:
            cfg.default_hooks.checkpoint.interval = checkpoint_interval
        log = (published_logs or {}).get(run.experiment)
        published = (published_iteration_seconds(log.read_text(errors="replace"))
                     if log and log.is_file() else None)
        scale = (trunk_flops_per_image(cfg.model.backbone)
                 / trunk_flops_per_image(own.model.backbone))
        per_cell[key] = run_cost(run, cfg, describe(cfg), gpus, measured=measured,
                                 published_seconds=published, trunk_scale=round(scale, 6),
                                 slide=slide, slide_flops=slide_flops, bandwidth=bandwidth,
                                 trace=traced.get(run.id))
        costs.append(per_cell[key])
    return costs


HOURS = ("train_hours", "validation_hours", "checkpoint_hours", "load_hours")


def totals(costs: list[RunCost]) -> dict:
    saved = {}
    for c in costs:
        for name, hours in c.saved_gpu_hours.items():
            saved[name] = saved.get(name, 0.0) + hours
    return dict(runs=len(costs),
                **{k: _sig(sum(getattr(c, k) for c in costs)) for k in HOURS},
                wall_hours=_sig(sum(c.wall_hours for c in costs)),
                gpu_hours=_sig(sum(c.gpu_hours for c in costs)),
                peak_gpu_memory_gb=max((c.gpu_memory_gb for c in costs), default=0),
                peak_host_memory_gb=max((c.host_memory_gb for c in costs), default=0),
                work_dir_gb=_sig(sum(c.work_dir_gb for c in costs)),
                saved_gpu_hours={k: _sig(v) for k, v in saved.items()})


def assumed_val_images() -> dict[str, tuple[int, int]]:
    """The mean size (height, width) of a validation image each dataset's entry assumes: it
    decides how many slide windows the test pipeline cuts an image into."""
    from .datasets import DATASETS

    return {name: dataset.val_image for name, dataset in DATASETS.items()}


def assumptions(bandwidth: Bandwidth) -> dict:
    """Every figure the plan assumes rather than measures, with its value."""
    return dict(
        utilisation_of_a100_bf16_peak=ASSUMED_UTILISATION,
        validation_image_height_width=assumed_val_images(),
        fs_write_gbps=bandwidth.write_gbps,
        fs_aggregate_write_gbps=bandwidth.aggregate_write_gbps,
        fs_read_gbps=bandwidth.read_gbps,
        starts=bandwidth.starts if bandwidth.starts is not None else (
            f"as many jobs as the hours need: {FIRST_JOB_HOURS} h, then {MAX_JOB_HOURS} h "
            f"each, stopping {STOP_WARNING_S} s before each limit (profiles/slurm)"),
    )


def _short(source: str) -> str:
    return next((kind for kind in ("measured", "published log", "traced")
                 if source.startswith(kind)), "FLOPs")


COLUMNS = ["run", "regime", "gpus", "iterations", "seconds_per_iteration", "train_hours",
           "validations", "validation_hours", "checkpoints", "checkpoint_hours", "starts",
           "load_hours", "wall_hours", "gpu_hours", "gpu_memory_gb", "host_memory_gb",
           "checkpoint_gb", "work_dir_gb", "sources"]


def _digits(value: float) -> str:
    """Three significant digits, without an exponent from 100 up."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


SIZES = ("gpu_memory_gb", "host_memory_gb", "checkpoint_gb", "work_dir_gb")


@dataclass(frozen=True)
class Units:
    """The units a table reads in: hours and GB for the paper's runs; minutes or seconds, and
    MB per size column, where every run is that small (the demo's), instead of columns of 0.0.
    One time unit for the table, so that its columns add up."""

    time: str  # "hours" | "min" | "s"
    time_scale: float  # hours per unit
    megabytes: frozenset  # the size columns that read in MB

    @classmethod
    def fitting(cls, costs: list[RunCost]) -> Units:
        longest = max((c.wall_hours for c in costs), default=1.0)
        time = (("hours", 1.0) if longest >= 1 else ("min", 1 / 60) if longest * 60 >= 1
                else ("s", 1 / 3600))
        small = frozenset(k for k in SIZES if max((getattr(c, k) for c in costs), default=1) < 1)
        return cls(*time, small)

    def column(self, key: str) -> str:
        if key.endswith("_hours"):
            return key.removesuffix("hours") + self.time
        return key.removesuffix("gb") + "mb" if key in self.megabytes else key

    def hours(self, value: float, decimals: int = 2) -> str:
        """``value`` hours in the table's unit: as many decimals of hours as the paper's tables
        have always had, else 3 significant digits."""
        return (f"{round(value, decimals)}" if self.time == "hours"
                else _digits(value / self.time_scale))

    def size(self, key: str, value: float) -> str:
        """``value`` GB as column ``key`` reads it."""
        return _digits(value * 1e3) if key in self.megabytes else f"{round(value, 1)}"

    def size_unit(self, key: str) -> str:
        return "MB" if key in self.megabytes else "GB"

    def time_words(self, gpu: bool = False) -> str:
        if gpu:
            return "GPU-" + {"hours": "hours", "min": "minutes", "s": "seconds"}[self.time]
        return {"hours": "h", "min": "min", "s": "s"}[self.time]


def to_markdown(costs: list[RunCost], bandwidth: Bandwidth = Bandwidth()) -> str:
    starts = "--starts" if bandwidth.starts is not None else "job limits"
    units = Units.fitting(costs)

    def cell(c: RunCost, key: str):
        if key == "sources":
            return (f"step: {_short(c.source)}; validation: {_short(c.validation_source)}; "
                    f"memory: {c.memory_source}; checkpoints, loads: assumed; "
                    f"starts: {starts}")
        value = getattr(c, key)
        if key.endswith("_hours"):
            return units.hours(value)
        if key in SIZES:
            return units.size(key, value)
        if key == "seconds_per_iteration":
            return f"{round(value, 3)}" if value >= 0.01 else _digits(value)
        return value

    lines = ["| " + " | ".join(map(units.column, COLUMNS)) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(cell(c, k)) for k in COLUMNS) + " |" for c in costs]
    t, h = totals(costs), units.time_words()
    hours = {k: units.hours(t[k]) for k in HOURS}
    peak = {k: f"{units.size(k, t[f'peak_{k}'])} {units.size_unit(k)}"
            for k in ("gpu_memory_gb", "host_memory_gb")}
    lines.append(f"\n{t['runs']} runs: {units.hours(t['gpu_hours'], 1)} "
                 f"{units.time_words(gpu=True)} ({units.hours(t['wall_hours'], 1)} {h} if run "
                 f"one after another: {hours['train_hours']} {h} training, "
                 f"{hours['validation_hours']} {h} validation, {hours['checkpoint_hours']} {h} "
                 f"writing checkpoints, {hours['load_hours']} {h} loading), peak "
                 f"{peak['gpu_memory_gb']} per GPU and {peak['host_memory_gb']} host memory per "
                 f"node, {units.size('work_dir_gb', t['work_dir_gb'])} "
                 f"{units.size_unit('work_dir_gb')} of work dirs.")
    # traced FLOPs are counted, but their speed is assumed as much as the trunk's
    flops = any(_short(c.source) in ("FLOPs", "traced") for c in costs)
    flops_validation = any(_short(c.validation_source) in ("FLOPs", "traced") for c in costs)
    sizes = ", ".join(f"{d} {h}x{w}" for d, (h, w) in assumed_val_images().items()
                      if any(c.dataset == d for c in costs))
    notes = [f"FLOPs (traced: the whole model; else the trunk's, heads not counted) at "
             f"{ASSUMED_UTILISATION:.0%} of A100 bf16 peak for "
             f"{'steps and ' if flops else ''}validation passes with no GPU measurement"
             if flops or flops_validation else None,
             f"mean validation image (height x width, px): {sizes}, which sets the slide "
             "windows per image",
             f"a checkpoint written at {bandwidth.write_gbps:g} GB/s per writer "
             "(--fs-write-gbps): by rank 0 alone while the other ranks wait (final.pth, and "
             "every checkpoint of an unsharded run), by every rank at once for a sharded run's "
             f"periodic ones, capped at {bandwidth.aggregate_write_gbps:g} GB/s in all "
             "(--fs-aggregate-write-gbps)",
             f"the trunk file read at every start and the checkpoint at every resume, once "
             f"per node, at {bandwidth.read_gbps:g} GB/s (--fs-read-gbps)",
             "starts: " + (f"{bandwidth.starts} per run (--starts)"
                           if bandwidth.starts is not None else
                           f"as many Slurm jobs as the hours need ({FIRST_JOB_HOURS} h, then "
                           f"{MAX_JOB_HOURS} h each, stopped {STOP_WARNING_S} s before the "
                           "limit: profiles/slurm); each later start also writes a checkpoint "
                           "at the stop and reads it back (--starts N to set it)")]
    lines.append("\nAssumed, not measured: " + "; ".join(n for n in notes if n) + ".")
    saved = {k: units.hours(v, 1) for k, v in t["saved_gpu_hours"].items() if v > 0}
    if saved:
        what = {f"val_interval={WHAT_IF_INTERVAL}": f"validating every {WHAT_IF_INTERVAL} "
                f"iterations (`--val-interval {WHAT_IF_INTERVAL}`)",
                f"checkpoint_interval={WHAT_IF_INTERVAL}": f"checkpointing every "
                f"{WHAT_IF_INTERVAL} iterations (`--checkpoint-interval {WHAT_IF_INTERVAL}`; a "
                "crash then redoes up to that many iterations, a time-limit stop still saves)"}
        lines.append("\nSame trained weights for less: " + "; ".join(
            f"{what[k]} saves {v} {units.time_words(gpu=True)}" for k, v in saved.items())
            + ".")
    return "\n".join(lines) + "\n"
