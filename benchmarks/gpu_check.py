"""What only a GPU can show and decide, measured in one call: JSON plus a markdown summary.

    python benchmarks/gpu_check.py --out benchmarks/gpu_check.json      # one GPU, < 8 minutes
    python benchmarks/gpu_check.py --tiny --out /tmp/check.json         # CPU smoke, every path

Parts, in this order, each under its own time budget (PART_BUDGETS) inside the total
(``--budget``); a part that does not fit in what is left, or runs past its budget, is listed
under ``skipped`` with the reason, and one that raises under ``failed``:

1. ``sdpa``: each SDPA backend (flash, memory-efficient, cuDNN, math) at the trunk's attention
   shapes (batch 2, 25 heads, 1297 tokens, head dim 128, bf16), forward + backward.
2. ``trunk``: the trunk's forward + backward at 504 px, batch 2, per regime (frozen, trained
   with fp32 masters, trained in bf16), with activation checkpointing as the runs use it:
   seconds, peak memory, TFLOP/s (trunk FLOPs as `internseg plan` counts them); then each
   trained regime again without checkpointing, where memory allows.
3. ``slide_inference``: the linear-probing segmentor on one 504 x 672 image: images per second.
4. ``adapter_amp``: the adapter row's training step through mmengine's AmpOptimWrapper (our
   GradNormAmpOptimWrapper, fp16, dynamic loss scale) as its config builds it.
5. ``compile``: ``torch.compile`` of one trunk block (trained with fp32 masters: forward +
   backward; frozen: forward) against eager; compile time apart.
6. ``sharded_fewshot``: one few-shot training step (AdamW with layer decay) through the sharded
   path (fully_shard) on one rank, with as many blocks as one GPU holds.

Every variant (an SDPA backend, checkpointing off, compiled, AMP) is first compared with the
eager reference of the same weights and inputs; only one within ``check_report.TOLERANCE``
is timed. ``decisions`` (check_report.decide) chooses from what passed: the SDPA backend,
compile per regime, checkpointing per trained regime. `internseg plan` reads ``trunk``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import socket
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from backbone_step import REGIMES, build, step
from check_report import TOLERANCE, Budget, decide, markdown, one_line
from internseg.demo import DEMO_TRUNK
from internseg.io import write_json, write_text
from mmengine.config import ConfigDict

from internseg.plan import trunk_flops_per_image
from internseg.trunks import TRUNKS

SDPA_PRIORITY = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
# Seconds per part on one H100 at full size: about twice our estimate of each (no GPU has run
# it yet; the JSON's part_seconds will tell). 440 s in all: under the 430 s default budget a
# part that no longer fits is skipped, so the run stays inside the scripts' 470 s guard.
PART_BUDGETS = dict(sdpa=20, trunk=160, slide_inference=30, adapter_amp=60, compile=110,
                    sharded_fewshot=60)
# Memory a training step needs beyond its per-parameter state (activations, gathered
# blocks, allocator slack), kept free when choosing how many blocks the sharded step holds.
STEP_HEADROOM_GIB = 12
# fp32 masters, fp32 grads and two fp32 AdamW moments
FEWSHOT_BYTES_PER_PARAM = 16


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fresh_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def release(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed(fn, device, iters: int, warmup: int = 1) -> tuple[float, float | None]:
    """Seconds per call of ``fn`` and the peak memory of the calls, warm-up included."""
    fresh_peak(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters, peak_gib(device)


def rel_error(got: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """The largest max |x - ref| / max |ref| over pairs of tensors; inf if any is not finite."""
    worst = 0.0
    for x, r in zip(got, ref, strict=True):
        x, r = x.detach().float(), r.detach().float()
        scale = r.abs().max().item()
        err = (x - r).abs().max().item() / (scale or 1.0)
        worst = max(worst, err if math.isfinite(err) else math.inf)
    return worst


def error_field(err: float) -> float | str:
    return float(f"{err:.3g}") if math.isfinite(err) else "not finite"


def sdpa_kernel_for(heads: int, tokens: int, head_dim: int, device) -> str:
    """The first backend, in the dispatcher's priority order, that accepts these shapes."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, heads, tokens, head_dim, device=device, dtype=torch.bfloat16)
    for name in SDPA_PRIORITY:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with sdpa_kernel(getattr(SDPBackend, name)):
                    F.scaled_dot_product_attention(q, q, q)
            return name.lower()
        except RuntimeError:
            continue
    return "none"


