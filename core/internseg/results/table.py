"""The table: one row per run (every value kept), one per dataset, trunk and experiment with
the mean and spread over its seeds beside the published number of record and a verdict, and
the InternVL 2.5 report's Table 15 view of the trunk x regime x dataset grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..io import json_field, read_json, read_jsonl
from .published import PublishedLog, read_published_log

COLUMNS = ["run", "dataset", "experiment", "setting", "head", "trunk", "trunk_mode", "fraction",
           "train_images", "subset_seed", "train_seed", "seed_source", "iterations",
           "paper_mIoU", "released_mIoU", "our_mIoU", "best_val_mIoU", "best_val_iter",
           "compared", "compared_mIoU", "difference", "compared_why", "mAcc", "aAcc",
           "published_final_mIoU", "published_best_mIoU", "published_best_iter",
           "published_s_per_iter", "published_memory_MB", "paper_source"]
SUMMARY_COLUMNS = ["dataset", "trunk", "experiment", "setting", "fraction", "n", "varied",
                   "final_mIoU", "best_val_mIoU", "compared", "our_mIoU", "our_mIoU_std",
                   "paper_mIoU", "difference", "tolerance", "verdict", "released_mIoU", "mAcc",
                   "aAcc", "runs", "compared_why", "paper_source"]
# Which of a run's two numbers its published cell is compared with (compared_with).
FINAL, BEST = "final", "best validation"
# A value that was looked for and is not there (a published log whose last validation is
# not a number, or that has none), where "–" means nothing was looked for.
NOT_MEASURED = "not measured"
# Seed-to-seed spread of ADE20K mIoU is 0.5-2 points (mmseg's regression benchmark): the
# tolerance of a row measured once, when the user sets none.
DEFAULT_TOLERANCE = 1.0


@dataclass(frozen=True)
class RunRecord:
    """What one finished run left behind, already parsed."""

    run: str
    dataset: str
    experiment: str
    setting: str
    head: str
    trunk: str
    trunk_mode: str
    fraction: int
    iterations: int
    train_images: int
    subset_seed: int | None
    train_seed: int | None
    seed_source: str
    paper_miou: float | None
    metrics: dict
    # where the paper's number was printed (internseg.records), "" without a record
    paper_source: str = ""
    # what the printed number is (internseg.records.REPORTS), "" without a record
    paper_reports: str = ""
    best_validation: tuple[float, int] | None = None
    published: PublishedLog | None = None
    # mIoU of the original's released checkpoint, evaluated here with the same `internseg test`
    released_miou: float | None = None
    # what made the weights (`internseg train --provenance-out`)
    provenance: dict | None = None


def read_scalars(path: str | Path) -> list[dict]:
    """mmengine's scalars, one JSON object per line (training logs and validations)."""
    return read_jsonl(path, "training scalars")


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


def _printed(value: float | None, paper: float) -> bool:
    """``value`` (a log's mIoU) is the printed one-decimal ``paper`` number."""
    return value is not None and abs(round(value, 1) - paper) < 1e-9


def compared_with(r: RunRecord) -> tuple[str, str]:
    """Which of the run's two numbers, the final weights' mIoU or the best validation mIoU
    during training, its published cell is compared with, and why: what the cell's source
    reports (the metafile's ``reports``). A source whose training logs are published is
    compared like with like, with the one of the log's last and best validation that the
    printed number equals; otherwise the original's configs kept the best validation
    checkpoint (``save_best='auto'``), so the best validation."""
    if r.paper_miou is None:
        return FINAL, "no published number"
    summary = r.published.summary if r.published else None
    if r.paper_reports == "log" and summary is not None:
        if _printed(summary.final_miou, r.paper_miou):
            return FINAL, "the published log's last validation is the printed number"
        if _printed(summary.best_miou, r.paper_miou):
            return ((BEST, "the published log's best validation is the printed number")
                    if r.best_validation else
                    (FINAL, "the printed number is the log's best validation, but this run "
                            "recorded no validation"))
    if r.best_validation is None:
        return FINAL, "no validation recorded during training"
    if r.paper_reports == "log":
        return BEST, ("its published log not read here (or neither of its numbers is the "
                      "printed one): the configs kept the best validation (save_best='auto')")
    return BEST, "the configs that produced it kept the best validation (save_best='auto')"


