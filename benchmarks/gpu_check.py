"""What only a GPU can show, measured in one short run and written as JSON.

    python benchmarks/gpu_check.py --out benchmarks/gpu_check.json          # one GPU
    python benchmarks/gpu_check.py --tiny --out /tmp/check.json             # CPU smoke

1. The trunk's forward + backward at 504 px, batch 2, per regime (frozen, trained with fp32
   masters, trained in bf16): seconds, peak memory, achieved TFLOP/s (trunk FLOPs as
   `internseg plan` counts them), and the attention kernel SDPA picks for these shapes.
2. One few-shot training step (segmentor, AdamW with layer decay) through the sharded path
   (fully_shard) on one rank: seconds and peak memory, the optimizer state included.
3. Slide inference of the linear-probing segmentor on one 504 x 672 image: images per second.

`internseg plan` reads the file (`--measured`) in preference to every other source.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from backbone_step import REGIMES, measure
from mmengine.config import ConfigDict

from internseg.io import write_json
from internseg.plan import trunk_flops_per_image

SDPA_PRIORITY = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def sdpa_kernel_for(heads: int, tokens: int, head_dim: int, device) -> str:
    """The first backend, in the dispatcher's priority order, that accepts these shapes."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, heads, tokens, head_dim, device=device, dtype=torch.bfloat16)
    for name in SDPA_PRIORITY:
        try:
            with sdpa_kernel(getattr(SDPBackend, name)):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            return name.lower()
        except RuntimeError:
            continue
    return "none"


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fresh_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def segmentor(experiment: str, tiny: bool, device):
    from internseg.config import load_config
    from internseg.engine.segmentor import build_segmentor

    cfg = load_config(f"{'demo' if tiny else 'paper'}/{experiment}")
    cfg.model.backbone.pretrained = None
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


def sharded_fewshot_step(tiny: bool, device, iters: int) -> dict:
    """Few-shot training steps on one rank through fully_shard, as the trained-trunk runs
    shard over 8."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from internseg.engine.layer_decay import groups_from_paramwise
    from internseg.engine.sharding import shard_model

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        cfg, model = segmentor("fewshot_1of16", tiny, device)
        shard_model(model, init_device_mesh(device.type, (1,)))
        opt = cfg.optim_wrapper.optimizer
        groups = groups_from_paramwise(model, base_lr=opt.lr,
                                       weight_decay=opt.weight_decay,
                                       paramwise=cfg.optim_wrapper.paramwise_cfg)
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas)
        images, samples = labelled_batch(cfg, 2, device)
        model.train()

        def step():
            losses = model(images, samples, mode="loss")
            sum(v for k, v in losses.items() if "loss" in k).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()  # the first step allocates the AdamW state
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(iters):
            step()
        synchronize(device)
        seconds = (time.perf_counter() - start) / iters
        return dict(check="sharded_fewshot_step", ranks=1, batch=2,
                    weight_dtype=str(model.backbone.weight_dtype).removeprefix("torch."),
                    seconds_per_step=round(seconds, 4), peak_memory_gib=peak_gib(device))
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
        model.inference(batch, meta)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for _ in range(images):
            model.inference(batch, meta)
        synchronize(device)
    seconds = (time.perf_counter() - start) / images
    return dict(check="slide_inference", image=[height, width],
                crop=list(cfg.model.test_cfg.crop_size), stride=list(cfg.model.test_cfg.stride),
                images_per_s=round(1 / seconds, 3), peak_memory_gib=peak_gib(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny trunk (CPU smoke)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--img-size", type=int, default=504, help="trunk step image size")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from internseg.config import backbone_architecture, load_config

    # its custom_imports register the models
    backbone = load_config(f"{'demo' if args.tiny else 'paper'}/full_tuning").model.backbone
    backbone = argparse.Namespace(**backbone_architecture(backbone))
    tokens = (args.img_size // backbone.patch_size) ** 2 + 1
    head_dim = backbone.embed_dim // backbone.num_heads
    report = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                  torch=torch.__version__, tiny=args.tiny,
                  sdpa_kernel=sdpa_kernel_for(backbone.num_heads, tokens, head_dim, device),
                  trunk=[], checks=[])
    bench = argparse.Namespace(tiny=args.tiny, batch=2, warmup=1, iters=args.iters,
                               img_size=args.img_size)
    for regime in REGIMES:
        row = measure(regime, bench, device)
        flops = trunk_flops_per_image(ConfigDict(
            trunk="intern_vit_tiny_demo" if args.tiny else "intern_vit_6b_224px",
            img_size=args.img_size, out_indices=[backbone.depth - 1]))
        passes = 1 if regime == "frozen" else 4  # forward; + backward + recompute
        # batch 2; four significant figures, not decimals: the CPU smoke run is far below 1
        row["tflops_per_s"] = float(f"{flops * passes * 2 / row['seconds_per_iter'] / 1e12:.4g}")
        report["trunk"].append(row)
        print(json.dumps(row), flush=True)
    for run_check in (sharded_fewshot_step, slide_inference):
        fresh_peak(device)
        check = run_check(args.tiny, device, args.iters)
        report["checks"].append(check)
        print(json.dumps(check), flush=True)
    write_json(args.out, report)


if __name__ == "__main__":
    main()
