"""Evaluation geometry: test-time resize and slide-window placement, as in the paper."""

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

import internseg.plugin  # noqa: F401  (registers models and hooks, as custom_imports does)
from internseg.config import load_config
from internseg.engine.segmentor import build_segmentor



def resize_for_test(shape, config="paper/fewshot_1of16"):
    from mmseg.registry import TRANSFORMS

    cfg = load_config(config)
    steps = [s for s in cfg.test_dataloader.dataset.pipeline
             if s.type in ("Resize", "ShortSideResize", "ResizeToMultiple")]
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


# data_pipeline.test_per_config: 1/16..1/2 cap the long side at 2016; 1/1, linear probing,
# head tuning and full tuning use SETR_Resize (short side 504, long side uncapped)
CAPPED = ["paper/fewshot_1of16", "paper/fewshot_1of8", "paper/fewshot_1of4", "paper/fewshot_1of2"]
SETR = ["paper/fewshot_1of1", "paper/linear_probing", "paper/head_tuning", "paper/full_tuning"]


@pytest.mark.parametrize("config", CAPPED + SETR)
def test_test_resize_per_config_as_the_original(config):
    # up to 4:1 both agree
    assert resize_for_test((375, 500), config) == (504, 672)
    assert resize_for_test((504, 2016), config) == (504, 2016)
    # 2000 x 300 (w x h): 2016 x 308 capped, 3360 x 504 uncapped (10 windows instead of 6)
    wide = resize_for_test((300, 2000), config)
    tall = resize_for_test((2000, 300), config)
    if config in SETR:
        assert (wide, tall) == ((504, 3360), (3360, 504))
    else:
        assert (wide, tall) == ((308, 2016), (2016, 308))


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


def test_per_class_summary_is_the_formula_and_skips_absent_classes():
    """IoU = TP / (pred ∪ gt), Acc = TP / gt, aAcc = ΣTP / Σgt (mmseg's definitions); a class in
    neither prediction nor ground truth has no IoU and stays out of the means."""
    import torch

    from internseg.engine.metrics import PerClassIoUMetric

    metric = PerClassIoUMetric(ignore_index=255)
    metric.dataset_meta = {"classes": ("a", "b", "absent")}
    pred = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    gt = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 1]])
    valid = gt != 255
    results = []
    for p, g in ((pred[0], gt[0]), (pred[1][valid[1]], gt[1][valid[1]])):
        inter = torch.bincount(p[p == g], minlength=3).float()
        area_p = torch.bincount(p, minlength=3).float()
        area_g = torch.bincount(g, minlength=3).float()
        results.append((inter, area_p + area_g - inter, area_p, area_g))
    returned = metric.compute_metrics(results)
    summary = metric.last_summary
    # by hand: a: TP 2, pred 3, gt 3, union 4; b: TP 3, pred 4, gt 4, union 5; 7 valid pixels
    assert summary["per_class"]["a"] == {"IoU": 50.0, "Acc": round(2 / 3 * 100, 2)}
    assert summary["per_class"]["b"] == {"IoU": 60.0, "Acc": 75.0}
    assert summary["per_class"]["absent"] == {"IoU": None, "Acc": None}
    assert summary["mIoU"] == 55.0
    assert summary["aAcc"] == round(5 / 7 * 100, 2)
    assert returned["mIoU"] == pytest.approx(summary["mIoU"])
