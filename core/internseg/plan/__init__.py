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

In parts, one idea each: :mod:`.step` (pricing a training step), :mod:`.validation` (a
validation pass), :mod:`.checkpoints` (bytes, bandwidths, starts and the timeline),
:mod:`.runs` (one run's cost and every run's), :mod:`.table` (totals and the markdown).
"""

from .checkpoints import (ASSUMED_FS_AGGREGATE_WRITE_GBPS, ASSUMED_FS_READ_GBPS,
                          ASSUMED_FS_WRITE_GBPS, FIRST_JOB_HOURS, MAX_JOB_HOURS,
                          STOP_WARNING_S, Bandwidth, Events, job_seconds, timeline)
from .runs import RunCost, plan
from .step import (A100_BF16_PEAK, ASSUMED_UTILISATION, measured_step_seconds,
                   published_iteration_seconds, trunk_flops_per_image)
from .table import Units, assumed_val_images, assumptions, to_markdown, totals

__all__ = ["A100_BF16_PEAK", "ASSUMED_FS_AGGREGATE_WRITE_GBPS", "ASSUMED_FS_READ_GBPS",
           "ASSUMED_FS_WRITE_GBPS", "ASSUMED_UTILISATION", "FIRST_JOB_HOURS", "MAX_JOB_HOURS",
           "STOP_WARNING_S", "Bandwidth", "Events", "RunCost", "Units", "assumed_val_images",
           "assumptions", "job_seconds", "measured_step_seconds", "plan",
           "published_iteration_seconds", "timeline", "to_markdown", "totals",
           "trunk_flops_per_image"]