def build_table(records: list[RunRecord]) -> pd.DataFrame:
    rows = []
    for r in records:
        ours = r.metrics.get("mIoU")
        best_miou, best_iter = r.best_validation or (None, None)
        compared, why = compared_with(r)
        value = best_miou if compared == BEST else ours
        diff = None if value is None or r.paper_miou is None else round(value - r.paper_miou, 2)
        published = r.published or PublishedLog()
        summary = published.summary
        rows.append(dict(
            run=r.run, dataset=r.dataset, experiment=r.experiment, setting=r.setting,
            head=r.head,
            trunk=r.trunk, trunk_mode=r.trunk_mode, fraction=f"1/{r.fraction}",
            train_images=r.train_images, subset_seed=r.subset_seed, train_seed=r.train_seed,
            seed_source=r.seed_source, iterations=r.iterations,
            paper_mIoU=r.paper_miou, released_mIoU=r.released_miou, our_mIoU=ours,
            best_val_mIoU=best_miou, best_val_iter=best_iter, compared=compared,
            compared_mIoU=value, difference=diff, compared_why=why,
            mAcc=r.metrics.get("mAcc"), aAcc=r.metrics.get("aAcc"),
            published_final_mIoU=(NOT_MEASURED if r.published and summary.final_missing
                                  else summary.final_miou),
            published_best_mIoU=summary.best_miou,
            published_best_iter=summary.best_iter,
            # as the original measured them on its 8 A100s (mmcv's `time`, `memory`)
            published_s_per_iter=published.seconds_per_iter,
            published_memory_MB=published.memory_mb,
            paper_source=r.paper_source,
        ))
    return pd.DataFrame(rows, columns=COLUMNS)


def varied_seeds(runs: pd.DataFrame) -> str:
    """Which seeds differ between the runs of one row."""
    varied = [name for name, column in (("subset", "subset_seed"), ("training", "train_seed"))
              if runs[column].nunique(dropna=False) > 1]
    return " and ".join(varied) + " seed" if varied else "–"


def summarize(table: pd.DataFrame, tolerance: float | None = None) -> pd.DataFrame:
    """One row per dataset, trunk and experiment, in the table's order: mean and standard deviation
    (n - 1) of our mIoU over its runs, n, which seeds varied, and the verdict: the mean
    within ``tolerance`` mIoU of the paper's number or outside it. Without a tolerance, a row
    of several runs uses twice its measured standard deviation, one run
    :data:`DEFAULT_TOLERANCE`."""
    rows = []
    for (dataset, trunk, experiment), runs in table.groupby(["dataset", "trunk", "experiment"],
                                                            sort=False):
        # the verdict's number: each run's compared one (the runs of a row share their record
        # and log, so they compare the same one)
        ours = runs["compared_mIoU"].astype(float)
        n = int(ours.notna().sum())
        mean = round(float(ours.mean()), 2) if n else None
        std = round(float(ours.std(ddof=1)), 2) if n > 1 else None
        paper = runs["paper_mIoU"].iloc[0]
        paper = None if pd.isna(paper) else float(paper)
        allowed = tolerance if tolerance is not None else (
            2 * std if std else DEFAULT_TOLERANCE)
        difference = None if mean is None or paper is None else round(mean - paper, 2)
        released = runs["released_mIoU"].dropna()
        rows.append(dict(
            dataset=dataset, trunk=trunk, experiment=experiment, setting=runs["setting"].iloc[0],
            fraction=runs["fraction"].iloc[0], n=n, varied=varied_seeds(runs),
            final_mIoU=_mean(runs["our_mIoU"]), best_val_mIoU=_mean(runs["best_val_mIoU"]),
            compared=runs["compared"].iloc[0], compared_why=runs["compared_why"].iloc[0],
            our_mIoU=mean, our_mIoU_std=std, paper_mIoU=paper, difference=difference,
            tolerance=round(allowed, 2), verdict=verdict_of(difference, allowed),
            released_mIoU=float(released.iloc[0]) if len(released) else None,
            mAcc=round(float(runs["mAcc"].mean()), 2), aAcc=round(float(runs["aAcc"].mean()), 2),
            runs=" ".join(runs["run"]), paper_source=runs["paper_source"].iloc[0]))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _mean(values: pd.Series) -> float | None:
    values = values.astype(float).dropna()
    return round(float(values.mean()), 2) if len(values) else None


