"""`internseg rehearse`: a run's memory per GPU and FLOPs, at its true size, without a GPU.

The run is built as `internseg train` builds it (its config moved to its trunk and dataset,
the batch plan for its GPU count, SyncBN as BN where there is no CUDA, its precision and
activation checkpointing, FSDP units or DDP, the layer-decay optimizer, the heads and
losses), but on fake tensors (``FakeTensorMode``: shapes and dtypes, no data) and with a fake
process group standing for the other ranks. One training iteration at the run's per-GPU batch
and crop, then one validation image of slide inference, run under torch's memory tracker
(every tensor by kind, the peak over forward, backward and the optimizer step) and its FLOP
counter. Everything is one rank's view: what each GPU holds.

Order matters: the segmentor is built on the meta device (building it under fake tensors
fails in the trunk's dtype cast: a parameter swapped while it has a weak reference), sharded
there, and only then given fake storage (``to_empty`` inside ``FakeTensorMode``).

Where a library reads a value that fake tensors do not have, that piece alone is stood in for
(:data:`STAND_INS`); the model, the optimizer and the sharding run as they are.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import InputError
from .traces import (KINDS, Trace, read_trace, rehearsal_config, shape_key,
                     val_image_size)

KINDS_OF = {
    # MemTracker (one process, DDP)
    "Parameter": "weights", "Gradient": "grads", "Optstate": "optimizer_state",
    "Activation": "activations", "Temp": "temporaries", "Buffer": "buffers",
    # FSDPMemTracker
    "Sharded Param": "weights", "Unsharded Param": "gathered_weights",
    "Sharded Grad": "grads", "Unsharded Grad": "grads", "OptState": "optimizer_state",
    "All Gather": "gather_scatter_buffers", "Reduce Scatter": "gather_scatter_buffers",
    "Inputs": "inputs",
}
# ---------------------------------------------------------------- the run as train builds it


@contextmanager
def fake_ranks(gpus: int):
    """A process group of ``gpus`` ranks in which this process is rank 0 and the others are
    hallucinated: collectives return at once with tensors of the right shape."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise RuntimeError("rehearsal needs a process of its own (a process group exists)")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=gpus)
    try:
        yield
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- library stand-ins


