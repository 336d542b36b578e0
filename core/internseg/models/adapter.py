"""InternViT-6B with ViT-Adapter (the seed's "adapter tuning" row, 58.1 mIoU).

A frozen trunk and a trained adapter around it: a convolutional spatial prior module gives
maps at 1/4..1/32; at each of four ranges of blocks an injector lets the trunk's tokens attend
into those maps, and an extractor lets the maps attend back into the tokens (deformable
attention, :mod:`.deform_attn`); two extra extractors follow the last range. The outputs are
the four maps (1/4, 1/8, 1/16, 1/32) for UperNet. Architecture and initialisation follow the
DeepSpeed fork's ``InternViTAdapter``, which produced the number; arguments keep its names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmseg.registry import MODELS

from ..errors import ModelArgumentError
from .deform_attn import MSDeformAttn
from .intern_vit import InternViT
from .precision import widened
from .resampler import ChannelsFirstLayerNorm, init_as_the_fork

# the parts of the module that are the pretrained trunk (frozen, loaded from its file)
TRUNK_PREFIXES = ("blocks.", "patch_embed.", "pos_embed", "cls_token")


def reference_points(shapes: list[tuple[int, int]], device) -> torch.Tensor:
    """(1, sum H*W, 1, 2): the centre (x, y) of every cell of every map, in [0, 1]."""
    points = []
    for h, w in shapes:
        y, x = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h,
                              (torch.arange(w, device=device) + 0.5) / w, indexing="ij")
        points.append(torch.stack([x.flatten(), y.flatten()], -1))
    return torch.cat(points)[None, :, None]


class ConvFFN(nn.Module):
    """Linear -> depthwise 3x3 conv on each of the three maps -> GELU -> linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        x = self.fc1(x)
        parts = []
        for part, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes):
            grid = part.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            parts.append(self.dwconv(grid).flatten(2).transpose(1, 2))
        return self.fc2(self.act(torch.cat(parts, dim=1)))


class Injector(nn.Module):
    """Tokens attend into the three prior maps; added with a learned scale (0 at start, so the
    pretrained trunk first sees its own tokens)."""

    def __init__(self, dim: int, num_heads: int, n_points: int, deform_ratio: float,
                 init_values: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim)
        self.feat_norm = nn.LayerNorm(dim)
        self.attn = MSDeformAttn(dim, n_levels=3, n_heads=num_heads, n_points=n_points,
                                 ratio=deform_ratio)
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, query, points, feat, shapes):
        return query + self.gamma * self.attn(self.query_norm(query), points,
                                              self.feat_norm(feat), shapes)


class Extractor(nn.Module):
    """The prior maps attend into the tokens, then a ConvFFN."""

    def __init__(self, dim: int, num_heads: int, n_points: int, deform_ratio: float,
                 with_cffn: bool, cffn_ratio: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim)
        self.feat_norm = nn.LayerNorm(dim)
        self.attn = MSDeformAttn(dim, n_levels=1, n_heads=num_heads, n_points=n_points,
                                 ratio=deform_ratio)
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
            self.ffn_norm = nn.LayerNorm(dim)

    def forward(self, query, points, feat, token_shape, map_shapes):
        query = query + self.attn(self.query_norm(query), points, self.feat_norm(feat),
                                  [token_shape])
        if self.with_cffn:
            query = query + self.ffn(self.ffn_norm(query), map_shapes)
        return query


class InteractionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, n_points: int, deform_ratio: float,
                 init_values: float, with_cffn: bool, cffn_ratio: float, extra_extractors: int):
        super().__init__()
        self.injector = Injector(dim, num_heads, n_points, deform_ratio, init_values)
        self.extractor = Extractor(dim, num_heads, n_points, deform_ratio, with_cffn, cffn_ratio)
        self.extra_extractors = nn.ModuleList(
            Extractor(dim, num_heads, n_points, deform_ratio, with_cffn, cffn_ratio)
            for _ in range(extra_extractors)) if extra_extractors else None


