"""One run's cost (:func:`run_cost`) and every run's (:func:`plan`): the parts put together,
memory per GPU and host, disk."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from .checkpoints import (FIRST_JOB_HOURS, MAX_JOB_HOURS, WHAT_IF_INTERVAL, Bandwidth, Events,
                          Timeline, stored_bytes, timeline)
from .step import (GB, SlideSpeed, gpu_check_slide, gpu_check_step_seconds,
                   measured_step_seconds, published_iteration_seconds, read_gpu_check,
                   read_text, regime_of, step_seconds, trunk_flops_per_image)
from .validation import validation_pass


# Activations, gathered shards and allocator slack per GPU beyond the stored state: the
# per-regime arithmetic in docs/cluster.md (one gathered block with its grads twice with prefetch,
# checkpointed block inputs, one block's recompute). The adapter's is the trained figure, not
# worked out: a guess until a GPU measures it (its 1/4 map alone is 0.2 GB per image in fp32).
WORKING_SET_GB = {"frozen": 4.0, "trained": 6.0, "adapter": 6.0}


# keyword-only: 26 fields are read by name, never by position
@dataclass(frozen=True, kw_only=True)
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


def run_cost(run, cfg, counts: dict, gpus: int, *, measured: dict[str, float],
             published_seconds: float | None, trunk_scale: float = 1.0,
             slide: SlideSpeed | None = None, slide_flops: float | None = None,
             bandwidth: Bandwidth = Bandwidth(), trace=None) -> RunCost:
    """The cost of ``run`` (an :class:`internseg.registry.Run`). Measured and published
    times are of the 224px trunk the paper's rows start from; ``trunk_scale`` (the ratio of
    trunk FLOPs, 1 on that trunk) carries them to another trunk. ``slide`` and
    ``slide_flops``: the GPU check's slide inference and the trunk FLOPs of its window.
    ``trace``: the run's rehearsal (:class:`internseg.engine.traces.Trace`), whose memory
    and whole-model FLOPs replace the arithmetic ones."""
    from ..trunks import TRUNKS

    regime = regime_of(cfg)
    iterations = cfg.train_cfg.max_iters
    seconds, source = step_seconds(cfg, gpus, measured, published_seconds, trunk_scale, trace)

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
        run=run.id, experiment=run.experiment, trunk=run.trunk, dataset=run.dataset,
        regime=regime, gpus=gpus, iterations=iterations, seconds_per_iteration=_sig(seconds),
        source=source, train_hours=_sig(times.train_s / 3600), validations=times.validations,
        validation_seconds=_sig(validation), validation_source=validation_source,
        validation_hours=_sig(times.validation_s / 3600), checkpoints=times.checkpoints,
        checkpoint_hours=_sig(times.checkpoint_s / 3600), starts=times.starts,
        load_hours=_sig(times.load_s / 3600), io_source=io_source, wall_hours=_sig(wall),
        gpu_hours=_sig(wall * gpus), gpu_memory_gb=_sig(gpu_memory),
        host_memory_gb=_sig(host_memory), checkpoint_gb=_sig(checkpoint),
        work_dir_gb=_sig(work_dir),
        saved_gpu_hours={name: _sig((times.total_s - alt.total_s) * gpus / 3600)
                         for name, alt in what_ifs.items()},
        memory_source="traced" if trace is not None else "arithmetic")


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
    from ..config import load_config
    from ..engine.inspect import describe
    from ..engine.traces import refuse_unfit, stored_traces
    from ..registry import experiments as registered, resolve_run

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