class _Answer(TorchDispatchMode):
    """Answers the scalar reads (``.item()``, ``bool()``) of a fake tensor with ``value``."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            return self.value
        return func(*args, **(kwargs or {}))


def _answering(method, value):
    def wrapped(*args, **kwargs):
        with _Answer(value):
            return method(*args, **kwargs)
    return wrapped


def _cpu_autocast(device_type=None, dtype=None, enabled=True, cache_enabled=None):
    return torch.autocast("cpu", dtype=dtype, enabled=enabled,
                          cache_enabled=cache_enabled)


def _fake_accuracy(pred, target, *args, **kwargs):
    return pred.new_zeros(())


# Library code that reads data fake tensors do not hold, each stood in for alone, and why its
# memory does not matter. (module, attribute, replacement factory, why)
STAND_INS = (
    ("mmseg.models.decode_heads.decode_head", "accuracy", lambda orig: _fake_accuracy,
     "mmseg's pixel accuracy in a decode head's loss dict selects the labelled pixels by "
     "boolean mask (a data-dependent shape); it is logged, not trained on, runs without a "
     "graph, and holds a few label-sized masks for an instant (2 x 504 x 504 x 9 B = 4.6 MB "
     "at the paper's crop)"),
    ("mmseg.models.segmentors.encoder_decoder", "EncoderDecoder.slide_inference",
     lambda orig: _answering(orig, True),
     "mmseg's slide inference asserts that its windows covered every pixel, a read of "
     "count_mat's values; answered True, the windows run as they are"),
    ("mmengine.logging.message_hub", "MessageHub.update_scalar",
     lambda orig: _answering(orig, 0.0),
     "mmengine's log record turns each logged scalar (losses, the gradient norm) into a "
     "Python number; a 0-dim value, nothing held"),
    ("mmengine.optim.optimizer.amp_optimizer_wrapper", "is_cuda_available",
     lambda orig: lambda: True,
     "mmengine's AmpOptimWrapper (adapter row) refuses to be built without CUDA; built, its "
     "loss scaler finds no CUDA and turns itself off (its state on a GPU: a few scalars)"),
    ("mmengine.runner.amp", "autocast", lambda orig: _cpu_autocast,
     "mmengine's autocast allows only bf16 on a CPU; torch's CPU autocast runs the fp16 "
     "the adapter row asks for, casting the same matmul and convolution ops to it"),
    # Not a stand-in: what eager does. DTensor works out an op's output shape on
    # global-shaped fake tensors, in the fake mode already active if there is one, else in
    # one of its own; in a rehearsal that is ours, whose tracker then counts them (20 GB of
    # "activations" for the gradient norm of full tuning). In its own mode, as on a GPU,
    # the tracker skips them.
    ("torch.distributed.tensor._sharding_prop", "detect_fake_mode",
     lambda orig: lambda *args, **kwargs: None,
     "DTensor's sharding propagation runs in a fake mode of its own, as in eager"),
)


@contextmanager
def stand_ins():
    import importlib

    saved = []
    try:
        for module_name, attr, factory, _why in STAND_INS:
            owner = importlib.import_module(module_name)
            *path, name = attr.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = owner.__dict__[name]
            saved.append((owner, name, original))
            setattr(owner, name, factory(original))
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


# ---------------------------------------------------------------- memory tracking


def _fsdp_tracker(model, optimizer):
    """torch's FSDPMemTracker, also seeing the units that run through a registered forward
    method (our heads' ``loss``/``predict``, :func:`internseg.engine.sharding.shard_model`):
    those call the unit's ``_pre_forward``/``_post_forward`` directly, not through the
    forward hooks the tracker wraps, so it never learnt of them and failed in their
    backward."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.fsdp import FSDPModule

    class Tracker(FSDPMemTracker):
        def _register_module_and_optimizer_hooks(self) -> None:
            super()._register_module_and_optimizer_hooks()
            self._method_units = []
            for module in self._root_mod.modules():
                if isinstance(module, FSDPModule) and module is not self._root_mod:
                    state = module._get_fsdp_state()
                    if state._fsdp_param_group is None:
                        continue
                    # instance attributes shadow the bound methods for the direct calls
                    # only; the hooks already hold wrapped originals
                    state._pre_forward = self._fsdp_state_pre_forward(module, state._pre_forward)
                    state._post_forward = self._fsdp_state_post_forward(module,
                                                                        state._post_forward)
                    self._method_units.append(state)

        def _deregister_module_and_optimizer_hooks(self) -> None:
            for state in self._method_units:
                del state._pre_forward, state._post_forward
            super()._deregister_module_and_optimizer_hooks()

    return Tracker(model, optimizer)


def _tracker():
    """torch's MemTracker, except that it hooks the gradients of the parameters that have
    them only: it hooks every parameter's, and a frozen one (a frozen trunk, the adapter's)
    refuses a hook."""
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    class Tracker(MemTracker):
        def _track_module_params_and_buffers(self, module, install_grad_hooks: bool = True):
            counted = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
            if not install_grad_hooks:
                return counted

            def on_grad(grad):
                self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

            for param in module.parameters():
                if param.requires_grad and param not in self._param_to_grad_hook_handles:
                    self._param_to_grad_hook_handles[param] = (
                        param.register_hook(on_grad),
                        param.register_post_accumulate_grad_hook(lambda p: on_grad(p.grad)))
            return counted

    return Tracker()


def ddp_bucket_bytes(model) -> int:
    """What DDP's reducer holds beside the gradients: its buckets, one flat copy of every
    trainable parameter's gradient (mmengine wraps with ``gradient_as_bucket_view`` off),
    allocated when it wraps the model. Arithmetic, not traced: the reducer checks the
    parameters' shapes across the ranks through real storage, which fake tensors lack."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def _by_kind(snapshot: dict) -> dict[str, int]:
    out = dict.fromkeys(KINDS, 0)
    for name, value in snapshot.items():
        kind = KINDS_OF.get(str(getattr(name, "value", name)))
        if kind is not None:
            out[kind] += int(value)
    return {k: v for k, v in out.items() if v}


def _peak(tracker) -> dict[str, int]:
    """Bytes by kind at the tracker's peak (its one device: the fake ranks share one)."""
    snaps = tracker.get_tracker_snapshot("peak")
    return _by_kind(next(iter(snaps.values()))) if snaps else {}


# ---------------------------------------------------------------- FLOPs


class _Everywhere:
    """A module tracker that places every op in the whole model ("Global")."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def flop_counter():
    """torch's FlopCounterMode without its per-module attribution: the attribution wraps
    every module's outputs for the backward, which keeps activations alive (at full size
    46 GB instead of 6 GB, full tuning) and would make the memory traced beside it wrong.
    Only the total is read."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _Everywhere()
    return counter


# ---------------------------------------------------------------- the rehearsal


