"""Model components; importing this module registers them in mmseg's registries."""

from .adapter import InternViTAdapter
from .heads import LinearHead
from .intern_vit import InternViT6B
from .resampler import FeatureResampler

__all__ = ["FeatureResampler", "InternViT6B", "InternViTAdapter", "LinearHead"]
