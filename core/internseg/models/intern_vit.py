"""InternViT, the vision trunk of InternVL (6B and the smaller family members), as an mmseg
backbone; a registered trunk (:mod:`internseg.trunks`) is a whole variant of it.

Parameter names and shapes follow the released ``intern_vit_6b_224px.pth`` so that the
checkpoint loads without renaming (see :mod:`internseg.models.pretrained`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmseg.registry import MODELS

from .precision import CastConv2d, CastLinear, parse_dtype, widened
from ..errors import ModelArgumentError
from ..trunks import get_trunk
from .pretrained import load_pretrained_backbone, resize_pos_embed

# The architecture without a named trunk: the paper's 224px InternViT-6B.
SIX_B = get_trunk("intern_vit_6b_224px").architecture


def building_on_meta() -> bool:
    """Whether modules are being built on the meta device (shapes only: `internseg inspect`
    and `plan`), where no file is read."""
    return torch.empty(0).device.type == "meta"


class RMSNorm(nn.Module):
    """Weight-only RMSNorm; statistics in fp32 so that bf16 activations stay stable."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = widened(x)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight.to(dtype) * x32.to(dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm (the smaller InternViTs'), statistics in fp32 as :class:`RMSNorm`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(widened(x), self.normalized_shape, widened(self.weight),
                            widened(self.bias), self.eps).to(x.dtype)


NORM_LAYERS = {"rms": RMSNorm, "layer": LayerNorm}


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype)