def _batch(batch: int, crop: tuple[int, int], num_classes: int):
    """One training batch as the dataloader hands it to the model: uint8 images at the crop,
    label maps of the classes and the ignore index (random: fake where a fake mode is on)."""
    from mmengine.structures import PixelData

    from mmseg.structures import SegDataSample

    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, *crop), dtype=torch.uint8))
        labels = torch.randint(0, num_classes + 1, (1, *crop))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=labels.masked_fill(labels == num_classes, 255))
        sample.set_metainfo(dict(img_shape=tuple(crop), ori_shape=tuple(crop),
                                 pad_shape=tuple(crop), scale_factor=(1.0, 1.0), flip=False,
                                 reduce_zero_label=True))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _val_image(size: tuple[int, int]):
    from mmseg.structures import SegDataSample

    sample = SegDataSample()
    sample.set_metainfo(dict(img_shape=tuple(size), ori_shape=tuple(size),
                             pad_shape=tuple(size), scale_factor=(1.0, 1.0), flip=False,
                             reduce_zero_label=True))
    return dict(inputs=[torch.randint(0, 256, (3, *size), dtype=torch.uint8)],
                data_samples=[sample])


def _state_bytes(model, optimizer) -> dict[str, int]:
    opt = sum(_local_bytes(v) for s in optimizer.state.values() for v in s.values()
              if isinstance(v, torch.Tensor))
    return dict(weights=sum(_local_bytes(p) for p in model.parameters()),
                buffers=sum(_local_bytes(b) for b in model.buffers()),
                optimizer_state=opt)


class _GradBytes:
    """The gradient bytes the optimizer steps on (local shards under sharding): every
    gradient of the iteration exists then."""

    def __init__(self, optimizer):
        self.optimizer, self.bytes = optimizer, 0

    def _count(self, optimizer, args, kwargs) -> None:
        self.bytes = sum(_local_bytes(p.grad) for group in optimizer.param_groups
                         for p in group["params"] if p.grad is not None)

    def __enter__(self):
        self._handle = self.optimizer.register_step_pre_hook(self._count)
        return self

    def __exit__(self, *args):
        self._handle.remove()


def _local_bytes(t: torch.Tensor) -> int:
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def host_build_bytes(cfg) -> int:
    """Bytes of the segmentor as a rank builds it in host memory (parameters and buffers in
    the dtypes they are built in) before it moves to its GPU or is sharded."""
    from .segmentor import build_segmentor

    model = build_segmentor(cfg, device="meta")
    return sum(t.numel() * t.element_size()
               for t in (*model.parameters(), *model.buffers()))


def _initialise_optimizer_state(optim_wrapper, model) -> None:
    """The optimizer's moments as they are from the second iteration on (AdamW creates them
    at its first step): one step on zero gradients, outside the traced iteration."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optim_wrapper.optimizer.step()
    optim_wrapper.optimizer.zero_grad(set_to_none=True)


def _last_micro_batch(optim_wrapper, model, accumulation: int) -> None:
    """With gradient accumulation, the iteration that peaks is the one that updates: its
    backward adds to the gradients of the micro-batches before it, then the optimizer
    steps. The traced one is that one: gradients held, the wrapper's count one short."""
    if accumulation == 1:
        return
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optim_wrapper._inner_count = accumulation - 1


