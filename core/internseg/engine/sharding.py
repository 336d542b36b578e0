"""Sharded training for the runs that train the 6B trunk (few-shot, full tuning).

Plain data parallelism keeps a full copy of every per-parameter state on each GPU: with fp32
master weights (full tuning) 6.4B x (4 B weight + 4 B grad + 8 B AdamW moments) = 102 GB, more
than an 80 GB GPU holds; with bf16 weights and moments (few-shot) 47 GB plus DDP's buckets.
PyTorch's FSDP (``fully_shard``) splits weights, grads and optimizer moments over the ranks
and gathers one block's weights at a time for compute. It runs here under mmengine's
FlexibleRunner as a strategy, so the Runner's loops, hooks, schedulers and resume stay.

Each trunk block is one shard unit, gathered in the dtype it computes in (fp32 masters are
rounded to bf16 before the gather, the value each layer would round them to), so sharding does
not change the arithmetic. Grads are reduce-scattered in the stored dtype.

Periodic checkpoints are written by every rank in parallel, each its own shards, with
torch.distributed.checkpoint (:func:`save_sharded_checkpoint`): a folder named like the
checkpoint file it replaces (``iter_N.pth/``), which a resume on another rank count reshards.
Gathering the 71-77 GB state to rank 0 instead held all of it in rank 0's host memory while
the other ranks waited. A single-file checkpoint (written before, or by one process) still
resumes a sharded run; the final weights stay one file in the released layout.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from mmengine._strategy import DDPStrategy
from mmengine.dist import is_distributed, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import STRATEGIES
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import (
    FSDPModule,
    MixedPrecisionPolicy,
    fully_shard,
    register_fsdp_forward_method,
)

from mmseg.registry import HOOKS

from ..io import save_torch, temp_prefix
from ..safe_load import DCP_EXTRA, safe_dcp_load, safe_load

# Shard units besides the trunk blocks: the UperNet resamplers and heads are 0.43B parameters,
# worth freeing between their forward and backward like a block.
HEAD_UNITS = ("neck", "decode_head", "auxiliary_head")
HEAD_METHODS = ("loss", "predict")


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules that become their own FSDP unit, innermost first (the root comes last)."""
    units = list(model.backbone.blocks)
    units += [getattr(model, name) for name in HEAD_UNITS if getattr(model, name, None) is not None]
    return units


def compute_dtype(model: nn.Module, unit: nn.Module) -> torch.dtype:
    """The dtype a unit's layers round their weights to: the trunk's for a block, the
    resamplers' for the neck; the heads compute in fp32."""
    if unit is getattr(model, "neck", None):
        return getattr(unit, "compute_dtype", torch.float32)
    if any(unit is block for block in model.backbone.blocks):
        return model.backbone.trunk_dtype
    return torch.float32


def gather_policy(model: nn.Module, unit: nn.Module) -> MixedPrecisionPolicy:
    """Gather fp32 master weights already rounded to the dtype the unit computes in.

    Rounding before the all-gather instead of after gives the same values, so the arithmetic
    is unchanged (tested bit for bit) while the gather moves half the bytes; gradients are
    still reduce-scattered in the masters' dtype.
    """
    stored = next(unit.parameters()).dtype
    target = compute_dtype(model, unit)
    if stored == target:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=target, reduce_dtype=stored)


def shard_model(model: nn.Module, mesh, gather_in_compute_dtype: bool = True) -> nn.Module:
    """Shard a segmentor in place over ``mesh``: one unit per trunk block and per head, the
    rest (stem, position embedding) in the root unit. Parameter names do not change."""
    for unit in shard_units(model):
        policy = gather_policy(model, unit) if gather_in_compute_dtype else MixedPrecisionPolicy()
        fully_shard(unit, mesh=mesh, mp_policy=policy)
        # mmseg calls a head's loss/predict, which call forward directly, bypassing the
        # hooks that gather a unit's weights; make them gather too
        for method in HEAD_METHODS:
            if hasattr(unit, method):
                register_fsdp_forward_method(unit, method)
    # fully_shard moves the parameters it shards onto the mesh's device
    fully_shard(model, mesh=mesh)
    return model


@contextmanager
def mmap_loading():
    """Every rank loads the full checkpoint (70 GB with the optimizer state for the 6B runs);
    memory-mapping makes the ranks of a node share one copy in the page cache."""
    from torch.utils.serialization import config

    previous = config.load.mmap
    config.load.mmap = True
    try:
        yield
    finally:
        config.load.mmap = previous