def _conv_ln_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), ChannelsFirstLayerNorm(cout),
            nn.ReLU(inplace=True)]


class SpatialPriorModule(nn.Module):
    """A small conv stem: maps at 1/4, 1/8, 1/16 and 1/32, each projected to the trunk width."""

    def __init__(self, inplanes: int, embed_dim: int):
        super().__init__()
        self.stem = nn.Sequential(*_conv_ln_relu(3, inplanes, 2), *_conv_ln_relu(inplanes, inplanes, 1),
                                  *_conv_ln_relu(inplanes, inplanes, 1),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv2 = nn.Sequential(*_conv_ln_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*_conv_ln_relu(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*_conv_ln_relu(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, embed_dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return [self.fc1(c1), self.fc2(c2), self.fc3(c3), self.fc4(c4)]


@MODELS.register_module()
class InternViTAdapter(InternViT):
    """InternViT-6B trunk (frozen) inside a ViT-Adapter.

    Args (beyond :class:`InternViT`'s, named as the fork's):
        conv_inplane: width of the spatial prior module's stem (64).
        n_points, deform_num_heads, deform_ratio: the deformable attention's points per head
            and level, heads, and value width relative to the trunk's.
        init_values: the injectors' initial output scale (0).
        interaction_indexes: the four [first, last] block ranges, e.g. [[0, 11], ..., [36, 47]].
        with_cffn, cffn_ratio: the extractors' ConvFFN and its hidden width ratio.
        add_vit_feature: add the trunk's last tokens, resized, to each output map.
        use_extra_extractor: two more extractors after the last range.
        use_final_norm: a channels-first LayerNorm on each output map.
        out_indices: the output levels, (0, 1, 2, 3) = 1/4 .. 1/32 (not block indices).

    The image side must be a multiple of 32 (the 1/32 map against the 1/16 token grid).
    Patch 16 on the 14-patch 224 px file: its kernel is resized bicubic at load, as the fork
    does, and so is its 16x16 position grid. The cls token is kept (frozen, unused) so that the
    file loads whole; the fork drops it.
    """

    def __init__(self, *, conv_inplane: int = 64, n_points: int = 4, deform_num_heads: int = 25,
                 deform_ratio: float = 0.25, init_values: float = 0.0,
                 interaction_indexes=((0, 11), (12, 23), (24, 35), (36, 47)),
                 with_cffn: bool = True, cffn_ratio: float = 0.25, add_vit_feature: bool = True,
                 use_extra_extractor: bool = True, use_final_norm: bool = True,
                 out_indices=(0, 1, 2, 3), freeze_trunk: bool = True, **kwargs):
        if tuple(out_indices) != (0, 1, 2, 3):
            raise ModelArgumentError("InternViTAdapter", "out_indices",
                                     f"the adapter returns its four maps: must be (0, 1, 2, 3), "
                                     f"got {out_indices}")
        self.adapter_built = False
        super().__init__(out_indices=(0,), freeze_trunk=freeze_trunk, **kwargs)
        self.out_indices = tuple(out_indices)
        ranges = [tuple(r) for r in interaction_indexes]
        flat = [b for r in ranges for b in (r[0], r[-1])]
        if len(ranges) != 4 or any(r[0] > r[-1] for r in ranges) or flat != sorted(flat) or (
                not 0 <= flat[0] <= flat[-1] < self.depth):
            raise ModelArgumentError("InternViTAdapter", "interaction_indexes",
                                     f"{interaction_indexes}: must be four ascending [first, "
                                     f"last] ranges within blocks 0..{self.depth - 1}")
        value_width = int(self.embed_dim * deform_ratio)
        if value_width % deform_num_heads:
            raise ModelArgumentError("InternViTAdapter", "deform_num_heads",
                                     f"{deform_num_heads} heads do not divide the deformable "
                                     f"attention's value width {value_width} (embed_dim "
                                     f"{self.embed_dim} x deform_ratio {deform_ratio})")
        self.interaction_indexes = ranges
        self.init_values = init_values
        self.num_run_blocks = ranges[-1][-1] + 1
        self.add_vit_feature = add_vit_feature
        self.use_final_norm = use_final_norm
        dim = self.embed_dim
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(conv_inplane, dim)
        self.interactions = nn.ModuleList(
            InteractionBlock(dim, deform_num_heads, n_points, deform_ratio, init_values,
                             with_cffn, cffn_ratio,
                             extra_extractors=2 if use_extra_extractor and i == 3 else 0)
            for i in range(4))
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        if use_final_norm:
            self.norms = nn.ModuleList(ChannelsFirstLayerNorm(dim) for _ in range(4))
        self.adapter_built = True
        self._store_in_weight_dtype()

    def is_trunk(self, name: str) -> bool:
        return name.startswith(TRUNK_PREFIXES)

    def _store_in_weight_dtype(self) -> None:
        if not self.adapter_built:  # the trunk's constructor calls it before the adapter exists
            return
        # the trunk frozen in its dtype; the adapter trains in fp32 (AMP casts it on GPU)
        for name, param in self.named_parameters():
            if self.is_trunk(name):
                param.requires_grad_(not self.freeze_trunk)
                param.data = param.data.to(self.weight_dtype)
            else:
                param.data = param.data.float()

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)
        if self.freeze_trunk:
            self.blocks.eval()
            self.patch_embed.eval()
        return self

    def _init_own(self) -> None:
        for part in (self.spm, self.interactions, self.up):
            init_as_the_fork(part)
        for module in self.interactions.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)
        for block in self.interactions:
            nn.init.constant_(block.injector.gamma, self.init_values)

    def _maybe_checkpoint(self, fn, *args):
        if self.with_cp and any(torch.is_tensor(a) and a.requires_grad for a in args):
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        n, _, height, width = image.shape
        if height % 32 or width % 32:
            raise ValueError(f"InternViTAdapter needs sides that are multiples of 32, got "
                             f"{height}x{width}")
        c1, c2, c3, c4 = self.spm(image.to(self.level_embed.dtype))
        map_shapes = [tuple(c.shape[2:]) for c in (c2, c3, c4)]
        c = torch.cat([(m.flatten(2).transpose(1, 2) + self.level_embed[i])
                       for i, m in enumerate((c2, c3, c4))], dim=1)

        x, hw = self.patch_embed(image.to(self.trunk_dtype))
        x = x + self._pos_embed_for(hw, x.dtype)[:, 1:]
        token_points = reference_points([hw], image.device)
        map_points = reference_points(map_shapes, image.device)
        for (first, last), block in zip(self.interaction_indexes, self.interactions):
            # defaults bind this iteration's modules: a checkpoint recomputes them in backward
            x = self._maybe_checkpoint(
                lambda q, f, b=block: b.injector(q, token_points, f, map_shapes), widened(x), c)
            x = x.to(self.trunk_dtype)
            for trunk_block in self.blocks[first:last + 1]:
                x = self._maybe_checkpoint(trunk_block, x)
            tokens = widened(x)
            extractors = [block.extractor, *(block.extra_extractors or [])]
            for extractor in extractors:
                c = self._maybe_checkpoint(
                    lambda q, f, e=extractor: e(q, map_points, f, hw, map_shapes), c, tokens)

        sizes = [h * w for h, w in map_shapes]
        c2, c3, c4 = (part.transpose(1, 2).reshape(n, -1, h, w)
                      for part, (h, w) in zip(c.split(sizes, dim=1), map_shapes))
        c1 = self.up(c2.to(self.up.weight.dtype)) + c1
        outs = [c1, c2, c3, c4]
        if self.add_vit_feature:
            grid = widened(x).transpose(1, 2).reshape(n, -1, *hw)
            outs = [o + F.interpolate(grid, size=o.shape[2:], mode="bilinear",
                                      align_corners=False) for o in outs]
        if self.use_final_norm:
            outs = [norm(o) for norm, o in zip(self.norms, outs)]
        return [o.float().contiguous() for o in outs]