def sdpa_backends(shape: tuple[int, ...], device, iters: int, rows: list) -> None:
    """Each backend's forward + backward in bf16 against the math kernel in fp32."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v, grad = (torch.randn(shape, device=device, dtype=torch.bfloat16, generator=gen)
                     for _ in range(4))
    exact = [t.float().requires_grad_() for t in (q, k, v)]
    with sdpa_kernel(SDPBackend.MATH):
        out = F.scaled_dot_product_attention(*exact)
    out.backward(grad.float())
    reference = [out.detach()] + [t.grad for t in exact]
    del exact, out
    for name in SDPA_PRIORITY:
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]

        def fwd_bwd():
            for t in inputs:
                t.grad = None
            result = F.scaled_dot_product_attention(*inputs)
            result.backward(grad)
            return result

        row = dict(backend=name.lower())
        with sdpa_kernel(getattr(SDPBackend, name)):
            try:
                with warnings.catch_warnings(record=True) as why:
                    warnings.simplefilter("always")
                    result = fwd_bwd()
            except RuntimeError as err:
                reasons = [str(w.message).splitlines()[0] for w in why]
                rows.append(dict(row, status="unsupported",
                                 reason=(reasons or [one_line(err)])[0][:300]))
                continue
            err = rel_error([result] + [t.grad for t in inputs], reference)
            row["max_rel_error"] = error_field(err)
            if err > TOLERANCE:
                rows.append(dict(row, status="mismatch"))
                continue
            # milliseconds a call: more calls than a trunk step to be steady
            seconds, peak = timed(fwd_bwd, device, 4 * iters)
        rows.append(dict(row, status="ok", seconds_fwd_bwd=round(seconds, 5),
                         peak_memory_gib=peak))
        print(json.dumps(rows[-1]), flush=True)


def trunk_probe(model, images) -> list[torch.Tensor]:
    """One trained step's output and the gradients of the first layer and first block."""
    out = model(images)[0]
    out.float().pow(2).mean().backward()
    watched = [model.patch_embed.proj.weight.grad, model.blocks[0].attn.qkv.weight.grad]
    result = [out.detach().clone()] + [g.detach().clone() for g in watched]
    model.zero_grad(set_to_none=True)
    return result


def trunk_regimes(args, device, report: dict) -> None:
    backbone = TRUNKS[DEMO_TRUNK if args.tiny else "intern_vit_6b_224px"]
    flops = trunk_flops_per_image(ConfigDict(trunk=backbone.name, img_size=args.img_size,
                                             out_indices=[backbone.depth - 1]))
    for regime in REGIMES:
        model = build(regime, args.tiny, device, args.img_size)
        images = torch.randn(2, 3, args.img_size, args.img_size, device=device)
        seconds, peak = timed(lambda: step(model, images, regime), device, args.iters)
        traced = traced_step_gib(regime, args, device)
        passes = 1 if regime == "frozen" else 4  # forward; + backward + recompute
        report["trunk"].append(dict(
            regime=regime, batch=2, seconds_per_iter=round(seconds, 4),
            images_per_s=round(2 / seconds, 2), peak_memory_gib=peak,
            traced_peak_memory_gib=traced,
            traced_minus_measured_gib=None if peak is None else round(traced - peak, 2),
            activation_checkpointing=model.with_cp,
            params=sum(p.numel() for p in model.parameters()),
            weight_dtype=str(model.weight_dtype).removeprefix("torch."),
            # four significant figures, not decimals: the CPU smoke run is far below 1
            tflops_per_s=float(f"{flops * passes * 2 / seconds / 1e12:.4g}")))
        print(json.dumps(report["trunk"][-1]), flush=True)
        if regime != "frozen":
            report["checkpointing"].append(without_checkpointing(model, images, regime, device,
                                                                 args.iters))
            print(json.dumps(report["checkpointing"][-1]), flush=True)
        del model
        release(device)


def traced_step_gib(regime: str, args, device) -> float:
    """The same step's peak as `internseg rehearse` traces it on fake tensors (weights, then
    the step's activations and gradients): what the rehearsal's figures are checked by."""
    from internseg.engine.rehearse import traced_peak

    def run(model):
        step(model, torch.randn(2, 3, args.img_size, args.img_size, device=device), regime)

    model = build(regime, args.tiny, torch.device("meta"), args.img_size)
    # four significant figures: the tiny trunk's peak is far below a GiB
    return float(f"{sum(traced_peak(model, run, device).values()) / 2**30:.4g}")


