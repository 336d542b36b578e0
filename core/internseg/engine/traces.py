"""Rehearsal traces: what one holds, where they are stored, how a run finds the trace of its
shape, and the checks the plan and the workflow make with them. Reading them needs no torch
(the workflow checks them when it parses); tracing is :mod:`internseg.engine.rehearse`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

# The memory kinds a trace reports, per GPU; torch's tracker's names map onto them (KINDS_OF).
KINDS = ("weights", "gathered_weights", "grads", "optimizer_state", "activations",
         "gather_scatter_buffers", "temporaries", "inputs", "buffers")

# Part of every shape key: a change to what a trace holds or how it is traced makes the stored
# traces unread (traced again) rather than wrong.
TRACE_VERSION = 1


@dataclass
class Trace:
    """One run's rehearsal: per GPU, bytes at the peak by kind, and FLOPs."""

    run: str
    shape_key: str
    gpus: int
    sharded: bool
    per_gpu_batch: int
    accumulation: int
    crop: list[int]
    val_image: list[int]
    val_windows: int
    peak_bytes: int  # over the training iteration and the validation image
    peak_phase: str  # "train" or "validation"
    peak_by_kind: dict[str, int]  # at that peak
    train_peak_bytes: int
    train_peak_by_kind: dict[str, int]
    validation_peak_bytes: int
    validation_peak_by_kind: dict[str, int]
    state_bytes: dict[str, int]  # held between iterations: weights, optimizer state, buffers
    flops_per_gpu_step: int  # one micro-batch on one GPU: forward, backward, optimizer
    flops_per_iteration: int  # the effective batch (all GPUs, all accumulation steps)
    flops_per_val_image: int
    host_bytes: int  # what a rank builds in host memory before moving the model to its GPU
    trace_seconds: float
    torch: str = field(default_factory=lambda: _torch_version())
    version: int = TRACE_VERSION

    @property
    def biggest_kind(self) -> str:
        return max(self.peak_by_kind, key=self.peak_by_kind.get)


def rehearsal_config(preset: str, run, gpus: int, cfg_options: dict | None = None):
    """The config ``internseg train`` trains ``run`` with on ``gpus`` GPUs (one process each;
    one GPU: one process, nothing sharded), with no pretrained file (fake weights)."""
    from .train import TrainOptions, build_train_config

    opts = TrainOptions(config=f"{preset}/{run.experiment}", trunk=run.trunk,
                        dataset=run.dataset, launcher="pytorch" if gpus > 1 else "none",
                        cfg_options=dict(cfg_options or {}))
    cfg = build_train_config(opts, with_start=False, world_size=gpus)
    cfg.model.backbone.pretrained = None
    return cfg


def val_image_size(cfg, dataset: str) -> tuple[int, int]:
    """The validation image the rehearsal runs: the plan's assumed mean image of the dataset
    through the run's test pipeline."""
    from ..datasets import get_dataset
    from ..sizing import resized_for_test

    return resized_for_test(cfg.val_dataloader.dataset.pipeline,
                            *get_dataset(dataset).val_image, f"run {dataset}")