def rehearse(preset: str, run, gpus: int, cfg_options: dict | None = None, *,
             fake: bool = True) -> Trace:
    """One training iteration and one validation image of ``run`` on ``gpus`` fake ranks
    (``cfg_options``: as ``internseg train --cfg-options``). ``fake`` False: the same on
    real tensors, random weights and data, one process (what the tests compare with)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .. import plugin  # noqa: F401  (the registries a config's custom_imports fill)
    from ..sizing import slide_windows
    from .segmentor import build_segmentor
    from .sharding import GatheredValidationHook, shard_model

    if not fake and gpus > 1:
        raise InputError("a real (not fake) rehearsal runs one process: --gpus 1")
    started = time.monotonic()
    cfg = rehearsal_config(preset, run, gpus, cfg_options)
    val_image = val_image_size(cfg, run.dataset)
    plan = cfg.batch_plan
    sharded = bool(cfg.get("strategy")) and gpus > 1
    crop = tuple(cfg.model.data_preprocessor.size)
    test = cfg.model.test_cfg
    windows = slide_windows(*val_image, test.crop_size, test.stride)
    host = host_build_bytes(cfg)
    with ExitStack() as stack:
        stack.enter_context(DefaultScope.overwrite_default_scope("mmseg"))
        if fake:
            stack.enter_context(stand_ins())
        if gpus > 1:
            stack.enter_context(fake_ranks(gpus))
        model = build_segmentor(cfg, device="meta")
        if sharded:
            from torch.distributed.device_mesh import init_device_mesh

            shard_model(model, init_device_mesh("cpu", (gpus,)))
        if fake:
            stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        model.to_empty(device="cpu")
        if not fake:  # values a real iteration can compute with
            model.init_weights()
        buckets = ddp_bucket_bytes(model) if gpus > 1 and not sharded else 0
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        _initialise_optimizer_state(optim_wrapper, model)
        _last_micro_batch(optim_wrapper, model, plan["accumulation"])
        model.train()
        data = _batch(plan["per_gpu"], crop, cfg.model.decode_head.num_classes)

        tracker = (_fsdp_tracker(model, optim_wrapper.optimizer) if sharded else _tracker())
        if not sharded:
            tracker.track_external(model, optim_wrapper.optimizer)
        flops = flop_counter()
        grads = _GradBytes(optim_wrapper.optimizer)
        with tracker, flops, grads:
            model.train_step(data, optim_wrapper)
        train_kinds = _peak(tracker)
        step_flops = flops.get_total_flops()
        state = _state_bytes(model, optim_wrapper.optimizer) | dict(grads=grads.bytes)

        # validation: as the Runner validates (the sharded run gathers the whole model
        # first, GatheredValidationHook), the optimizer state held beside it
        model.eval()
        val_tracker = _tracker()
        val_tracker.track_external(model, optim_wrapper.optimizer)
        hook_runner = SimpleNamespace(model=model)
        val_flops = flop_counter()
        with val_tracker:
            if sharded:
                GatheredValidationHook().before_val(hook_runner)
            # mmengine's ValLoop runs each batch without a graph
            with val_flops, torch.no_grad():
                model.val_step(_val_image(val_image))
            if sharded:
                GatheredValidationHook().after_val(hook_runner)
        val_kinds = _peak(val_tracker)
    if buckets:
        for kinds in (train_kinds, val_kinds):
            kinds["gather_scatter_buffers"] = kinds.get("gather_scatter_buffers", 0) + buckets
        state["ddp_buckets"] = buckets
    train_total, val_total = sum(train_kinds.values()), sum(val_kinds.values())
    phase = "train" if train_total >= val_total else "validation"
    return Trace(
        run=run.id, shape_key=shape_key(cfg, gpus, val_image), gpus=gpus, sharded=sharded,
        per_gpu_batch=plan["per_gpu"], accumulation=plan["accumulation"], crop=list(crop),
        val_image=list(val_image), val_windows=windows,
        peak_bytes=max(train_total, val_total), peak_phase=phase,
        peak_by_kind=train_kinds if phase == "train" else val_kinds,
        train_peak_bytes=train_total, train_peak_by_kind=train_kinds,
        validation_peak_bytes=val_total, validation_peak_by_kind=val_kinds,
        state_bytes=state, flops_per_gpu_step=step_flops,
        flops_per_iteration=step_flops * gpus * plan["accumulation"],
        flops_per_val_image=val_flops.get_total_flops(), host_bytes=host,
        trace_seconds=round(time.monotonic() - started, 1))


def traced_peak(model, step, device) -> dict[str, int]:
    """Bytes by kind at the peak of ``step(model)`` traced on fake tensors: ``model``, built
    on the meta device, gets fake storage on ``device`` (the GPU check traces its trunk
    steps on the GPU's device type, so that attention picks the kernels it picks there)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device=device)
        tracker = _tracker()
        tracker.track_external(model)
        with tracker:
            step(model)
    return _peak(tracker)


# ---------------------------------------------------------------- where traces live

def rehearse_runs(preset: str, runs, gpus: int, directory: Path, *, force: bool = False,
                  cfg_options: dict | None = None, progress=None) -> dict[str, Trace]:
    """A trace per run, by run id: read where one of its shape is stored (``force``: traced
    again), else traced and stored. ``cfg_options`` change the run, so their traces are not
    stored."""
    from ..io import write_json

    out, by_key = {}, {}
    for run in runs:
        cfg = rehearsal_config(preset, run, gpus, cfg_options)
        key = shape_key(cfg, gpus, val_image_size(cfg, run.dataset))
        path = directory / f"{key}.json"
        trace = by_key.get(key) or (None if force or cfg_options else read_trace(path))
        if trace is None:
            trace = rehearse(preset, run, gpus, cfg_options)
            if not cfg_options:
                write_json(path, asdict(trace))
        by_key[key] = trace
        out[run.id] = trace
        if progress:
            progress(run.id, trace)
    return out