def without_checkpointing(model, images, regime: str, device, iters: int) -> dict:
    row = dict(regime=regime, with_cp=False)
    reference = trunk_probe(model, images)
    model.with_cp = False
    try:
        err = rel_error(trunk_probe(model, images), reference)
        row["max_rel_error"] = error_field(err)
        if err > TOLERANCE:
            return dict(row, status="mismatch")
        seconds, peak = timed(lambda: step(model, images, regime), device, iters)
        return dict(row, status="ok", seconds_per_iter=round(seconds, 4), peak_memory_gib=peak)
    except torch.cuda.OutOfMemoryError as err:
        return dict(row, status="out of memory", reason=one_line(err)[:200],
                    peak_memory_gib=peak_gib(device))
    finally:
        model.with_cp = True
        model.zero_grad(set_to_none=True)


def segmentor(experiment: str, tiny: bool, device, depth: int | None = None):
    """A config's segmentor with random weights on ``device``; ``depth`` keeps that many
    trunk blocks (a linear head on the last)."""
    from internseg.config import backbone_architecture, load_config
    from internseg.engine.segmentor import build_segmentor

    cfg = load_config(f"{'demo' if tiny else 'paper'}/{experiment}")
    backbone = cfg.model.backbone
    backbone.pretrained = None
    arch = backbone_architecture(backbone)
    if depth is not None and depth != arch["depth"]:
        # no registered trunk: the same architecture with fewer blocks
        backbone.update(trunk=None, **arch | dict(depth=depth, pretrained_depth=None),
                        out_indices=[depth - 1])
    model = build_segmentor(cfg, device=device.type)
    with torch.device(device):
        model.init_weights()
    return cfg, model


def labelled_batch(cfg, batch: int, device):
    from mmengine.structures import PixelData

    from mmseg.structures import SegDataSample

    crop = cfg.model.data_preprocessor.size[0]
    images = torch.randn(batch, 3, crop, crop, device=device)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(gt_sem_seg=PixelData(
            data=torch.randint(0, 150, (1, crop, crop), device=device)))
        sample.set_metainfo(dict(img_shape=(crop, crop), pad_shape=(crop, crop),
                                 ori_shape=(crop, crop)))
        samples.append(sample)
    return images, samples