@STRATEGIES.register_module()
class ShardedTrunkStrategy(DDPStrategy):
    """Full sharding (weights, grads, AdamW state) with torch's ``fully_shard``.

    On a machine without CUDA the ranks talk over gloo, which lets the test suite run a
    two-rank sharded training on CPU.
    """

    _full = StateDictOptions(full_state_dict=True, cpu_offload=True)

    def _setup_distributed(self, launcher: str = "pytorch", backend: str = "nccl", **kwargs):
        if is_distributed():
            return
        if torch.cuda.is_available():
            super()._setup_distributed(launcher, backend, **kwargs)
            return
        if launcher != "pytorch":
            raise RuntimeError(f"sharded training without GPUs supports --launcher pytorch "
                               f"(torchrun) only, not {launcher!r}")
        torch.distributed.init_process_group("gloo")

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh

        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = self.convert_model(model)
        return shard_model(model, init_device_mesh(device, (self.world_size,)))

    # The full weights, gathered to rank 0 (collective): the run's final weights, one file
    def model_state_dict(self) -> dict:
        return get_model_state_dict(self.model, options=self._full)

    def load_model_state_dict(self, state_dict: dict, *, strict: bool = False,
                              revise_keys: list = ((r"^module\.", ""),)) -> None:
        for pattern, replacement in revise_keys:
            state_dict = {re.sub(pattern, replacement, k): v for k, v in state_dict.items()}
        set_model_state_dict(self.model, state_dict,
                             options=StateDictOptions(full_state_dict=True, strict=strict))

    def load_optim_state_dict(self, state_dict: dict) -> None:
        # a checkpoint folder's optimizer state is sharded like the optimizer's own
        full = not isinstance(state_dict, ShardedOptimizerState)
        set_optimizer_state_dict(self.model, self.optim_wrapper.optimizer, state_dict,
                                 options=StateDictOptions(full_state_dict=full))

    def resume(self, filename: str, **kwargs) -> dict:
        self._resuming = True
        try:
            return super().resume(filename, **kwargs)
        finally:
            self._resuming = False

    def load_checkpoint(self, filename: str, **kwargs) -> dict:
        """A checkpoint folder (:func:`save_sharded_checkpoint`) or a single file (a
        checkpoint written before the folders, or by one process): both resume. From a
        folder, the optimizer's state is read only for a resume (``--load-from`` takes the
        weights and starts the optimizer afresh, as from a file)."""
        if Path(filename).is_dir():
            optimizer = (self.optim_wrapper.optimizer
                         if getattr(self, "_resuming", False) else None)
            checkpoint = load_sharded_checkpoint(self.model, optimizer, filename)
            if kwargs.get("callback") is not None:
                kwargs["callback"](checkpoint)
            return checkpoint
        kwargs["map_location"] = "cpu"  # each rank copies its own shard to its device
        with mmap_loading():
            return super().load_checkpoint(filename, **kwargs)

    def save_checkpoint(self, filename: str, *, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, extra_ckpt: dict | None = None,
                        callback=None) -> None:
        """The Runner's checkpoint as a folder, every rank writing its shards
        (:func:`save_sharded_checkpoint`). Returns once the folder is there under its name:
        a rank that exits right after (preemption) must not take the job down while rank 0
        is still publishing it. The hooks' ``before_save_checkpoint`` see everything but the
        model and optimizer tensors (ours stamp meta and the message hub)."""
        import time

        import mmengine

        checkpoint = {}
        if save_param_scheduler and hasattr(self, "param_schedulers"):
            checkpoint["param_schedulers"] = self.scheduler_state_dict()
        checkpoint.update(extra_ckpt or {})
        checkpoint.setdefault("meta", {}).update(
            seed=self.seed, time=time.strftime("%Y%m%d_%H%M%S"), mmengine=mmengine.__version__)
        if callback is not None:
            callback(checkpoint)
        optimizer = (self.optim_wrapper.optimizer
                     if save_optimizer and hasattr(self, "optim_wrapper") else None)
        save_sharded_checkpoint(self.model, optimizer, checkpoint, filename)


# extra.pth's entry for the tensors that are not sharded (buffers, AdamW's step counts)
UNSHARDED = "unsharded_state"


class ShardedOptimizerState(dict):
    """An optimizer state as :func:`get_optimizer_state_dict` gives it without gathering:
    each rank's shards, keyed by parameter name."""


