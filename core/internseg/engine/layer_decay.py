"""Layer-wise learning-rate decay for InternViT-6B, as an mmengine optimizer constructor.

With ``num_layers`` blocks there are ``num_layers + 2`` slots: slot 0 is the stem
(patch_embed, pos_embed, cls_token), block i is slot i + 1, and everything outside the trunk
(heads, resamplers) is the last slot. A parameter in slot s gets ``rate ** (last - s)`` times
the base lr, so the heads learn at the full rate and the stem at the smallest.
"""

from __future__ import annotations

from collections.abc import Iterable

from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

STEM = ("patch_embed", "pos_embed", "cls_token")
EMBEDDINGS = ("backbone.pos_embed", "backbone.cls_token")


def layer_id(name: str, num_layers: int) -> int:
    """Slot of a parameter of the segmentor, from its qualified name."""
    if name.startswith("backbone."):
        local = name.removeprefix("backbone.")
        if local.startswith(STEM):
            return 0
        if local.startswith("blocks."):
            return int(local.split(".")[1]) + 1
    return num_layers + 1


def skips_weight_decay(name: str, ndim: int, decay_embeddings: bool) -> bool:
    """1-D parameters and biases never decay. ``pos_embed``/``cls_token`` do not either,
    unless ``decay_embeddings`` restores the original code, whose name check never matched them.
    """
    if ndim == 1 or name.endswith(".bias"):
        return True
    return name in EMBEDDINGS and not decay_embeddings


def layer_decay_groups(named_params: Iterable[tuple[str, nn.Parameter]], *, base_lr: float,
                       weight_decay: float, num_layers: int, decay_rate: float,
                       decay_embeddings: bool = False) -> list[dict]:
    """Parameter groups, one per (slot, decays or not); frozen parameters are left out."""
    last = num_layers + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        slot = layer_id(name, num_layers)
        no_decay = skips_weight_decay(name, param.ndim, decay_embeddings)
        scale = decay_rate ** (last - slot)
        group = groups.setdefault((slot, no_decay), {
            "params": [],
            "param_names": [],
            "layer_id": slot,
            "lr_scale": scale,
            "lr": base_lr * scale,
            "weight_decay": 0.0 if no_decay else weight_decay,
        })
        group["params"].append(param)
        group["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


def groups_from_paramwise(model: nn.Module, *, base_lr: float, weight_decay: float,
                          paramwise: dict) -> list[dict]:
    """:func:`layer_decay_groups` of a segmentor, over its trunk's depth, configured by a
    ``paramwise_cfg`` (with its defaults)."""
    return layer_decay_groups(
        model.named_parameters(),
        base_lr=base_lr,
        weight_decay=weight_decay,
        num_layers=model.backbone.depth,
        decay_rate=paramwise.get("layer_decay_rate", 1.0),
        decay_embeddings=paramwise.get("decay_embeddings", False),
    )


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class InternViTLayerDecayConstructor(DefaultOptimWrapperConstructor):
    """The decay runs over the built trunk's blocks (48, 45 on the 448px trunks).
    ``paramwise_cfg``: ``layer_decay_rate`` (0.95 trained trunk, 1.0 frozen),
    ``decay_embeddings`` (False; True reproduces the original's weight decay on ``pos_embed``
    and ``cls_token``). Not mmseg's ``LearningRateDecayOptimizerConstructor``: it picks its
    layer ids by backbone class name (ConvNeXt, BEiT, MAE) from ``backbone.layers.N``."""

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        params.extend(groups_from_paramwise(module, base_lr=self.base_lr,
                                            weight_decay=self.base_wd or 0.0,
                                            paramwise=self.paramwise_cfg))