class DropPath(nn.Module):
    """Stochastic depth per sample. Not mmcv's ``DropPath``: it thresholds ``keep + rand`` in
    the input's dtype, which in our bf16 trunk rounds the keep rate (bernoulli_ draws at the
    exact rate)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Attention(nn.Module):
    """Multi-head self-attention with q/k norms (the block's kind) over all heads jointly."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_normalization: bool,
                 norm_eps: float, norm: str = "rms"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = CastLinear(dim, dim * 3, bias=qkv_bias)
        self.qk_normalization = qk_normalization
        if qk_normalization:
            self.q_norm = NORM_LAYERS[norm](dim, eps=norm_eps)
            self.k_norm = NORM_LAYERS[norm](dim, eps=norm_eps)
        self.proj = CastLinear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.qk_normalization:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
                   for t in (q, k, v))
        # SDPA picks flash / memory-efficient kernels on GPU and the math kernel on CPU.
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = CastLinear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = CastLinear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 qk_normalization: bool, layerscale_init: float | None, drop_path: float,
                 norm_eps: float, norm: str = "rms"):
        super().__init__()
        self.norm1 = NORM_LAYERS[norm](dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_normalization, norm_eps, norm)
        # no layer scale (None): no gamma in the file either
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = NORM_LAYERS[norm](dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = CastConv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


@MODELS.register_module()
class InternViT(BaseModule):
    """An InternViT trunk.

    Args:
        trunk: a registered trunk (:mod:`internseg.trunks`), e.g. ``"intern_vit_6b_224px"``:
            its width, depth, heads, patch, pretrain grid and file depth, as timm builds a
            variant from its name. None: the arguments below, defaults the 224px trunk's.
        img_size: training crop; sets the position-embedding grid (504 -> 36x36).
        patch_size, embed_dim, depth, num_heads, mlp_ratio, norm, qkv_bias, qk_normalization,
        layerscale_init, norm_eps: architecture, defaults are the 6B model's; with ``trunk``,
            a stated one must be the trunk's (``patch_size`` may differ: the kernel is
            resized at load).
        drop_path_rate: stochastic depth, ``linspace(0, rate, depth)`` over blocks.
        out_indices: blocks whose outputs are returned, as fp32 (B, C, H, W) maps.
        with_cp: activation checkpointing per block (trained trunk at 504 px needs it).
        freeze_trunk: no gradients, eval mode, and no autograd graph in forward.
        trunk_dtype: the dtype the whole trunk computes in, residual stream included, as the
            original's ``self.to(torch.bfloat16)`` trunk does; the maps at ``out_indices`` are
            returned as fp32. A frozen trunk stores its weights in it.
        master_weights: for a trained trunk, store fp32 weights and round them to
            ``trunk_dtype`` at each use, so the optimizer updates fp32 values (the original's
            DeepSpeed bf16 runs: full tuning). ``False`` stores and updates the weights in
            ``trunk_dtype``, optimizer state included (the original's few-shot runs, plain DDP
            on a bf16 trunk).
        pretrained: path of an ``intern_vit_6b_224px.pth``-format checkpoint. The trunk is
            then built on the meta device and given the file's tensors at construction
            (memory-mapped, cast once where the stored dtype differs): its random
            initialisation, overwritten by the file anyway, took 2 minutes at full size, and
            a bf16 trunk stays in the file's page cache, shared by a node's ranks. Not read
            when the model is built on the meta device itself (inspect, plan).
        pretrain_size: image size the checkpoint's position embedding was trained at.
        pretrained_depth: blocks in the pretrained file when it has more than ``depth``
            (those past ``depth`` are not loaded); None: the file has ``depth``.
    """

    def __init__(self,
                 trunk: str | None = None,
                 img_size: int = 504,
                 patch_size: int | None = None,
                 in_channels: int = 3,
                 embed_dim: int | None = None,
                 depth: int | None = None,
                 num_heads: int | None = None,
                 mlp_ratio: float | None = None,
                 norm: str | None = None,
                 qkv_bias: bool | None = None,
                 qk_normalization: bool | None = None,
                 layerscale_init: float | None = None,
                 norm_eps: float | None = None,
                 drop_path_rate: float = 0.0,
                 out_indices: tuple[int, ...] | list[int] = (47,),
                 with_cp: bool = False,
                 freeze_trunk: bool = False,
                 trunk_dtype: str = "bfloat16",
                 master_weights: bool = True,
                 pretrained: str | None = None,
                 pretrain_size: int | None = None,
                 pretrained_depth: int | None = None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        given = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                     patch_size=patch_size, pretrain_size=pretrain_size,
                     pretrained_depth=pretrained_depth, mlp_ratio=mlp_ratio, norm=norm,
                     qkv_bias=qkv_bias, qk_normalization=qk_normalization,
                     layerscale_init=layerscale_init, norm_eps=norm_eps)
        arch = get_trunk(trunk).architecture_with(given) if trunk else {
            **SIX_B, **{k: v for k, v in given.items() if v is not None}}
        embed_dim, depth, num_heads = arch["embed_dim"], arch["depth"], arch["num_heads"]
        patch_size, pretrain_size = arch["patch_size"], arch["pretrain_size"]
        pretrained_depth = arch["pretrained_depth"]
        block = {key: arch[key] for key in ("mlp_ratio", "qkv_bias", "qk_normalization",
                                            "layerscale_init", "norm_eps", "norm")}
        self.trunk = trunk
        bad = [i for i in out_indices if not 0 <= i < depth]
        if bad:
            raise ModelArgumentError(type(self).__name__, "out_indices",
                                     f"{bad} outside blocks 0..{depth - 1}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.with_cp = with_cp
        self.freeze_trunk = freeze_trunk
        self.trunk_dtype = parse_dtype(trunk_dtype, "trunk_dtype")
        self.weight_dtype = (torch.float32 if master_weights and not freeze_trunk
                             else self.trunk_dtype)
        self.pretrained = pretrained
        self.pretrain_size = pretrain_size
        self.pretrained_depth = pretrained_depth
        self.grid = img_size // patch_size

        # the file fills every trunk tensor: they get no storage (nor random values) before it
        from_file = bool(pretrained) and not building_on_meta()
        with torch.device("meta") if from_file else nullcontext():
            self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, embed_dim))
            # linspace(0, rate, depth) in plain Python: it must also work under a meta device
            rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
            # Each block is cast to its stored dtype as soon as it is built: a bf16 trunk
            # built whole in fp32 first held 23.6 GB of host memory for 11.8 GB of weights
            # (without a file to fill it). The values are those of the fp32 init.
            self.blocks = nn.ModuleList(
                Block(embed_dim, num_heads, drop_path=rates[i], **block).to(self.weight_dtype)
                for i in range(depth))
        # Blocks after the last tap never influence the output: dropping them saves memory
        # and time; they stay in the module so that checkpoints load unchanged.
        self.num_run_blocks = max(self.out_indices) + 1
        # loaded here, not in init_weights: the Runner moves the model to its device and
        # builds the optimizer over its parameters before it initialises the weights
        self.loaded_from_file = from_file
        if from_file:
            # the stem in its stored dtype too (free on meta), so that the file's tensors
            # are cast at most once, and not at all where the file's dtype is already it
            self.to(self.weight_dtype)
            load_pretrained_backbone(self, pretrained, pretrain_size=pretrain_size)
        self._store_in_weight_dtype()

    def is_trunk(self, name: str) -> bool:
        """Whether a state key of this module is the pretrained trunk's: here every key; a
        backbone with parts of its own around the trunk (the adapter) says which."""
        return True

    def _store_in_weight_dtype(self) -> None:
        if self.freeze_trunk:
            for p in self.parameters():
                p.requires_grad_(False)
        self.to(self.weight_dtype)

    def train(self, mode: bool = True):
        super().train(mode and not self.freeze_trunk)
        return self

    def init_weights(self) -> None:
        """Random values for what the pretrained file does not hold: with a file given at
        construction (the trunk holds its tensors since), only the parts a subclass adds
        around the trunk; else the whole trunk, then the file if one was named since."""
        if self.loaded_from_file:
            self._init_own()
        else:
            self._init_random()
            if self.pretrained:
                load_pretrained_backbone(self, self.pretrained, pretrain_size=self.pretrain_size)
        self._store_in_weight_dtype()

    def _init_own(self) -> None:
        """The random initialisation of the parts around the trunk (none here)."""

    def _init_random(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                nn.init.uniform_(m.weight, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self._init_own()

    def _pos_embed_for(self, hw: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        pos_embed = self.pos_embed.to(dtype)
        if hw == (self.grid, self.grid):
            return pos_embed
        return resize_pos_embed(pos_embed, (self.grid, self.grid), hw)

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, hw = self.patch_embed(x)
        # Cast before expanding: the batch sum of the gradient then happens in the compute
        # dtype, as it does for a bf16 cls token.
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self._pos_embed_for(hw, x.dtype)
        maps = {}
        for i, block in enumerate(self.blocks[:self.num_run_blocks]):
            if self.with_cp and x.requires_grad:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in self.out_indices:
                # The cls token takes part in attention but is not a spatial feature.
                tokens = widened(x[:, 1:])
                maps[i] = tokens.transpose(1, 2).reshape(x.shape[0], -1, *hw)
        # one map per entry, in order: a shallow trunk may tap one block for two levels
        return [maps[i] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.to(self.trunk_dtype)
        if self.freeze_trunk:
            with torch.no_grad():
                return self._run(x)
        return self._run(x)


# The name the configs' backbones were written with (it is part of their runs' identity).
MODELS.register_module(name="InternViT6B", module=InternViT)