def shape_key(cfg, gpus: int, val_image: tuple[int, int]) -> str:
    """What decides a trace's shapes: the model (its trunk by architecture, not by name or
    file), the optimizer, the batch plan, the sharding and the validation image. Runs that
    differ only in data, seeds, schedules or trunk weights share it."""
    from ..config import backbone_architecture

    model = cfg.model.to_dict()
    backbone = dict(model["backbone"])
    backbone.update(backbone_architecture(cfg.model.backbone))
    # which file, and how many blocks it holds beyond those built, decide only the loading
    for key in ("trunk", "pretrained", "pretrained_depth"):
        backbone.pop(key, None)
    optim = cfg.optim_wrapper.to_dict()
    optim.pop("accumulative_counts", None)
    what = dict(model={**model, "backbone": backbone}, optim=optim, batch=cfg.batch_plan,
                gpus=gpus, sharded=bool(cfg.get("strategy")) and gpus > 1,
                val_image=list(val_image), version=TRACE_VERSION)
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Committed for the paper preset (benchmarks/rehearse.py writes them, `internseg plan` reads
# them); a run finds its trace by its shape key, so a trace of a config that has since
# changed is never read for it.
TRACES_DIR = Path("benchmarks/rehearsal")
DEFAULT_GPU_MEMORY_GB = 80.0


def traces_dir(preset: str, root: Path = TRACES_DIR) -> Path:
    return root / preset


def default_gpus(preset: str) -> int:
    """The paper's runs train on 8 GPUs; the demo's in one process (config.yaml)."""
    from ..sizing import PAPER_GPUS

    return PAPER_GPUS if preset == "paper" else 1


def read_trace(path: Path) -> Trace | None:
    """A stored trace, or None where there is none or it is of another trace version."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a rehearsal trace ({err})") from None
    if not isinstance(data, dict) or data.get("version") != TRACE_VERSION:
        return None
    try:
        return Trace(**data)
    except TypeError as err:
        raise InputError(f"{path}: not a rehearsal trace ({err})") from None


def trace_of(preset: str, run, gpus: int, directory: Path) -> Trace | None:
    """The stored trace of ``run`` on ``gpus`` GPUs (shared by every run of its shape)."""
    cfg = rehearsal_config(preset, run, gpus)
    return read_trace(directory / f"{shape_key(cfg, gpus, val_image_size(cfg, run.dataset))}.json")


def gb(n: int) -> float:
    return round(n / 1e9, 2)


def summary(run_id: str, trace: Trace) -> dict:
    """One run's traced figures per GPU, in GB (1e9 bytes) and FLOPs."""
    return dict(run=run_id, traced_as=trace.run, shape_key=trace.shape_key, gpus=trace.gpus,
                sharded=trace.sharded, per_gpu_batch=trace.per_gpu_batch,
                peak_gb=gb(trace.peak_bytes), peak_phase=trace.peak_phase,
                biggest_kind=trace.biggest_kind,
                peak_by_kind_gb={k: gb(v) for k, v in trace.peak_by_kind.items()},
                peak_bytes=trace.peak_bytes, peak_by_kind_bytes=trace.peak_by_kind,
                train_peak_gb=gb(trace.train_peak_bytes),
                validation_peak_gb=gb(trace.validation_peak_bytes),
                flops_per_iteration=trace.flops_per_iteration,
                flops_per_gpu_step=trace.flops_per_gpu_step,
                flops_per_val_image=trace.flops_per_val_image,
                host_gb_per_rank=gb(trace.host_bytes), trace_seconds=trace.trace_seconds)


def refuse_unfit(traces: dict[str, Trace], gpu_memory_gb: float) -> None:
    """InputError naming every run whose traced peak per GPU exceeds ``gpu_memory_gb``."""
    over = [(run, t) for run, t in traces.items() if t.peak_bytes > gpu_memory_gb * 1e9]
    if over:
        raise InputError("; ".join(
            f"run {run} does not fit its GPUs: traced peak {t.peak_bytes / 1e9:.3g} GB per "
            f"GPU ({t.peak_phase}) > {gpu_memory_gb:g} GB, biggest {t.biggest_kind} "
            f"{t.peak_by_kind[t.biggest_kind] / 1e9:.3g} GB" for run, t in over))


def stored_traces(preset: str, runs, gpus: int, directory: Path) -> dict[str, Trace]:
    """The stored traces of those ``runs`` that have one (nothing is traced)."""
    if not directory.is_dir() or not any(directory.glob("*.json")):
        return {}
    found = {}
    for run in runs:
        trace = trace_of(preset, run, gpus, directory)
        if trace is not None:
            found[run.id] = trace
    return found


def check_traced_fit(preset: str, runs, gpus: int, directory: Path,
                     gpu_memory_gb: float) -> None:
    """The workflow's check when it starts: every run with a stored trace fits its GPUs."""
    refuse_unfit(stored_traces(preset, runs, gpus, directory), gpu_memory_gb)


def _torch_version() -> str:
    import torch

    return torch.__version__
