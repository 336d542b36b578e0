"""The paper's effective batch of 16, whatever the number of GPUs.

Per-GPU batch times world size times gradient-accumulation steps must make 16. With
accumulation, one loop iteration is one micro-batch, so every iteration-counted setting is
stretched by the accumulation factor, while the lr schedule keeps counting optimizer updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from mmengine.hooks import ParamSchedulerHook

from mmseg.registry import HOOKS

from ..errors import InputError

WORLD_SIZE_VARS = {"pytorch": "WORLD_SIZE", "slurm": "SLURM_NTASKS", "mpi": "OMPI_COMM_WORLD_SIZE"}


@dataclass(frozen=True)
class BatchPlan:
    world_size: int
    per_gpu: int
    accumulation: int

    @property
    def effective(self) -> int:
        return self.world_size * self.per_gpu * self.accumulation


def world_size_from_env(launcher: str, env: Mapping[str, str]) -> int:
    if launcher == "none":
        return 1
    var = WORLD_SIZE_VARS[launcher]
    try:
        return int(env[var])
    except (KeyError, ValueError):
        raise InputError(f"--launcher {launcher} needs {var} in the environment") from None


RANK_VARS = {"pytorch": "RANK", "slurm": "SLURM_PROCID", "mpi": "OMPI_COMM_WORLD_RANK"}


def process_rank(launcher: str, env: Mapping[str, str]) -> int:
    """This process's global rank, before the process group exists."""
    if launcher == "none":
        return 0
    return int(env.get(RANK_VARS[launcher], 0))


def plan_batch(total: int, per_gpu: int, world_size: int) -> BatchPlan:
    """Keep ``per_gpu`` (what fits in memory) unless the GPUs alone exceed ``total``."""
    if total % world_size:
        raise InputError(f"total batch {total} cannot be split over {world_size} processes")
    per_process = total // world_size
    per_gpu = min(per_gpu, per_process)
    while per_process % per_gpu:
        per_gpu -= 1
    return BatchPlan(world_size, per_gpu, per_process // per_gpu)


def apply_batch_plan(cfg, plan: BatchPlan) -> None:
    """Set the per-GPU batch and accumulation; stretch iteration counts by the accumulation."""
    k = plan.accumulation
    cfg.train_dataloader.batch_size = plan.per_gpu
    cfg.optim_wrapper.accumulative_counts = k
    cfg.train_cfg.max_iters *= k
    cfg.train_cfg.val_interval *= k
    for hook in ("checkpoint", "logger"):
        cfg.default_hooks[hook].interval *= k
    cfg.batch_plan = dict(asdict(plan), effective=plan.effective)


@HOOKS.register_module()
class UpdateStepParamSchedulerHook(ParamSchedulerHook):
    """Steps the lr schedule once per optimizer update, not once per accumulated micro-batch,
    so that warmup and poly decay count the paper's iterations."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        every = getattr(runner.optim_wrapper, "_accumulative_counts", 1)
        if (runner.iter + 1) % every == 0:
            super().after_train_iter(runner, batch_idx, data_batch, outputs)
