"""A sharded run's periodic checkpoint written two ways, on CPU with gloo ranks: time and rank
0's peak host memory for the same state.

    python benchmarks/checkpoint_write.py --work /tmp/ckpt                   # 1 GiB of weights
    python benchmarks/checkpoint_write.py --work /tmp/ckpt --param-mib 8     # smoke run
    python benchmarks/checkpoint_write.py --work /tmp/ckpt --ranks 4 --out r.json

The state is that of a trained trunk under ``fully_shard``: a stack of fp32 linear layers,
one FSDP unit each, after one AdamW step (weights + two moments: 12 bytes per parameter).

- ``gathered`` (before): what ShardedTrunkStrategy wrote until torch.distributed.checkpoint
  replaced it: the whole model and optimizer state gathered to rank 0 (cpu_offload), which
  writes one file (internseg.io.save_torch) while the other ranks wait; then fsync'ed.
- ``sharded`` (after): :func:`internseg.engine.sharding.save_sharded_checkpoint`, every rank
  writing its own shards into one folder (fsync'ed by torch's writer), rank 0 the rest.

Per variant: seconds from a barrier until every rank has returned (the slowest rank), bytes
on disk, and each rank's peak resident memory above what it held before the write (the
kernel's VmHWM, reset through /proc/self/clear_refs). The written checkpoints are deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

GIB = 2**30


def kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_gathered(model, optimizer, path: Path) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                         get_model_state_dict,
                                                         get_optimizer_state_dict)

    from internseg.io import save_torch

    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    checkpoint = dict(state_dict=get_model_state_dict(model, options=full),
                      optimizer=get_optimizer_state_dict(model, optimizer, options=full),
                      meta=dict(iter=1))
    if dist.get_rank() == 0:
        save_torch(path, checkpoint)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    del checkpoint
    torch.distributed.barrier()


def write_sharded(model, optimizer, path: Path) -> None:
    from internseg.engine.sharding import save_sharded_checkpoint

    save_sharded_checkpoint(model, optimizer, dict(meta=dict(iter=1)), path)


def rank_main(rank: int, args, port: int, results) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=args.ranks)
    width = 1024
    layers = max(1, args.param_mib * 2**20 // (width * width * 4))
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(width, width, bias=False) for _ in range(layers)))
    mesh = init_device_mesh("cpu", (args.ranks,))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(4, width)).sum().backward()
    optimizer.step()
    params = sum(p.numel() for p in model.parameters())
    # imported before anything is measured: a module's import is no checkpoint's cost
    import torch.distributed.checkpoint  # noqa: F401

    import internseg.engine.sharding  # noqa: F401
    rows = []
    for variant, write, name in (("gathered", write_gathered, "iter_1.pth"),
                                 ("sharded", write_sharded, "iter_1.dcp")):
        path = args.work / variant / name
        if rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        Path("/proc/self/clear_refs").write_text("5")
        before = kib("VmRSS")
        started = time.perf_counter()
        write(model, optimizer, path)
        seconds = torch.tensor([time.perf_counter() - started])
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        peaks = [None] * args.ranks
        dist.all_gather_object(peaks, round((kib("VmHWM") - before) / 2**20, 3))
        if rank == 0:
            rows.append(dict(variant=variant, seconds=round(seconds.item(), 2),
                             disk_gib=round(size_of(path) / GIB, 3),
                             peak_rss_above_start_gib_per_rank=peaks))
            shutil.rmtree(path.parent)
        dist.barrier()
    if rank == 0:
        results.put(dict(ranks=args.ranks, params=params, state_gib=round(params * 12 / GIB, 3),
                         rows=rows))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    import torch
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument("--param-mib", type=int, default=1024,
                        help="fp32 weights in MiB (the state is 3x: weights and AdamW moments)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--out", type=Path, help="JSON to write")
    args = parser.parse_args()
    if args.param_mib < 4 or args.ranks < 2:
        parser.error("--param-mib 4 or more, --ranks 2 or more")
    args.work.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.spawn(rank_main, args=(args, free_port(), results), nprocs=args.ranks, join=True)
    report = dict(machine=f"{os.cpu_count()} CPUs", torch=torch.__version__, **results.get())
    print(json.dumps(report, indent=1))
    if args.out:
        from internseg.io import write_json

        write_json(args.out, report)


if __name__ == "__main__":
    sys.exit(main())
