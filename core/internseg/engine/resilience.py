"""What long jobs on a shared cluster need: atomic checkpoints, a resume point that is known
to be readable, a clean stop when the scheduler warns of the time limit, and randomness that
does not depend on whether the run was interrupted.
"""

from __future__ import annotations

import logging
import re
import signal
from contextlib import contextmanager
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmseg.registry import HOOKS, RUNNERS

from ..io import atomic_path, write_text
from .stops import STOP_SIGNALS, early_stops
from ..safe_load import CheckpointError, UnsafeCheckpointError, verify_checkpoint

log = logging.getLogger("internseg")

# EX_TEMPFAIL: "try again later". Any non-zero status makes Snakemake retry the job.
EXIT_PREEMPTED = 75
CHECKPOINT_NAME = re.compile(r"^iter_(\d+)\.pth$")


@RUNNERS.register_module()
class InternSegRunner(Runner):
    """mmengine's Runner, but a checkpoint only appears under its name once fully written,
    and a trunk given its pretrained file's tensors is left out of the weight
    initialisation's bookkeeping."""

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        if self.rank != 0:
            return  # mmengine's Runner writes checkpoints on rank 0 only
        with atomic_path(Path(out_dir) / filename) as tmp:
            super().save_checkpoint(out_dir, tmp.name, *args, **kwargs)

    def load_checkpoint(self, filename, map_location="cpu", strict=False,
                        revise_keys=((r"^module\.", ""),)):
        """mmengine's load (the resume's too), with the file memory-mapped, and every tensor
        stored as the model stores it (dtype, device, shape) taken as the model's storage
        instead of copied into it: a head-tuning checkpoint (17.6 GB, 11.8 GB of it the bf16
        trunk) was read into anonymous memory and then copied over a trunk that lives in
        the pretrained file's pages, which made a private copy of those too."""
        from mmengine.model import is_model_wrapper
        from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

        from .sharding import mmap_loading

        with mmap_loading():
            checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        share_storage(model, checkpoint.get("state_dict", checkpoint), revise_keys)
        # what is left to copy (other dtypes, buffers) is copied, and the shared tensors'
        # copies onto themselves are skipped by torch
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict,
                                               revise_keys=list(revise_keys))
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}")
        return checkpoint

    def _init_model_weights(self) -> None:
        """mmengine's init_weights takes the mean of every parameter before and after each
        submodule's initialisation, only to log which changed, and then broadcasts every
        tensor from rank 0. For a trunk that holds its file's tensors (memory-mapped) that
        read the whole file twice: 34 s on this CPU at full size, for the 0.2 s the mapping
        takes. Its tensors are left out of both (every rank maps the same file); the rest of
        the model is initialised as before."""
        from mmengine.model import is_model_wrapper

        model = self.model.module if is_model_wrapper(self.model) else self.model
        trunk = getattr(model, "backbone", None)
        if not getattr(trunk, "loaded_from_file", False):
            super()._init_model_weights()
            return
        with file_tensors_hidden(trunk):
            super()._init_model_weights()


def share_storage(model, state: dict, revise_keys) -> None:
    """Each parameter of ``model`` whose checkpoint tensor has its dtype, device and shape
    takes that tensor's storage (the parameter object stays: the optimizer holds it)."""
    params = dict(model.named_parameters())
    for key, value in state.items():
        for pattern, replacement in revise_keys:
            key = re.sub(pattern, replacement, key)
        param = params.get(key)
        if (param is not None and value.dtype == param.dtype and value.device == param.device
                and value.shape == param.shape):
            param.data = value


@contextmanager
def file_tensors_hidden(trunk):
    """The trunk's parameters that its pretrained file holds, out of sight of
    ``named_parameters`` and ``state_dict`` for the duration (the parts a subclass adds around
    the trunk, such as an adapter's, stay)."""
    hidden = {}
    for prefix, module in trunk.named_modules():
        names = [name for name, param in module._parameters.items() if param is not None
                 and trunk.is_trunk(f"{prefix}.{name}".lstrip("."))]
        if names:
            hidden[module] = (list(module._parameters), {n: module._parameters.pop(n)
                                                         for n in names})
    try:
        yield
    finally:
        # back in their places: the order of parameters is the order of state dict keys
        for module, (order, params) in hidden.items():
            current = dict(module._parameters) | params
            module._parameters.clear()
            module._parameters.update((name, current[name]) for name in order)