def compared_note(rows: pd.DataFrame) -> str:
    """Under a table: which number each verdict compares, and the rule that chose it
    (``rows``: the summary's, or Table 15's cells)."""
    rules = rows[rows["compared_why"].notna() & (rows["compared_why"] != "")]
    lines = [f"- {compared}: {why} ({n} {'row' if n == 1 else 'rows'})"
             for (compared, why), n in rules.groupby(["compared", "compared_why"],
                                                     sort=False).size().items()]
    if not lines:
        return ""
    return ("The verdict compares the published number with ours as the rule for its source "
            "chooses (the metafile's `reports`; docs/results.md): our final weights' mIoU "
            "(final) or the best validation mIoU during training (best validation).\n\n"
            + "\n".join(lines) + "\n")


def verdict_of(difference: float | None, tolerance: float) -> str:
    if difference is None:
        return "–"
    return "within" if abs(difference) <= tolerance + 1e-9 else "outside"


def regimes(summary: pd.DataFrame, values: str = "our_mIoU") -> pd.DataFrame:
    """Trunk x regime on one dataset: mean mIoU (or ``values``, e.g. its std) of each trunk
    (rows) in each setting trained on all the images (columns: linear probing, head tuning,
    full tuning, ...), the shape of the InternVL 2.5 report's segmentation ablation."""
    full = summary[summary["fraction"] == "1/1"]
    table = full.pivot_table(index="trunk", columns="setting", values=values,
                             aggfunc="first", sort=False)
    return table.reindex(index=list(dict.fromkeys(full["trunk"])),
                         columns=list(dict.fromkeys(full["setting"])))


def mean_and_spread(mean, std) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:.2f}" if std is None or pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


SHOWN = ["experiment", "setting", "fraction", "n", "varied", "final_mIoU", "best_val_mIoU",
         "compared", "mIoU", "paper_mIoU", "difference", "verdict", "released_mIoU", "mAcc",
         "aAcc"]


def report_markdown(table: pd.DataFrame, summary: pd.DataFrame) -> str:
    """``results/<preset>/table.md``: one block per dataset and trunk (mean ± std over seeds,
    verdict), the trunk x regime table per dataset, then every run."""
    parts = []
    for (dataset, trunk), rows in summary.groupby(["dataset", "trunk"], sort=False):
        shown = rows.assign(
            mIoU=[mean_and_spread(m, s) for m, s in zip(rows["our_mIoU"], rows["our_mIoU_std"])],
            verdict=[v if v == "–" else f"{v} ±{t:.2f}"
                     for v, t in zip(rows["verdict"], rows["tolerance"])])
        parts.append(f"## {dataset}, {trunk}\n\n" + to_markdown(shown[SHOWN]) + "\n"
                     + compared_note(rows))
    for dataset, rows in summary.groupby("dataset", sort=False):
        grid = regimes(rows)
        if not grid.empty:
            parts.append(f"## Trunk x regime on {dataset} (mIoU, mean over seeds)\n\n"
                         + to_markdown(grid.reset_index()))
    parts.append("## Every run\n\n" + to_markdown(table))
    return "\n".join(parts)


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


PROVENANCE_COLUMNS = ["run", "git_commit", "run_identity", "config_sha256", "seed",
                      "split_sha256", "pretrained_sha256", "dataset_sha256",
                      "device", "world_size", "iterations", "python", "torch",
                      "onedl-mmengine", "onedl-mmcv", "onedl-mmsegmentation", "internseg"]


def provenance_table(records: list[RunRecord]) -> pd.DataFrame:
    """Per run: the code, libraries, inputs (by sha256) and hardware that made its weights."""
    rows = []
    for r in records:
        found = dict(r.provenance or {})
        found.update(found.pop("versions", {}))
        rows.append({column: found.get(column) for column in PROVENANCE_COLUMNS} | {"run": r.run})
    return pd.DataFrame(rows, columns=PROVENANCE_COLUMNS, dtype=object)  # ints stay ints


def evaluated_this_run(metrics: dict, run: str, path: str | Path) -> None:
    """A run's metrics.json must be the evaluation of that run's weights: its ``checkpoint``
    a file of the run's folder, its ``config`` the run's config.py (or the run's
    experiment as ``<preset>/<experiment>``). A file copied from another run, or written by
    a test of other weights, would put another run's number in this row."""
    from ..config import PRESETS
    from ..registry import parse_run_id

    parts = tuple(run.split("/"))
    experiment = parse_run_id(run).experiment
    for key in ("checkpoint", "config"):
        named = Path(json_field(metrics, key, path, str))
        in_folder = named.parent.parts[-len(parts):] == parts
        as_experiment = (key == "config" and len(named.parts) == 2
                         and named.parts[0] in PRESETS and named.parts[1] == experiment)
        if not (in_folder or as_experiment):
            raise InputError(f"{path}: '{key}' is {str(named)!r}, not a file of run {run}: "
                             "these metrics evaluated another run's weights; evaluate this "
                             "run's final.pth (`internseg test`) instead")


