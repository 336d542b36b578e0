"""Two optimizer steps of the demo segmentor, sharded (under torchrun) or in one process.

    sharded_step.py reference OUT   # one process, the whole batch
    torchrun --nproc-per-node 2 sharded_step.py sharded OUT   # each rank half the batch

Both write the full gradients of the first step and the full state after the steps to OUT,
for tests/test_sharding.py to compare. The sharded run also validates with a different number
of forward passes per rank, as slide inference does with images of different sizes, between
the two steps. By default the whole segmentor is float64: the two layouts sum the same terms
in another order, and only in float64 is that difference far below what the test can tell
from a real fault. Flags: `bf16` computes in bf16 from fp32 masters (full tuning's precision);
`fp32-gather` gathers the masters in fp32 rather than in the compute dtype.
"""

import sys
from types import SimpleNamespace

import torch

BATCH, CROP, CLASSES = 4, 56, 150


def build(flags=()):
    from internseg.config import load_config
    from internseg.engine.segmentor import build_segmentor

    cfg = load_config("demo/fewshot_1of16")
    # no drop path: the comparison is then exact up to reduction order
    cfg.model.backbone.update(pretrained=None, drop_path_rate=0.0, img_size=CROP)
    if "bf16" in flags:
        cfg.model.backbone.update(trunk_dtype="bfloat16", master_weights=True)
    else:
        cfg.model.backbone.update(trunk_dtype="float64", master_weights=False)
    torch.manual_seed(0)
    model = build_segmentor(cfg)
    model.init_weights()
    if "bf16" not in flags:
        model.double()
    return model, cfg


def batch(flags=()):
    from mmengine.structures import PixelData

    from mmseg.structures import SegDataSample

    gen = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, CROP, CROP, generator=gen,
                         dtype=torch.float32 if "bf16" in flags else torch.float64)
    labels = torch.randint(0, CLASSES, (BATCH, 1, CROP, CROP), generator=gen)
    samples = []
    for label in labels:
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(CROP, CROP), pad_shape=(CROP, CROP),
                                 ori_shape=(CROP, CROP)))
        samples.append(sample)
    return images, samples


def optimizer(model, cfg):
    from internseg.engine.layer_decay import groups_from_paramwise

    opt = cfg.optim_wrapper.optimizer
    groups = groups_from_paramwise(model, base_lr=opt.lr,
                                   weight_decay=opt.weight_decay,
                                   paramwise=cfg.optim_wrapper.paramwise_cfg)
    return torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas), groups


def step(model, optim, images, samples):
    """One AdamW update; returns the full gradients it applied."""
    losses = model(images, samples, mode="loss")
    sum(v for k, v in losses.items() if "loss" in k).backward()
    grads = {name: full(p.grad).clone() for name, p in model.named_parameters()
             if p.grad is not None}
    optim.step()
    optim.zero_grad()
    return grads


def full(tensor):
    """A sharded tensor (DTensor) gathered whole; a plain tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def train_mode(model):
    model.train()
    # batch statistics of half a batch differ from the whole batch's; running stats do not
    model.decode_head.norm.eval()


def reference(out, flags=()):
    model, cfg = build(flags)
    optim, groups = optimizer(model, cfg)
    train_mode(model)
    images, samples = batch(flags)
    grads = step(model, optim, images, samples)
    step(model, optim, images, samples)
    torch.save(dict(state=model.state_dict(), grads=grads, groups=summary(groups)), out)


def summary(groups):
    return [(g["param_names"], g["lr"], g["weight_decay"]) for g in groups]


def sharded(out, flags=()):
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    from internseg.engine.sharding import GatheredValidationHook, shard_model

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, cfg = build(flags)
    # the float64 check gathers as stored: the heads' fp32 gather policy is for fp32 heads
    shard_model(model, init_device_mesh("cpu", (world,)),
                gather_in_compute_dtype="bf16" in flags and "fp32-gather" not in flags)
    gathered = []
    model.backbone.blocks[0].mlp.fc1.register_forward_pre_hook(
        lambda module, args: gathered.append(str(module.weight.dtype)))
    local = model.backbone.blocks[0].mlp.fc1.weight
    assert local.to_local().numel() * world == local.numel(), "trunk block not sharded"
    optim, groups = optimizer(model, cfg)
    images, samples = batch(flags)
    part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    train_mode(model)
    grads = step(model, optim, images[part], samples[part])

    hook, runner = GatheredValidationHook(), SimpleNamespace(model=model)
    model.eval()
    hook.before_val(runner)
    with torch.no_grad():
        for _ in range(1 + 2 * rank):
            model(images[:1], samples[:1], mode="predict")
    hook.after_val(runner)

    train_mode(model)
    step(model, optim, images[part], samples[part])
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    if rank == 0:
        torch.save(dict(state=state, grads=grads, groups=summary(groups),
                        gathered=sorted(set(gathered))), out)
    dist.destroy_process_group()


if __name__ == "__main__":
    mode, out, *flags = sys.argv[1:]
    {"reference": reference, "sharded": sharded}[mode](out, flags)
