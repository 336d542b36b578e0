"""The pretrained trunks an experiment can start from, one registered variant each.

A config names its trunk (``trunk = "intern_vit_6b_224px"``); :func:`apply_trunk` writes that
variant's architecture into the backbone and the widths of whatever reads its features, and
the workflow fetches the variant's file. A new trunk is one :func:`register_trunk` call.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Trunk:
    """One pretrained InternViT: its architecture and the file that holds its weights.

    file: name of the checkpoint on the Hub (or in a local weights folder).
    size, sha256: the file's pins; ``None`` for a file the workflow writes itself (demo).
    pretrain_size: image size the position embedding was trained at (grid = size / patch).
    depth: blocks built and loaded. taps: the blocks multi-level heads read (UperNet).
    synthetic: a random stand-in written by ``internseg make-demo``, never downloaded.
    """

    name: str
    file: str
    embed_dim: int
    depth: int
    num_heads: int
    pretrain_size: int
    taps: tuple[int, ...]
    patch_size: int = 14
    size: int | None = None
    sha256: str | None = None
    synthetic: bool = False

    def __post_init__(self):
        bad = [t for t in self.taps if not 0 <= t < self.depth]
        if bad:
            raise ValueError(f"trunk {self.name}: taps {bad} outside 0..{self.depth - 1}")

    @property
    def architecture(self) -> dict:
        """The backbone constructor arguments this variant fixes."""
        return dict(embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
                    patch_size=self.patch_size, pretrain_size=self.pretrain_size)


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
    embed_dim=96, depth=4, num_heads=4, pretrain_size=224, taps=(0, 1, 2, 3), synthetic=True))
