"""Evaluation geometry: test-time resize and slide-window placement, as in the paper."""

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

from internseg import register_all
from internseg.config import load_config
from internseg.engine.train import build_segmentor

register_all()


def resize_for_test(shape):
    from mmseg.registry import TRANSFORMS

    cfg = load_config("paper/full_tuning")
    steps = [s for s in cfg.test_dataloader.dataset.pipeline
             if s.type in ("Resize", "ResizeToMultiple")]
    with DefaultScope.overwrite_default_scope("mmseg"):
        transforms = [TRANSFORMS.build(dict(s)) for s in steps]
    results = dict(img=np.zeros((*shape, 3), np.uint8), img_shape=shape, ori_shape=shape)
    for t in transforms:
        results = t(results)
    return results["img"].shape[:2]


@pytest.mark.parametrize("shape,expected", [
    ((375, 500), (504, 672)),    # already multiples of 14
    ((300, 457), (504, 770)),    # 768 rounded up to 770
    ((100, 1000), (210, 2016)),  # long side capped at 2016, short side 202 -> 210
])
def test_short_side_504_and_multiples_of_14(shape, expected):
    h, w = resize_for_test(shape)
    assert (h, w) == expected
    assert h % 14 == 0 and w % 14 == 0


def test_slide_windows_504_stride_322_cover_and_average():
    cfg = load_config("demo/linear_probing")
    cfg.model.test_cfg.update(crop_size=(504, 504), stride=(322, 322))
    model = build_segmentor(cfg)
    windows = []

    def record(crop, metas):
        windows.append((int(crop[0, 1, 0, 0]), int(crop[0, 0, 0, 0]), tuple(crop.shape[2:])))
        return torch.full((1, 150, *crop.shape[2:]), float(len(windows)))

    model.encode_decode = record
    h, w = 504, 840
    image = torch.zeros(1, 3, h, w)
    image[0, 0] = torch.arange(w).float()            # channel 0 holds x
    image[0, 1] = torch.arange(h).float()[:, None]   # channel 1 holds y
    logits = model.slide_inference(image, [dict(img_shape=(h, w), ori_shape=(h, w),
                                                pad_shape=(h, w))])
    # three 504x504 windows; the last is pulled back to end at the border
    assert windows == [(0, 0, (504, 504)), (0, 322, (504, 504)), (0, 336, (504, 504))]
    # overlaps are averaged: window k returns k everywhere
    columns = {0: 1.0, 330: 1.5, 400: 2.0, 600: 2.5, 839: 3.0}
    assert {x: float(logits[0, 0, 0, x]) for x in columns} == columns