def split_sharded(tree: dict) -> tuple[dict, dict]:
    """A nested state split into its sharded tensors (DTensors) and the rest, same nesting."""
    from torch.distributed.tensor import DTensor

    sharded, rest = {}, {}
    for key, value in tree.items():
        if isinstance(value, dict):
            sharded[key], rest[key] = split_sharded(value)
        elif isinstance(value, DTensor):
            sharded[key] = value
        else:
            rest[key] = value
    return sharded, rest


def merged(tree: dict, rest: dict) -> dict:
    """``tree`` with ``rest`` put back where :func:`split_sharded` took it from."""
    out = dict(tree)
    for key, value in rest.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def save_sharded_checkpoint(model: nn.Module, optimizer, extra: dict, path) -> None:
    """Every rank writes its own shards of the model (and optimizer) state in parallel
    (torch.distributed.checkpoint, one file per rank); rank 0 adds ``extra.pth``: ``extra``
    (meta, message hub, schedulers), the optimizer's parameter groups and every tensor that
    is not sharded, as rank 0 holds it. Collective.

    Unsharded tensors go with rank 0's copy, as the gathered checkpoint had them: the ranks'
    copies of a buffer differ (BatchNorm's running statistics follow each rank's own
    batches), and DCP would write whichever copy balances its files, which breaks a
    bit-for-bit resume.

    Atomic like a file: written into a temporary folder (named as :func:`atomic_path` names
    its files, so that a killed writer's is removed at the next start), renamed to ``path``
    by rank 0 once every rank has written. A folder already at ``path`` is replaced."""
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    state = dict(model=get_model_state_dict(model))
    extra = dict(extra)
    if optimizer is not None:
        optim_state = get_optimizer_state_dict(model, optimizer)
        state["optimizer"] = optim_state["state"]
        extra["param_groups"] = optim_state["param_groups"]
    state, extra[UNSHARDED] = split_sharded(state)
    tmp = [None]
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp[0] = tempfile.mkdtemp(prefix=temp_prefix(path.name), dir=path.parent)
    torch.distributed.broadcast_object_list(tmp, src=0)
    tmp = Path(tmp[0])
    dcp.save(state, storage_writer=dcp.FileSystemWriter(tmp, single_file_per_rank=True))
    # dcp.save returns on rank 0 after every rank's file is written (it gathers their
    # results before writing .metadata); the others wait here until the folder is named
    if is_main_process():
        save_torch(tmp / DCP_EXTRA, extra)
        publish_folder(tmp, path)
    torch.distributed.barrier()


def publish_folder(tmp: Path, path: Path) -> None:
    """Rename a completely written folder to ``path``, replacing what is there; the rename is
    flushed to disk with the folder that holds it."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), dir=path.parent))
        os.replace(path, old / path.name)
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        shutil.rmtree(old)


def load_sharded_checkpoint(model: nn.Module, optimizer, path) -> dict:
    """Load a checkpoint folder into a sharded model (and optimizer) in place, whatever
    rank count wrote it; returns the rest of the checkpoint, with the optimizer state (this
    rank's shards) under ``optimizer`` for the Runner's resume. Collective."""
    path = Path(path)
    checkpoint = safe_load(path / DCP_EXTRA)
    state = dict(model=get_model_state_dict(model))
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)["state"]
    sharded, _ = split_sharded(state)
    safe_dcp_load(sharded, path)
    state = merged(sharded, checkpoint.pop(UNSHARDED))
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        checkpoint["optimizer"] = ShardedOptimizerState(
            state=state["optimizer"], param_groups=checkpoint.pop("param_groups"))
    return checkpoint


def fsdp_units(model: nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@HOOKS.register_module()
class GatheredValidationHook(Hook):
    """Validation under sharding: gather the whole model once, before validating.

    A sharded forward is a collective, so every rank must run the same number of them; slide
    inference runs as many windows as an image's size needs, which differs between the
    images of different ranks, and would deadlock. Gathered weights make the forward passes
    local: 23.6 GB of fp32 weights per GPU for the 6B runs, freed right after validation.
    """

    priority = "VERY_HIGH"

    def before_val(self, runner) -> None:
        units = fsdp_units(runner.model)
        for unit in units:
            unit.unshard()
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)

    def after_val(self, runner) -> None:
        for unit in fsdp_units(runner.model):
            unit.set_reshard_after_forward(True, recurse=False)
            unit.reshard()