def fewshot_depth(device) -> tuple[int, str | None]:
    """The trunk blocks whose few-shot training state fits this GPU beside a step."""
    from internseg.config import load_config
    from internseg.engine.segmentor import build_segmentor

    cfg = load_config("paper/fewshot_1of16")
    cfg.model.backbone.pretrained = None
    model = build_segmentor(cfg, device="meta")
    per_block = sum(p.numel() for p in model.backbone.blocks[0].parameters())
    rest = sum(p.numel() for p in model.parameters()) - per_block * len(model.backbone.blocks)
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    room = (total_gib - STEP_HEADROOM_GIB) * 2**30 / FEWSHOT_BYTES_PER_PARAM - rest
    depth = min(len(model.backbone.blocks), int(room // per_block))
    if depth == len(model.backbone.blocks):
        return depth, None
    need = (per_block * len(model.backbone.blocks) + rest) * FEWSHOT_BYTES_PER_PARAM / 2**30
    return depth, (f"the state of all {len(model.backbone.blocks)} blocks ({need:.0f} GiB) "
                   f"does not fit one {total_gib:.0f} GiB GPU: {depth} blocks")


def sharded_fewshot_step(tiny: bool, device, iters: int) -> dict:
    """Few-shot training steps on one rank through fully_shard, as the trained-trunk runs
    shard over 8."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from internseg.engine.layer_decay import groups_from_paramwise
    from internseg.engine.sharding import shard_model

    depth, note = (None, None) if device.type != "cuda" else fewshot_depth(device)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        cfg, model = segmentor("fewshot_1of16", tiny, device, depth)
        shard_model(model, init_device_mesh(device.type, (1,)))
        opt = cfg.optim_wrapper.optimizer
        groups = groups_from_paramwise(model, base_lr=opt.lr,
                                       weight_decay=opt.weight_decay,
                                       paramwise=cfg.optim_wrapper.paramwise_cfg)
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas)
        images, samples = labelled_batch(cfg, 2, device)
        model.train()

        def train_step():
            losses = model(images, samples, mode="loss")
            sum(v for k, v in losses.items() if "loss" in k).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        train_step()  # the first step allocates the AdamW state
        seconds, peak = timed(train_step, device, iters, warmup=0)
        return dict(check="sharded_fewshot_step", ranks=1, batch=2,
                    trunk_blocks=len(model.backbone.blocks), note=note,
                    weight_dtype=str(model.backbone.weight_dtype).removeprefix("torch."),
                    seconds_per_step=round(seconds, 4), peak_memory_gib=peak)
    finally:
        dist.destroy_process_group()


def slide_inference(tiny: bool, device, images: int) -> dict:
    cfg, model = segmentor("linear_probing", tiny, device)
    model.eval()
    crop = cfg.model.data_preprocessor.size[0]
    height, width = crop, crop * 4 // 3
    batch = torch.randn(1, 3, height, width, device=device)
    meta = [dict(img_shape=(height, width), ori_shape=(height, width),
                 pad_shape=(height, width))]
    with torch.no_grad():
        seconds, peak = timed(lambda: model.inference(batch, meta), device, images)
    return dict(check="slide_inference", image=[height, width],
                crop=list(cfg.model.test_cfg.crop_size), stride=list(cfg.model.test_cfg.stride),
                images_per_s=round(1 / seconds, 3), peak_memory_gib=peak)


def adapter_amp_step(tiny: bool, device, iters: int) -> dict:
    """The adapter row's training step as the Runner runs it (``model.train_step`` with the
    config's optimizer wrapper). Checked first: the loss under the wrapper's autocast against
    the loss without it, same weights and batch, in eval mode (no dropout)."""
    from mmengine.optim import AmpOptimWrapper, build_optim_wrapper
    from mmengine.registry import DefaultScope

    cfg, model = segmentor("adapter_tuning", tiny, device)
    with DefaultScope.overwrite_default_scope("mmseg"):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    images, samples = labelled_batch(cfg, 2, device)
    data = dict(inputs=[(img * 40 + 120).clamp(0, 255).to(torch.uint8) for img in images],
                data_samples=samples)
    row = dict(check="adapter_amp_step", optim_wrapper=type(wrapper).__name__,
               amp=isinstance(wrapper, AmpOptimWrapper),
               dtype=str(getattr(wrapper, "cast_dtype", None)).removeprefix("torch."))
    model.eval()
    with torch.no_grad():
        batch = model.data_preprocessor(data, True)
        reference, _ = model.parse_losses(model(**batch, mode="loss"))
        with wrapper.optim_context(model):
            under_wrapper, _ = model.parse_losses(model(**batch, mode="loss"))
    err = rel_error([under_wrapper], [reference])
    row.update(loss_reference=round(reference.item(), 4),
               loss_under_wrapper=round(under_wrapper.item(), 4),
               max_rel_error=error_field(err))
    if err > TOLERANCE:
        return dict(row, status="mismatch")
    model.train()
    losses = []
    seconds, peak = timed(lambda: losses.append(model.train_step(data, wrapper)["loss"].item()),
                          device, iters)
    scaler = getattr(wrapper, "loss_scaler", None)
    return dict(row, status="ok" if all(map(math.isfinite, losses)) else "loss not finite",
                seconds_per_step=round(seconds, 4), peak_memory_gib=peak,
                loss_scale=scaler.get_scale() if scaler is not None else None)


def compile_block(args, device, rows: list, budget: Budget) -> None:
    """One trunk block, eager against ``torch.compile`` (inductor on a GPU; on a CPU the
    aot_eager backend, which runs the compile path without generating C++)."""
    from internseg.models.intern_vit import Block

    trunk = TRUNKS[DEMO_TRUNK if args.tiny else "intern_vit_6b_224px"]
    tokens = (args.img_size // trunk.patch_size) ** 2 + 1
    backend = "inductor" if device.type == "cuda" else "aot_eager"
    for regime, weight_dtype in (("trained_master", torch.float32), ("frozen", torch.bfloat16)):
        needs = 2 * rows[-1]["compile_seconds"] if rows and "compile_seconds" in rows[-1] else 0
        if budget.part_left() < needs:
            budget.skip(f"compile/{regime}", f"about {needs:.0f} s to compile, "
                        f"{budget.part_left():.0f} s left in the part")
            continue
        trained = regime != "frozen"
        with torch.device(device):
            torch.manual_seed(0)
            block = Block(trunk.embed_dim, trunk.num_heads, 4.0, False, True, 0.1, 0.0, 1e-6)
        block.to(weight_dtype).requires_grad_(trained)
        x = torch.randn(2, tokens, trunk.embed_dim, device=device, dtype=torch.bfloat16,
                        requires_grad=trained)

        def run(fn):
            if not trained:
                with torch.no_grad():
                    return [fn(x)]
            out = fn(x)
            out.float().pow(2).mean().backward()
            result = [out.detach(), x.grad.clone(), block.attn.qkv.weight.grad.clone()]
            x.grad = None
            block.zero_grad(set_to_none=True)
            return result

        reference = run(block)
        torch.compiler.reset()
        compiled = torch.compile(block, backend=backend)
        start = time.perf_counter()
        got = run(compiled)
        synchronize(device)
        row = dict(regime=regime, backend=backend,
                   compile_seconds=round(time.perf_counter() - start, 1))
        err = rel_error(got, reference)
        row["max_rel_error"] = error_field(err)
        if err > TOLERANCE:
            rows.append(dict(row, status="mismatch"))
            continue
        eager, eager_peak = timed(lambda: run(block), device, args.iters)
        fast, fast_peak = timed(lambda: run(compiled), device, args.iters)
        rows.append(dict(row, status="ok", eager_seconds=round(eager, 5),
                         compiled_seconds=round(fast, 5), speedup=round(eager / fast, 3),
                         eager_peak_memory_gib=eager_peak, compiled_peak_memory_gib=fast_peak))
        print(json.dumps(rows[-1]), flush=True)
        del block, compiled
        torch.compiler.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny trunk (CPU smoke)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--img-size", type=int, default=504, help="trunk step image size")
    parser.add_argument("--budget", type=float, default=430, help="seconds for all parts")
    parser.add_argument("--parts", nargs="+", choices=list(PART_BUDGETS),
                        default=list(PART_BUDGETS), help="run only these parts")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    parser.add_argument("--markdown", type=Path, help="summary (default: --out with .md)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.tiny:
        # the full-size parts on a CPU take minutes and measure nothing a plan can use
        parser.exit(2, f"gpu_check.py: no CUDA GPU on {socket.gethostname()} (torch "
                       f"{torch.__version__}, CUDA {torch.version.cuda}): run it on a GPU "
                       "machine, or pass --tiny for the CPU smoke test\n")
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from mmengine.logging import MMLogger

    from internseg.config import backbone_architecture, load_config
    from internseg.env import versions

    # mmengine logs every parameter's initialisation: thousands of lines at full size
    MMLogger.get_current_instance().setLevel(logging.WARNING)

    # its custom_imports register the models
    backbone = load_config(f"{'demo' if args.tiny else 'paper'}/full_tuning").model.backbone
    backbone = argparse.Namespace(**backbone_architecture(backbone))
    tokens = (args.img_size // backbone.patch_size) ** 2 + 1
    head_dim = backbone.embed_dim // backbone.num_heads
    cuda = device.type == "cuda"
    report = dict(
        device=torch.cuda.get_device_name() if cuda else "cpu",
        device_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if cuda else None,
        torch=torch.__version__, cuda=torch.version.cuda, versions=versions(), tiny=args.tiny,
        img_size=args.img_size, iters=args.iters, budget_s=args.budget,
        tolerance=dict(max_rel_error=TOLERANCE, meaning="max |x - ref| / max |ref| over the "
                       "output and the watched gradients, 4 units of bf16 rounding"),
        sdpa_kernel=sdpa_kernel_for(backbone.num_heads, tokens, head_dim, device),
        sdpa=[], trunk=[], checkpointing=[], compile=[], checks=[])
    budget = Budget(args.budget, report, cleanup=lambda: release(device))
    chosen = set(args.parts)
    for part in PART_BUDGETS:
        if part not in chosen:
            budget.skip(part, "not asked for (--parts)")
            continue
        seconds = PART_BUDGETS[part]
        if part == "sdpa":
            budget.run(part, seconds, sdpa_backends, (2, backbone.num_heads, tokens, head_dim),
                       device, args.iters, report["sdpa"])
        elif part == "trunk":
            budget.run(part, seconds, trunk_regimes, args, device, report)
        elif part == "compile":
            budget.run(part, seconds, compile_block, args, device, report["compile"], budget)
        else:
            run_check = dict(slide_inference=slide_inference, adapter_amp=adapter_amp_step,
                             sharded_fewshot=sharded_fewshot_step)[part]
            check = budget.run(part, seconds, run_check, args.tiny, device, args.iters)
            if check is not None:
                report["checks"].append(check)
                print(json.dumps(check), flush=True)
            if check is not None and part == "adapter_amp" and not check["amp"]:
                budget.skip("adapter_amp/fp16", "mmengine's AmpOptimWrapper needs a GPU: the "
                            f"step ran with the demo config's {check['optim_wrapper']}")
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    report["decisions"] = decide(report)
    write_json(args.out, report)
    write_text(args.markdown or args.out.with_suffix(".md"), markdown(report))
    print(json.dumps(report["decisions"]), flush=True)


if __name__ == "__main__":
    main()
