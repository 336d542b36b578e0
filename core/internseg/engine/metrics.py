"""IoU metric that also keeps its per-class results for ``metrics.json``."""

from __future__ import annotations

import numpy as np

from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS


def _percent(x) -> float | None:
    return None if np.isnan(x) else round(float(x) * 100, 2)


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """Logs and returns what IoUMetric does; ``last_summary`` also holds per-class values.

    The figures are mmseg's own (``total_area_to_metrics``); classes absent from both
    prediction and ground truth have no IoU (None) and do not count in the means, as there.
    """

    last_summary: dict | None = None

    def compute_metrics(self, results: list) -> dict:
        totals = [sum(part) for part in zip(*results)]
        with np.errstate(divide="ignore", invalid="ignore"):
            areas = self.total_area_to_metrics(*totals, metrics=["mIoU"])
        iou, acc = areas["IoU"], areas["Acc"]
        self.last_summary = {
            "mIoU": _percent(np.nanmean(iou)) if np.isfinite(iou).any() else None,
            "mAcc": _percent(np.nanmean(acc)) if np.isfinite(acc).any() else None,
            "aAcc": _percent(areas["aAcc"]),
            "per_class": {name: {"IoU": _percent(i), "Acc": _percent(a)}
                          for name, i, a in zip(self.dataset_meta["classes"], iou, acc)},
        }
        return super().compute_metrics(results)
