"""One row per experiment: what it was, what the paper got, what we got."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import InputError
from .published import PublishedLog, read_published_log

COLUMNS = ["experiment", "setting", "head", "trunk", "trunk_mode", "fraction", "train_images",
           "seed",
           "seed_source", "iterations", "paper_mIoU", "released_mIoU", "our_mIoU", "difference", "mAcc", "aAcc",
           "best_val_mIoU", "best_val_iter", "published_final_mIoU", "published_best_mIoU",
           "published_best_iter", "published_s_per_iter", "published_memory_MB"]

@dataclass(frozen=True)
class RunRecord:
    """What one finished run left behind, already parsed."""

    experiment: str
    setting: str
    head: str
    trunk: str
    trunk_mode: str
    fraction: int
    iterations: int
    train_images: int
    seed: int | None
    seed_source: str
    paper_miou: float | None
    metrics: dict
    best_validation: tuple[float, int] | None = None
    published: PublishedLog | None = None
    # mIoU of the original's released checkpoint, evaluated here with the same `internseg test`
    released_miou: float | None = None


def read_scalars(path: str | Path) -> list[dict]:
    """mmengine's scalars, one JSON object per line (training logs and validations)."""
    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def validations(scalars: list[dict]) -> list[tuple[int, float]]:
    """(iteration, mIoU) of every validation among mmengine's scalars."""
    return [(r["step"], r["mIoU"]) for r in scalars if "mIoU" in r and "step" in r]


def best_validation(scalars: list[dict], accumulation: int = 1) -> tuple[float, int] | None:
    """The highest validation mIoU during training and the optimizer update it was measured
    at. The original's `save_best='auto'` keeps that checkpoint, so its reported number may be
    this one rather than the final weights'. Ties go to the earliest, as a strictly-greater
    comparison (mmcv's and mmengine's) keeps the first."""
    measured = validations(scalars)
    if not measured:
        return None
    step, miou = max(measured, key=lambda v: (v[1], -v[0]))
    return miou, step // accumulation


def build_table(records: list[RunRecord]) -> pd.DataFrame:
    rows = []
    for r in records:
        ours = r.metrics.get("mIoU")
        diff = None if ours is None or r.paper_miou is None else round(ours - r.paper_miou, 2)
        best_miou, best_iter = r.best_validation or (None, None)
        published = r.published or PublishedLog()
        summary = published.summary
        rows.append(dict(
            experiment=r.experiment, setting=r.setting, head=r.head,
            trunk=r.trunk, trunk_mode=r.trunk_mode, fraction=f"1/{r.fraction}", train_images=r.train_images,
            seed=r.seed, seed_source=r.seed_source, iterations=r.iterations,
            paper_mIoU=r.paper_miou, released_mIoU=r.released_miou, our_mIoU=ours, difference=diff,
            mAcc=r.metrics.get("mAcc"), aAcc=r.metrics.get("aAcc"),
            best_val_mIoU=best_miou, best_val_iter=best_iter,
            published_final_mIoU=summary.final_miou, published_best_mIoU=summary.best_miou,
            published_best_iter=summary.best_iter,
            # as the original measured them on its 8 A100s (mmcv's `time`, `memory`)
            published_s_per_iter=published.seconds_per_iter,
            published_memory_MB=published.memory_mb,
        ))
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table without the optional `tabulate` dependency."""
    def cell(v):
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return "–"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |"
            for row in table.astype(object).itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


MEASURED = ("mIoU", "mAcc", "aAcc")


def check_metrics(metrics, path: str | Path) -> None:
    """A metrics.json must hold a finite number for each summary metric: the table shows
    "–" for "not measured", which a NaN or a missing mIoU must never turn into."""
    if not isinstance(metrics, dict):
        raise InputError(f"{path}: expected a JSON object of metrics")
    for name in MEASURED:
        value = metrics.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{path}: {name} missing or not a number ({value!r})")
        if not math.isfinite(value):
            raise InputError(f"{path}: {name} is {value} (a diverged or empty evaluation)")


def load_record(experiment: str, *, config_file: str | Path, metrics_file: str | Path,
                split_record: str | Path, scalars_file: str | Path | None = None,
                published_log: str | Path | None = None,
                released_metrics: str | Path | None = None) -> RunRecord:
    """Read one run's config (the row's metadata is in it: internseg.registry), metrics, split
    record and, if given, its training scalars, the original's published log and the metrics
    of its released checkpoint; a bad file is named in the error."""
    from ..config import load_config
    from ..registry import metadata

    cfg = load_config(config_file, import_modules=False)
    exp = metadata(cfg, Path(config_file))
    try:
        metrics = json.loads(Path(metrics_file).read_text())
        split = json.loads(Path(split_record).read_text())
        scalars = read_scalars(scalars_file) if scalars_file else []
        released = json.loads(Path(released_metrics).read_text()) if released_metrics else {}
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read results of {experiment}: {err}") from None
    check_metrics(metrics, metrics_file)
    accumulation = cfg.get("batch_plan", {}).get("accumulation", 1)
    return RunRecord(
        experiment=experiment,
        setting=exp["setting"],
        head=cfg.model.decode_head.type,
        trunk=cfg.trunk,
        trunk_mode="frozen" if cfg.model.backbone.get("freeze_trunk") else "trained",
        fraction=int(split.get("fraction", exp["fraction"])),
        # loop iterations count micro-batches; the paper counts optimizer updates
        iterations=int(cfg.train_cfg.max_iters) // accumulation,
        train_images=int(split["count"]),
        seed=split.get("seed"),
        seed_source=split.get("seed_source", "none"),
        paper_miou=exp["paper_miou"],
        metrics=metrics,
        best_validation=best_validation(scalars, accumulation),
        published=read_published_log(published_log) if published_log else None,
        released_miou=_released_miou(released, released_metrics),
    )


def _released_miou(metrics: dict, path) -> float | None:
    if not path:
        return None
    if not isinstance(metrics.get("mIoU"), (int, float)):
        raise InputError(f"{path}: no numeric mIoU (released checkpoint's metrics)")
    return float(metrics["mIoU"])