def is_readable_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a complete checkpoint that loads safely (see
    :func:`~internseg.safe_load.verify_checkpoint`: pickle and every entry's CRC-32, so a
    file damaged inside an intact zip directory is caught too)."""
    try:
        verify_checkpoint(path)
    except CheckpointError:
        return False
    return True


def latest_valid_checkpoint(work_dir: str | Path) -> Path | None:
    """The newest ``iter_N.pth`` in ``work_dir`` that is complete and loads safely; a damaged
    one (killed writer, bad disk) is skipped with a warning in favour of an older one. One
    that a weights-only load refuses is an error: it was put there, not broken by a crash."""
    found = []
    for path in Path(work_dir).glob("iter_*.pth"):
        match = CHECKPOINT_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    for _, path in sorted(found, reverse=True):
        try:
            verify_checkpoint(path)
        except UnsafeCheckpointError as err:
            # every retry would stop here again: say what clears it
            raise UnsafeCheckpointError(
                f"{err}. Auto-resume does not skip a refused file: move {path} out of "
                f"{path.parent} (or delete it) to resume from the checkpoint before it"
            ) from None
        except CheckpointError as err:
            log.warning("%s; falling back to an earlier checkpoint", err)
            continue
        return path
    return None


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([seed, iteration, rank]).generate_state(1)[0])


@HOOKS.register_module()
class IterationSeedHook(Hook):
    """Seeds every source of randomness from (seed, iteration, rank).

    mmengine resumes by skipping sampler indices without replaying the data pipeline, so the
    global RNG states of a resumed run would differ from an uninterrupted one. Reseeding at
    fixed points of each iteration makes augmentation (numpy/random, drawn when the batch is
    loaded) and drop path (torch, drawn in the forward pass) functions of the iteration alone:
    a resumed run then trains bit for bit like an uninterrupted one (with ``num_workers=0``;
    worker processes keep their own streams).
    """

    priority = "LOWEST"

    def _seed_data(self, runner, iteration: int) -> None:
        import random

        import numpy as np

        value = iteration_seed(runner.seed, iteration, runner.rank)
        random.seed(value)
        np.random.seed(value)

    def before_train(self, runner) -> None:
        self._seed_data(runner, runner.iter)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        import torch

        # after validation, which draws from torch's RNG when it builds its data iterator
        torch.manual_seed(iteration_seed(runner.seed, runner.iter, runner.rank) ^ 0x5EED)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        # the next batch is loaded right after this hook
        self._seed_data(runner, runner.iter + 1)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """On SIGURG (the warning profiles/slurm asks Slurm for before the time limit), SIGTERM or
    SIGUSR1, finish the current iteration, save a checkpoint, and exit with
    :data:`EXIT_PREEMPTED` so the workflow resubmits the job, which resumes (``--auto-resume``).

    SIGURG because its default action is to be ignored: Slurm signals every process of the
    job step, and the Snakemake and bash processes between Slurm and the trainer must not die
    of it while the checkpoint is written.
    """

    priority = "LOWEST"  # after CheckpointHook, so a just-saved iteration is not saved twice

    def __init__(self, signals: tuple[str, ...] = STOP_SIGNALS):
        self.signals = [getattr(signal, name) for name in signals]
        self._requested: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        self._requested = signum

    def before_train(self, runner) -> None:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handler)
        early = [sig for sig in early_stops() if sig in self.signals]
        if early:
            self._requested = early[-1]

    def after_train(self, runner) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _any_rank_requested(self) -> bool:
        """Every rank must stop at the same iteration, even if only one got the signal."""
        import torch
        from mmengine import dist

        flag = torch.tensor([1 if self._requested else 0])
        if dist.get_world_size() > 1:
            dist.all_reduce(flag, op="max")
        return bool(flag.item())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not self._any_rank_requested():
            return
        from mmengine import dist

        step = runner.iter + 1
        name = Path(checkpoint_now(runner)).name
        # the first rank to exit makes torchrun/srun stop the others: rank 0 must have written
        dist.barrier()
        what = signal.Signals(self._requested).name if self._requested else "another rank"
        runner.logger.warning(f"stop requested by {what}: saved {name} at iteration {step}; "
                              f"exiting with {EXIT_PREEMPTED} so that the job is resubmitted")
        raise SystemExit(EXIT_PREEMPTED)


def checkpoint_now(runner) -> str:
    """In ``after_train_iter``: the checkpoint of the iteration just trained, saved unless
    CheckpointHook has just saved it; its path. Every rank calls it (a sharded save is
    collective)."""
    name = f"iter_{runner.iter + 1}.pth"
    path = str(Path(runner.work_dir) / name)
    # CheckpointHook records what it saved; every rank sees the same record, whereas a
    # look at the file system could differ between ranks and split a collective save
    if runner.message_hub.get_info("last_ckpt") != path:
        # counted among CheckpointHook's kept checkpoints (max_keep_ckpts), so that the
        # resumed run rotates it out like theirs instead of leaving it on disk for good
        kept = runner.message_hub.get_info("keep_ckpt_ids") or []
        runner.message_hub.update_info("keep_ckpt_ids", [*kept, runner.iter + 1])
        runner.save_checkpoint(runner.work_dir, name, save_optimizer=True,
                               save_param_scheduler=True, by_epoch=False)
        runner.message_hub.update_info("last_ckpt", path)
        if runner.rank == 0:
            write_text(Path(runner.work_dir) / "last_checkpoint", path)
    return path
