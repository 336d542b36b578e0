"""The linear head of the few-shot and linear-probing experiments: norm, then a 1x1 conv."""

from __future__ import annotations

import torch
from mmcv.cnn import build_norm_layer

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS


@MODELS.register_module()
class LinearHead(BaseDecodeHead):
    """BatchNorm (SyncBN when distributed) over the tapped map, then ``conv_seg`` to classes.

    ``channels`` equals ``in_channels``: there is no hidden layer, which is what makes the
    probe linear.
    """

    def __init__(self, in_channels: int, norm_cfg: dict | None = None, **kwargs):
        norm_cfg = norm_cfg or dict(type="SyncBN", requires_grad=True)
        super().__init__(in_channels=in_channels, channels=in_channels, norm_cfg=norm_cfg,
                         dropout_ratio=0.0, **kwargs)
        # `norm`, as the original's FCN-style linear head names it: the released files hold
        # decode_head.norm.*
        self.norm = build_norm_layer(norm_cfg, in_channels)[1]

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        return self.cls_seg(self.norm(x))
