"""The pretrained trunks an experiment can start from, one registered variant each.

A config's backbone names its trunk (``backbone=dict(type="InternViT6B",
trunk="intern_vit_6b_224px", ...)``) and the model builds that variant's architecture from
this registry, as timm builds a model from its registered name; the workflow fetches the
variant's file. A new trunk is one :func:`register_trunk` call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# a block's norms: RMSNorm (InternViT-6B) or LayerNorm (the smaller InternViTs)
NORMS = ("rms", "layer")


@dataclass(frozen=True)
class Trunk:
    """One pretrained InternViT, a whole variant: everything the model is built from and the
    file that holds its weights.

    file: name of the checkpoint on the Hub (or in a local weights folder).
    hub_repo, revision: where the file is on the Hub (a repo id and a 40-hex commit of it);
        ``None``: the workflow's ``hub`` block (config.yaml, ``repo_id``, ``revision``), which
        holds the files of every registered real trunk. The fetch rule reads them
        (records.fetch_args); a trunk with its own ``hub_repo`` needs its own ``revision``
        (the block's is another repo's commit): without it, a preset that downloads from the
        Hub is refused when the workflow is parsed (records.check_hub_revisions).
    size, sha256: the file's pins; ``None`` for a file the workflow writes itself (demo). A
        real trunk without them is refused wherever pins are verified (records.hub_pins).
    key_filter: which of :data:`internseg.models.pretrained.KEY_FILTERS` maps its file's
        keys onto the model (the InternViT layout: ``"internvit"``).
    pretrain_size: image size the position embedding was trained at (grid = size / patch).
    depth: blocks built and loaded. taps: the blocks multi-level heads read (UperNet).
    mlp_ratio, norm (``"rms"``: RMSNorm, ``"layer"``: LayerNorm, also the q/k norms),
        qkv_bias, qk_normalization, layerscale_init (None: no layer scale), norm_eps: the
        block, as InternViT-6B's (RMSNorm, no qkv bias, q/k norm, layer scale 0.1) or a
        smaller family member's (InternViT-300M: LayerNorm, qkv bias, no q/k norm).
    synthetic: a random stand-in written by ``internseg make-demo``, never downloaded.
    file_depth: blocks in the file when it holds more than ``depth`` (the extra ones are not
        loaded); None: exactly ``depth``.
    stands_for: a synthetic trunk's real counterpart: the demo joins its runs to that trunk's
        records (published numbers, released checkpoints), so that it exercises every path;
        its numbers are not comparable with them.
    """

    name: str
    file: str
    embed_dim: int
    depth: int
    num_heads: int
    pretrain_size: int
    taps: tuple[int, ...]
    patch_size: int = 14
    mlp_ratio: float = 4.0
    norm: str = "rms"
    qkv_bias: bool = False
    qk_normalization: bool = True
    layerscale_init: float | None = 0.1
    norm_eps: float = 1e-6
    size: int | None = None
    sha256: str | None = None
    hub_repo: str | None = None
    revision: str | None = None
    key_filter: str = "internvit"
    synthetic: bool = False
    file_depth: int | None = None
    stands_for: str | None = None

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"trunk {self.name}: norm {self.norm!r}, not one of {NORMS}")
        bad = [t for t in self.taps if not 0 <= t < self.depth]
        if bad:
            raise ValueError(f"trunk {self.name}: taps {bad} outside 0..{self.depth - 1}")
        if self.revision is not None and not re.fullmatch(r"[0-9a-f]{40}", self.revision):
            raise ValueError(f"trunk {self.name}: revision {self.revision!r} is not a 40-hex "
                             "commit (a branch or tag can move)")
        if self.file_depth is not None and self.file_depth < self.depth:
            raise ValueError(f"trunk {self.name}: file_depth {self.file_depth} < depth "
                             f"{self.depth}")

    @property
    def architecture(self) -> dict:
        """The backbone constructor arguments this variant fixes."""
        return dict(embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
                    patch_size=self.patch_size, pretrain_size=self.pretrain_size,
                    pretrained_depth=self.file_depth, **self.block)

    @property
    def block(self) -> dict:
        """What a block is made of (a config may state these; they must be the trunk's)."""
        return dict(mlp_ratio=self.mlp_ratio, norm=self.norm, qkv_bias=self.qkv_bias,
                    qk_normalization=self.qk_normalization,
                    layerscale_init=self.layerscale_init, norm_eps=self.norm_eps)

    @property
    def pinned(self) -> bool:
        return self.size is not None and self.sha256 is not None

    def architecture_with(self, given: dict) -> dict:
        """:attr:`architecture` for a backbone that also states some of its arguments: a
        stated value may only repeat the variant's, but ``patch_size`` (an experiment may run
        the trunk at another patch: the adapter's 16 on the 14-patch file, whose kernel is
        resized at load)."""
        out = self.architecture
        for key, value in given.items():
            if value is None or key not in out:
                continue
            if key != "patch_size" and value != out[key]:
                raise ValueError(f"trunk {self.name} has {key}={out[key]}, the config says "
                                 f"{value}: drop it (the trunk fixes it) or choose another trunk")
            out[key] = value
        return out

    def corresponding_block(self, block: int, source: Trunk) -> int:
        """The block of this trunk that plays ``source``'s ``block`` role, so that a config
        written for one trunk runs on another, as the fork's 448px ablation configs do: a tap
        goes to the same tap (UperNet's [11, 23, 35, 47] -> [11, 22, 33, 44]), the last block
        to the last (a few-shot head, 47 -> 44), any other block keeps its index (linear
        probing reads block 44 on every trunk)."""
        if block in source.taps:
            return self.taps[source.taps.index(block)]
        if block == source.depth - 1:
            return self.depth - 1
        if not 0 <= block < self.depth:
            raise ValueError(f"block {block} of {source.name} has no counterpart in "
                             f"{self.name}'s 0..{self.depth - 1}")
        return block


TRUNKS: dict[str, Trunk] = {}


def register_trunk(trunk: Trunk) -> Trunk:
    if trunk.name in TRUNKS:
        raise ValueError(f"trunk {trunk.name!r} is registered twice")
    if any(t.file == trunk.file for t in TRUNKS.values()):
        raise ValueError(f"trunk {trunk.name!r}: file {trunk.file} belongs to another trunk")
    TRUNKS[trunk.name] = trunk
    return trunk


def get_trunk(name: str) -> Trunk:
    from .errors import InputError

    if name not in TRUNKS:
        raise InputError(f"unknown trunk {name!r}; registered: {', '.join(sorted(TRUNKS))}")
    return TRUNKS[name]


# InternVL 1.0's InternViT-6B, the paper's segmentation rows.
register_trunk(Trunk(
    name="intern_vit_6b_224px", file="intern_vit_6b_224px.pth",
    embed_dim=3200, depth=48, num_heads=25, pretrain_size=224, taps=(11, 23, 35, 47),
    size=12034482201,
    sha256="b5ecc194f751cf352bf50528ffab3d5e923c3b5dbf504446525537136489defe"))

# The CPU demo's trunk: the same class and key names, 96 wide and 4 deep.
register_trunk(Trunk(
    name="intern_vit_tiny_demo", file="intern_vit_tiny_demo.pth",
    embed_dim=96, depth=4, num_heads=4, pretrain_size=224, taps=(0, 1, 2, 3), synthetic=True,
    stands_for="intern_vit_6b_224px"))

# The 448px trunks of the model table, as the fork's ablation configs run them: a 32x32
# position grid, 45 blocks, taps every 11. V1-2, V1-5 and V2-5 were released with 45 blocks;
# V1-0's file still has all 48, of which the ablation uses the first 45 (non-strict load there).
_448 = dict(embed_dim=3200, depth=45, num_heads=25, pretrain_size=448, taps=(11, 22, 33, 44))
register_trunk(Trunk(
    name="intern_vit_6b_448px_v1_0", file="intern_vit_6b_448px_v1_0.pth", file_depth=48,
    size=11810706346,
    sha256="8ada31eb2e7b7a41da4e4a86e6cb82a755e59b6418a8ded1d58b3b7281920fa8", **_448))
register_trunk(Trunk(
    name="intern_vit_6b_448px_v1_2", file="intern_vit_6b_448px_v1_2.pth", size=11073182985,
    sha256="50bb88e2eb704a503b531dd592900e3fe7d80d3d67fd34b42c598f7ec3fcd9ad", **_448))
register_trunk(Trunk(
    name="intern_vit_6b_448px_v1_5", file="intern_vit_6b_448px_v1_5.pth", size=11073182985,
    sha256="fe75055a344eceb6035b2c98ffc55cf54fbccdcb37244b06dd7e422150f70a69", **_448))
register_trunk(Trunk(
    name="intern_vit_6b_448px_v2_5", file="intern_vit_6b_448px_v2_5.pth", size=11073182985,
    sha256="9aedaa395d8373196436a0583f5be127168dbca5b2a51115d8c8234a36ac2410", **_448))

# A second demo trunk that differs from the first in grid (pretrained at 56 px: 4x4 patches)
# and depth (3 blocks), and whose file, like V1-0's, holds one block more than it uses: a demo
# with two trunks runs the per-trunk path on it.
register_trunk(Trunk(
    name="intern_vit_tiny_demo_b", file="intern_vit_tiny_demo_b.pth", embed_dim=96, depth=3,
    num_heads=4, pretrain_size=56, taps=(0, 1, 1, 2), file_depth=4, synthetic=True,
    stands_for="intern_vit_6b_448px_v1_0"))
