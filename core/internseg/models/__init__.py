"""Model components; importing this module registers them in mmseg's registries."""

from .adapter import InternViTAdapter
from .heads import LinearHead
from .intern_vit import InternViT
from .resampler import FeatureResampler

__all__ = ["FeatureResampler", "InternViT", "InternViTAdapter", "LinearHead"]
