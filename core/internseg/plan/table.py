"""The plan as a table: totals, the assumptions it names, and its markdown."""

from __future__ import annotations

from dataclasses import dataclass

from .checkpoints import (FIRST_JOB_HOURS, MAX_JOB_HOURS, STOP_WARNING_S, WHAT_IF_INTERVAL,
                          Bandwidth)
from .runs import RunCost, _sig
from .step import ASSUMED_UTILISATION


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
    from ..datasets import DATASETS

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
