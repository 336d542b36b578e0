"""The UperNet path's resamplers: one ViT map at 1/14 turned into a 4-level pyramid."""

from __future__ import annotations

import math

import torch
from mmengine.model import BaseModule
from torch import nn

from mmseg.registry import MODELS

from .precision import CastConvTranspose2d, parse_dtype, widened


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map.

    Statistics and affine in fp32, the result in the input's dtype, as the original's
    channels-first LayerNorm (InternVL-MMDetSeg, mmseg/models/backbones/intern_vit_6b.py,
    class LayerNorm): in a bf16 resampler the mean and variance of 3200 channels would
    otherwise be accumulated in bf16.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        # an fp32 master is rounded to the compute dtype first: the value the original's
        # bf16 module holds
        weight, bias = self.weight.to(dtype).float(), self.bias.to(dtype).float()
        return (weight[:, None, None] * x + bias[:, None, None]).to(dtype)


def init_as_the_fork(module: nn.Module) -> None:
    """The fork's ``_init_weights`` for the modules it adds around the trunk (resamplers,
    adapter): Linear trunc-normal(0.02) with zero bias; Conv2d and ConvTranspose2d
    normal(0, sqrt(2 / fan_out)), fan_out = k * k * out_channels / groups, zero bias;
    LayerNorms weight 1, bias 0. Not an mmengine ``init_cfg``: its Kaiming fan_out is torch's
    (in_channels for a ConvTranspose2d, groups not divided out), not the fork's."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, ChannelsFirstLayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@MODELS.register_module()
class FeatureResampler(BaseModule):
    """x4 (ConvT2x2 -> LN -> GELU -> ConvT2x2), x2 (ConvT2x2), x1 (identity), x0.5 (maxpool).

    At 504 px the four taps (36x36) become 144, 72, 36 and 18 px maps, all ``embed_dim`` wide.
    They compute in ``compute_dtype`` and return fp32: in the original the resamplers are part
    of the bf16 backbone while the heads stay fp32. Weights stay fp32 (the master copy).
    """

    def __init__(self, embed_dim: int = 3200, compute_dtype: str = "bfloat16", init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.compute_dtype = parse_dtype(compute_dtype, "compute_dtype")
        # Names and Sequential positions as in the released checkpoints (`backbone.up1.3.weight`
        # there is `neck.up1.3.weight` here), so that they load by renaming a prefix only.
        self.up1 = nn.Sequential(
            CastConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
            ChannelsFirstLayerNorm(embed_dim),
            nn.GELU(),
            CastConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
        )
        self.up2 = nn.Sequential(CastConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2))
        self.up3 = nn.Identity()
        self.up4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def init_weights(self) -> None:
        """The original's init (``heads.resampler_init``): ConvTranspose2d weights from
        normal(0, sqrt(2 / fan_out)), fan_out = k * k * out_channels / groups (std 0.0125 at
        3200 channels), zero bias; LayerNorm weight 1, bias 0. PyTorch's default (kaiming
        uniform) is 2.45x smaller."""
        super().init_weights()
        init_as_the_fork(self)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(inputs) != 4:
            raise ValueError(f"FeatureResampler needs 4 tapped maps, got {len(inputs)}")
        ops = (self.up1, self.up2, self.up3, self.up4)
        return [widened(op(x.to(self.compute_dtype))) for op, x in zip(ops, inputs)]