def evaluated_on_the_runs_dataset(metrics: dict, dataset, path: str | Path) -> None:
    """A run's metrics.json must be an evaluation on the run's dataset: ``internseg test
    --dataset`` (or another tree) scores the run's own weights on another test set, whose
    number would fill this row. Named by the dataset metrics.json records, else by the
    class count of its per-class IoU."""
    named, classes = metrics.get("dataset", dataset.name), metrics.get("per_class")
    count = len(classes) if isinstance(classes, dict) else dataset.num_classes
    problem = (f"an evaluation on {named!r}" if named != dataset.name else
               f"an evaluation of {count} classes" if count != dataset.num_classes else None)
    if problem:
        raise InputError(f"{path}: {problem}, but the run is on {dataset.name} "
                         f"({dataset.num_classes} classes): evaluate this run's final.pth on "
                         "its own dataset (`internseg test`) instead")


def load_record(run: str, *, config_file: str | Path, metrics_file: str | Path,
                split_record: str | Path, provenance_file: str | Path,
                scalars_file: str | Path | None = None,
                published_log: str | Path | None = None,
                released_metrics: str | Path | None = None) -> RunRecord:
    """Read the files of run ``<dataset>/<trunk>/<experiment>[/seed<N>]``: the config it ran
    (what it is), metrics, split record, provenance and, if given, its training scalars, the
    original's published log and the metrics of its released checkpoint; the paper's number
    is its record's (internseg.records). A bad file is one error naming the run and the file."""
    try:
        return _load_record(run, config_file, metrics_file, split_record, provenance_file,
                            scalars_file, published_log, released_metrics)
    except InputError as err:
        raise InputError(f"run {run}: {err}") from None


def _load_record(run, config_file, metrics_file, split_record, provenance_file, scalars_file,
                 published_log, released_metrics) -> RunRecord:
    from ..config import dataset_of, load_config, trunk_of
    from ..records import record_of
    from ..registry import parse_run_id, setting_of

    cfg = load_config(config_file, import_modules=False)
    metrics = read_json(metrics_file, "metrics")
    check_metrics(metrics, metrics_file)
    evaluated_this_run(metrics, run, metrics_file)
    split = read_json(split_record, "split record")
    scalars = read_scalars(scalars_file) if scalars_file else []
    released = read_json(released_metrics, "released checkpoint's metrics") if (
        released_metrics) else {}
    provenance = read_json(provenance_file, "provenance")
    # what made the weights: every run that trained writes it (`train --provenance-out`)
    json_field(provenance, "run_identity", provenance_file, str)
    accumulation = cfg.get("batch_plan", {}).get("accumulation", 1)
    experiment, trunk = parse_run_id(run).experiment, trunk_of(cfg, config_file).name
    registered = dataset_of(cfg, config_file)
    evaluated_on_the_runs_dataset(metrics, registered, metrics_file)
    dataset = registered.name
    record = record_of(trunk, experiment, dataset)
    return RunRecord(
        run=run,
        dataset=dataset,
        experiment=experiment,
        setting=setting_of(cfg),
        head=cfg.model.decode_head.type,
        trunk=trunk,
        trunk_mode="frozen" if cfg.model.backbone.get("freeze_trunk") else "trained",
        fraction=(json_field(split, "fraction", split_record) if "fraction" in split
                  else int(cfg.get("train_fraction", 1))),
        # loop iterations count micro-batches; the paper counts optimizer updates
        iterations=int(cfg.train_cfg.max_iters) // accumulation,
        train_images=json_field(split, "count", split_record),
        subset_seed=split.get("seed"),
        train_seed=cfg.get("randomness", {}).get("seed"),
        seed_source=split.get("seed_source", "none"),
        paper_miou=record.miou if record else None,
        paper_source="; ".join(map(str, record.sources)) if record else "",
        paper_reports=record.reports if record else "",
        metrics=metrics,
        best_validation=best_validation(scalars, accumulation),
        published=read_published_log(published_log) if published_log else None,
        released_miou=_released_miou(released, released_metrics),
        provenance=provenance,
    )


def _released_miou(metrics: dict, path) -> float | None:
    if not path:
        return None
    return float(json_field(metrics, "mIoU", path, (int, float)))
