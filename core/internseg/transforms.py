"""Data transforms the original's configs use and mmseg 1.x lacks."""

from __future__ import annotations

from mmcv.transforms import Resize

from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class ShortSideResize(Resize):
    """Keep-ratio resize of the short side to ``short_side``, the long side uncapped: the
    semantics of the original's ``SETR_Resize`` with ``setr_multi_scale=True``
    (InternVL-MMDetSeg, mmsegmentation/mmseg/datasets/pipelines/transforms.py), which its
    1/1, linear-probing, head-tuning and full-tuning configs use at test time.

    The target is handed to mmcv's ``imrescale`` as the original hands it (short side and
    the proportional long side, as floats), so the rounding is the original's. ``Resize`` to
    (2016, 504) agrees up to an aspect ratio of 4:1 and caps the long side at 2016 above it.
    """

    def __init__(self, short_side: int, **kwargs):
        super().__init__(scale=short_side, keep_ratio=True, **kwargs)
        self.short_side = short_side

    def transform(self, results: dict) -> dict:
        h, w = results["img"].shape[:2]
        s = self.short_side
        results["scale"] = (s * h / w, s) if h > w else (s, s * w / h)
        self._resize_img(results)
        self._resize_bboxes(results)
        self._resize_seg(results)
        self._resize_keypoints(results)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(short_side={self.short_side})"
