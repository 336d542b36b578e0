"""IoU metric that also keeps its per-class results for ``metrics.json``."""

from __future__ import annotations

import numpy as np

from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS


def summarize(intersect, union, pred_area, label_area, class_names) -> dict:
    """mIoU / mAcc / aAcc (percent) and per-class IoU / Acc from summed areas.

    Classes absent from both prediction and ground truth have no IoU (None) and do not count
    in the means, as in mmseg.
    """
    intersect, union = np.asarray(intersect, float), np.asarray(union, float)
    label_area = np.asarray(label_area, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersect / union
        acc = intersect / label_area
    def pct(x):
        return None if np.isnan(x) else round(float(x) * 100, 2)
    return {
        "mIoU": pct(np.nanmean(iou)) if np.isfinite(iou).any() else None,
        "mAcc": pct(np.nanmean(acc)) if np.isfinite(acc).any() else None,
        "aAcc": pct(intersect.sum() / label_area.sum()) if label_area.sum() else None,
        "per_class": {
            name: {"IoU": pct(i), "Acc": pct(a)} for name, i, a in zip(class_names, iou, acc)
        },
    }


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """Logs and returns what IoUMetric does; ``last_summary`` also holds per-class values."""

    last_summary: dict | None = None

    def compute_metrics(self, results: list) -> dict:
        totals = [sum(part) for part in zip(*results)]
        self.last_summary = summarize(
            *(t.numpy() if hasattr(t, "numpy") else t for t in totals),
            self.dataset_meta["classes"])
        return super().compute_metrics(results)
