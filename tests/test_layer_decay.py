import pytest
import torch
from torch import nn

from internseg.engine.layer_decay import (InternViTLayerDecayConstructor, layer_decay_groups,
                                          layer_id, skips_weight_decay)


@pytest.mark.parametrize("name,slot", [
    ("backbone.patch_embed.proj.weight", 0),
    ("backbone.pos_embed", 0),
    ("backbone.cls_token", 0),
    ("backbone.blocks.0.attn.qkv.weight", 1),
    ("backbone.blocks.47.mlp.fc2.bias", 48),
    ("neck.up1.0.weight", 49),
    ("decode_head.conv_seg.weight", 49),
    ("auxiliary_head.convs.0.conv.weight", 49),
])
def test_fifty_slots(name, slot):
    assert layer_id(name, 48) == slot


@pytest.mark.parametrize("name,ndim,decay_embeddings,skip", [
    ("backbone.blocks.3.norm1.weight", 1, False, True),
    ("backbone.blocks.3.ls1.gamma", 1, False, True),
    ("backbone.blocks.3.attn.proj.bias", 1, False, True),
    ("decode_head.norm.weight", 1, False, True),
    ("backbone.blocks.3.attn.qkv.weight", 2, False, False),
    ("decode_head.conv_seg.weight", 4, False, False),
    ("backbone.pos_embed", 3, False, True),
    ("backbone.cls_token", 3, False, True),
    ("backbone.pos_embed", 3, True, False),   # the original's behaviour, on request
    ("backbone.cls_token", 3, True, False),
])
def test_weight_decay_exemptions(name, ndim, decay_embeddings, skip):
    assert skips_weight_decay(name, ndim, decay_embeddings) is skip


class Toy(nn.Module):
    """Parameter names of a segmentor with a 2-block trunk."""

    def __init__(self, frozen=False):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.backbone.patch_embed = nn.Conv2d(3, 4, 2)
        self.backbone.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.backbone.depth = 2
        self.decode_head = nn.Conv2d(4, 3, 1)
        if frozen:
            self.backbone.requires_grad_(False)


def lr_of(groups, name):
    return next(g for g in groups if name in g["param_names"])


def test_groups_lrs_and_decay_for_every_parameter_class():
    groups = layer_decay_groups(Toy().named_parameters(), base_lr=1.0, weight_decay=0.05,
                                num_layers=2, decay_rate=0.5)
    expect = {  # slot: 0 stem, 1-2 blocks, 3 heads; scale 0.5 ** (3 - slot)
        "backbone.pos_embed": (0.125, 0.0),
        "backbone.patch_embed.weight": (0.125, 0.05),
        "backbone.patch_embed.bias": (0.125, 0.0),
        "backbone.blocks.0.weight": (0.25, 0.05),
        "backbone.blocks.1.bias": (0.5, 0.0),
        "decode_head.weight": (1.0, 0.05),
        "decode_head.bias": (1.0, 0.0),
    }
    for name, (lr, wd) in expect.items():
        g = lr_of(groups, name)
        assert (g["lr"], g["weight_decay"]) == (pytest.approx(lr), wd), name
    assert sum(len(g["params"]) for g in groups) == len(list(Toy().parameters()))


def test_frozen_parameters_are_left_out():
    groups = layer_decay_groups(Toy(frozen=True).named_parameters(), base_lr=1.0,
                                weight_decay=0.05, num_layers=2, decay_rate=1.0)
    names = [n for g in groups for n in g["param_names"]]
    assert names == ["decode_head.weight", "decode_head.bias"] or \
        sorted(names) == ["decode_head.bias", "decode_head.weight"]


def test_constructor_builds_adamw_with_groups():
    ctor = InternViTLayerDecayConstructor(
        dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=4e-5, weight_decay=0.05)),
        dict(layer_decay_rate=0.95))
    wrapper = ctor(Toy())
    opt = wrapper.optimizer
    assert isinstance(opt, torch.optim.AdamW)
    lrs = sorted({round(g["lr"], 12) for g in opt.param_groups})
    assert lrs == sorted({round(4e-5 * 0.95 ** k, 12) for k in (3, 2, 1, 0)})
