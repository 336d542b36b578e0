"""Time and peak memory of one InternViT-6B training step at 504 px, per regime.

    python benchmarks/backbone_step.py                  # full size, needs a GPU
    python benchmarks/backbone_step.py --tiny --iters 3 # smoke run on CPU

Regimes, all computing in bf16 as the original does:
- `frozen`: bf16 weights, no autograd graph (linear probing, head tuning);
- `trained_master`: fp32 master weights rounded to bf16 per use, fp32 gradients, activation
  checkpointing per block (full tuning, the original's DeepSpeed bf16);
- `trained_bf16`: bf16 weights and gradients, activation checkpointing (few-shot, the
  original's plain DDP on a bf16 trunk).
The optimizer state is not included (see the README's memory arithmetic). Random weights; the
numbers are about speed and memory, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from internseg.demo import DEMO_TRUNK
from internseg.models import InternViT
from internseg.trunks import TRUNKS

REGIMES = ("frozen", "trained_master", "trained_bf16")


def build(regime: str, tiny: bool, device: torch.device, img_size: int = 504) -> InternViT:
    trunk = TRUNKS[DEMO_TRUNK if tiny else "intern_vit_6b_224px"]
    size, depth = trunk.architecture, trunk.depth
    trained = regime != "frozen"
    # built and initialised on the device: 5.9B random values take minutes on a CPU
    with torch.device(device):
        model = InternViT(img_size=img_size, out_indices=(depth - 1,), trunk_dtype="bfloat16",
                            freeze_trunk=not trained, with_cp=trained,
                            master_weights=regime == "trained_master", **size)
        model.init_weights()
    return model


def step(model: InternViT, images: torch.Tensor, regime: str) -> None:
    out = model(images)[0]
    if regime != "frozen":
        out.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)


def measure(regime: str, args, device: torch.device) -> dict:
    model = build(regime, args.tiny, device, args.img_size)
    images = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step(model, images, regime)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iters):
        step(model, images, regime)
    sync()
    seconds = (time.perf_counter() - start) / args.iters
    result = dict(regime=regime, batch=args.batch, seconds_per_iter=round(seconds, 4),
                  images_per_s=round(args.batch / seconds, 2),
                  params=sum(p.numel() for p in model.parameters()),
                  weight_dtype=str(model.weight_dtype).removeprefix("torch."))
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="96-wide, 4 blocks (CPU smoke)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=504)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                torch=torch.__version__, tiny=args.tiny)
    print(json.dumps(info))
    for regime in args.regimes:
        print(json.dumps(measure(regime, args, device)), flush=True)


if __name__ == "__main__":
    main()
