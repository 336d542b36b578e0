"""Multi-scale deformable attention (Deformable DETR, as ViT-Adapter uses it) in plain PyTorch.

The original builds a compiled CUDA op for the sampling step; the same arithmetic is a
bilinear ``F.grid_sample`` per level (zeros outside, ``align_corners=False``), which runs on
any device and dtype and needs no build. Shapes follow the original's conventions:

- value (N, S, M, D): S = sum of the levels' H * W, M heads of D channels;
- spatial_shapes: the levels' (H, W) as Python ints, in the order value is laid out;
- sampling_locations (N, Lq, M, L, P, 2): (x, y) in [0, 1] of each level;
- attention_weights (N, Lq, M, L, P): already normalised over L * P.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def multi_scale_deformable_attention(value: torch.Tensor, spatial_shapes: list[tuple[int, int]],
                                     sampling_locations: torch.Tensor,
                                     attention_weights: torch.Tensor) -> torch.Tensor:
    """(N, Lq, M * D): per head, the attention-weighted sum of bilinear samples of every
    level at its P points."""
    n, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    sizes = [h * w for h, w in spatial_shapes]
    if sum(sizes) != value.shape[1]:
        raise ValueError(f"value holds {value.shape[1]} positions, spatial_shapes "
                         f"{spatial_shapes} make {sum(sizes)}")
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for level, (part, (h, w)) in enumerate(zip(value.split(sizes, dim=1), spatial_shapes)):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        part = part.flatten(2).transpose(1, 2).reshape(n * heads, dim, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(part, grid.to(part.dtype), mode="bilinear",
                                     padding_mode="zeros", align_corners=False))
    # (N*M, D, Lq, L*P) weighted by (N*M, 1, Lq, L*P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, queries, levels * points)
    out = (stacked * weights.to(stacked.dtype)).sum(-1)
    return out.view(n, heads * dim, queries).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Deformable attention over ``n_levels`` maps with ``n_points`` samples per head and level.

    Args:
        d_model: query and output width.
        n_levels, n_heads, n_points: as in Deformable DETR.
        ratio: the value's width relative to ``d_model`` (ViT-Adapter's ``deform_ratio``; 0.25
            at 3200 gives 800 = 25 heads x 32).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8,
                 n_points: int = 4, ratio: float = 1.0):
        super().__init__()
        value_dim = int(d_model * ratio)
        if value_dim % n_heads:
            raise ValueError(f"value width {value_dim} (d_model {d_model} x ratio {ratio}) is "
                             f"not divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.value_dim = value_dim
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, value_dim)
        self.output_proj = nn.Linear(value_dim, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's start: no learned offsets, each head's points on a ray of its own
        direction at distances 1..P, uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        grid = directions[:, None, None, :].repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor,
                features: torch.Tensor, spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query (N, Lq, C); reference_points (N or 1, Lq, 1 or L, 2) as (x, y) in [0, 1];
        features (N, S, C) laid out as ``spatial_shapes``."""
        if len(spatial_shapes) != self.n_levels:
            raise ValueError(f"{len(spatial_shapes)} levels given, built for {self.n_levels}")
        n, queries, _ = query.shape
        value = self.value_proj(features).view(n, features.shape[1], self.n_heads, -1)
        offsets = self.sampling_offsets(query).view(
            n, queries, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(
            n, queries, self.n_heads, self.n_levels * self.n_points).softmax(-1).view(
            n, queries, self.n_heads, self.n_levels, self.n_points)
        # an offset of 1 is one pixel of its level: normalise by that level's (W, H)
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=offsets.dtype,
                                  device=offsets.device)
        locations = (reference_points[:, :, None, :, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])
        out = multi_scale_deformable_attention(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
