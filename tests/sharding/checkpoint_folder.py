"""A sharded run's checkpoints, written by some ranks and resumed by others (torchrun).

    torchrun --nproc-per-node 2 checkpoint_folder.py save DIR   # one step; DIR/iter_1.pth/
    torchrun --nproc-per-node 3 checkpoint_folder.py load DIR   # both into 3 ranks' shards

``save`` writes the folder (each rank its shards) and, of the same state, the single file a
sharded run wrote before the folders (gathered to rank 0: DIR/old/iter_1.pth). ``load``
resumes each as ShardedTrunkStrategy's resume does. Each writes the full (gathered) model
and optimizer state to DIR/<what>.pt for tests/test_sharding.py to compare.
"""

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh

from sharded_step import batch, build, optimizer, step, train_mode

from internseg.engine.sharding import (ShardedTrunkStrategy, save_sharded_checkpoint,
                                       shard_model)
from internseg.io import save_torch

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
EXTRA = dict(meta=dict(iter=1, seed=0), message_hub=dict(log_scalars={}))


def gathered(model, optim):
    return dict(model=get_model_state_dict(model, options=FULL),
                optimizer=get_optimizer_state_dict(model, optim, options=FULL))


def sharded_model():
    model, cfg = build(["bf16"])
    shard_model(model, init_device_mesh("cpu", (dist.get_world_size(),)))
    return model, optimizer(model, cfg)[0]


def save(folder: Path) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    model, optim = sharded_model()
    images, samples = batch(["bf16"])
    train_mode(model)
    step(model, optim, images[rank::world], samples[rank::world])
    # buffers are not sharded and the ranks' copies differ (BatchNorm statistics follow each
    # rank's batches): rank 0's are the checkpoint's, as in the gathered file
    model.decode_head.norm.running_mean.fill_(rank + 1)
    save_sharded_checkpoint(model, optim, EXTRA, folder / "iter_1.pth")
    state = gathered(model, optim)
    if rank == 0:
        # the layout before the folders: everything gathered, one file
        save_torch(folder / "old" / "iter_1.pth", dict(
            state_dict=state["model"], optimizer=state["optimizer"], **EXTRA))
        torch.save(state, folder / "saved.pt")


def load(folder: Path) -> None:
    for name, path in (("folder", folder / "iter_1.pth"), ("file", folder / "old" / "iter_1.pth")):
        model, optim = sharded_model()
        strategy = ShardedTrunkStrategy(work_dir=str(folder / "strategy"))
        strategy.model, strategy.optim_wrapper = model, SimpleNamespace(optimizer=optim)
        checkpoint = strategy.resume(str(path))  # what the Runner's resume calls
        state = gathered(model, optim)
        if dist.get_rank() == 0:
            checkpoint.pop("state_dict", None)  # the file's, already loaded into the model
            torch.save(dict(state, rest=checkpoint), folder / f"{name}_{dist.get_world_size()}.pt")
    # --load-from a folder: the weights, and an optimizer that starts afresh
    model, optim = sharded_model()
    strategy = ShardedTrunkStrategy(work_dir=str(folder / "strategy"))
    strategy.model, strategy.optim_wrapper = model, SimpleNamespace(optimizer=optim)
    strategy.load_checkpoint(str(folder / "iter_1.pth"))
    fresh = len(optim.state)
    state = gathered(model, optim)
    if dist.get_rank() == 0:
        torch.save(dict(model=state["model"], optimizer_entries=fresh), folder / "weights.pt")


if __name__ == "__main__":
    dist.init_process_group("gloo")
    {"save": save, "load": load}[sys.argv[1]](Path(sys.argv[2]))
    dist.destroy_process_group()
