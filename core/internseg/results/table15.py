"""The InternVL 2.5 report's Table 15 view: trunks (rows) x regime and dataset (columns), with
each regime's average over the two datasets and the gaps Δ1 = HT avg - LP avg and
Δ2 = FT avg - LP avg; ours (mean ± std over seeds, n) beside the printed numbers, each cell
with its verdict. A cell whose runs were not made says "not run", never a number.

Averages and gaps are computed from the unrounded means, as the report's appear to be
(55.25 - 45.0 printed as 10.2): a printed average or gap differs from the one computed from
its printed cells by at most 0.05.
"""

from __future__ import annotations

import pandas as pd

from ..datasets import DATASETS
from ..records import TABLE15_REGIMES, printed_table15, record_of
from .table import (BEST, DEFAULT_TOLERANCE, compared_note, mean_and_spread, to_markdown,
                    verdict_of)

TABLE15_DATASETS = ("ade20k", "coco_stuff164k")
COLUMNS = [f"{regime}_{dataset}" for regime in TABLE15_REGIMES
           for dataset in (*TABLE15_DATASETS, "avg")] + ["delta1", "delta2"]
LONG_COLUMNS = ["trunk", "column", "final_mIoU", "best_val_mIoU", "compared", "our_mIoU",
                "our_mIoU_std", "n", "paper_mIoU", "difference", "tolerance", "verdict",
                "compared_why"]
NOT_RUN = "not run"


def _cell(summary: pd.DataFrame, trunk: str, regime: str, dataset: str) -> dict:
    experiment = TABLE15_REGIMES[regime]
    rows = summary[(summary["trunk"] == trunk) & (summary["experiment"] == experiment)
                   & (summary["dataset"] == dataset)]
    record = record_of(trunk, experiment, dataset)
    paper = record.miou if record else None
    if rows.empty or pd.isna(rows["our_mIoU"].iloc[0]):
        return dict(our_mIoU=None, our_mIoU_std=None, n=0, paper_mIoU=paper, difference=None,
                    tolerance=None, verdict=NOT_RUN)
    row = rows.iloc[0]
    std = None if pd.isna(row["our_mIoU_std"]) else float(row["our_mIoU_std"])
    return dict(final_mIoU=_number(row["final_mIoU"]), best_val_mIoU=_number(row["best_val_mIoU"]),
                compared=row["compared"], compared_why=row["compared_why"],
                our_mIoU=float(row["our_mIoU"]), our_mIoU_std=std, n=int(row["n"]),
                paper_mIoU=paper, difference=row["difference"], tolerance=row["tolerance"],
                verdict=row["verdict"])


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _derived(value: float | None, parts: list[dict], paper: float | None,
             tolerance: float | None) -> dict:
    """An average or a gap: measured only when all its parts are; its tolerance the given
    one, else the widest of its parts'."""
    if value is None:
        return dict(our_mIoU=None, our_mIoU_std=None, n=0, paper_mIoU=paper, difference=None,
                    tolerance=None, verdict=NOT_RUN)
    allowed = tolerance if tolerance is not None else max(
        (p["tolerance"] for p in parts if p["tolerance"] is not None), default=DEFAULT_TOLERANCE)
    difference = None if paper is None else round(value - paper, 2)
    return dict(our_mIoU=round(value, 2), our_mIoU_std=None, n=min(p["n"] for p in parts),
                paper_mIoU=paper, difference=difference, tolerance=allowed,
                verdict=verdict_of(difference, allowed))


def table15(summary: pd.DataFrame, tolerance: float | None = None) -> pd.DataFrame:
    """Long form, one row per (trunk, column), for every trunk that ran a Table 15 regime.
    ``summary`` is :func:`internseg.results.table.summarize`'s."""
    regimes = summary[summary["experiment"].isin(TABLE15_REGIMES.values())]
    rows = []
    for trunk in dict.fromkeys(regimes["trunk"]):
        cells, averages = {}, {}
        for regime in TABLE15_REGIMES:
            parts = [_cell(summary, trunk, regime, d) for d in TABLE15_DATASETS]
            cells.update({f"{regime}_{d}": p for d, p in zip(TABLE15_DATASETS, parts)})
            measured = all(p["our_mIoU"] is not None for p in parts)
            # unrounded: the means are kept to two decimals, the average of two is exact
            averages[regime] = (sum(p["our_mIoU"] for p in parts) / 2 if measured else None,
                                parts)
            cells[f"{regime}_avg"] = _derived(averages[regime][0], parts,
                                              printed_table15(trunk).get(f"{regime}_avg"),
                                              tolerance)
        lp, lp_parts = averages["LP"]
        for name, regime in (("delta1", "HT"), ("delta2", "FT")):
            value, parts = averages[regime]
            gap = None if value is None or lp is None else value - lp
            cells[name] = _derived(gap, parts + lp_parts, printed_table15(trunk).get(name),
                                   tolerance)
        rows += [dict(trunk=trunk, column=column, **cells[column]) for column in COLUMNS]
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def _shown(cell: pd.Series) -> str:
    paper = "–" if cell["paper_mIoU"] is None or pd.isna(cell["paper_mIoU"]) else (
        f"{cell['paper_mIoU']:.1f}")
    if cell["verdict"] == NOT_RUN:
        return f"{NOT_RUN} / {paper}"
    ours = mean_and_spread(cell["our_mIoU"], cell["our_mIoU_std"])
    verdict = "" if cell["verdict"] == "–" else f" {cell['verdict']}"
    if isinstance(cell["compared"], str):  # a measured cell: its two numbers, the compared first
        other = (f"final {cell['final_mIoU']:.2f}" if cell["compared"] == BEST
                 else "best val " + mean_and_spread(cell["best_val_mIoU"], None))
        shown = "best val" if cell["compared"] == BEST else "final"
        return f"{shown} {ours} (n={cell['n']}; {other}) / {paper}{verdict}"
    return f"{ours} (n={cell['n']}) / {paper}{verdict}"


def table15_markdown(long: pd.DataFrame) -> str:
    """The report's layout: one row per trunk, each cell ours / paper and the verdict."""
    title = {d: DATASETS[d].title for d in TABLE15_DATASETS} | {"avg": "avg"}
    header = {f"{r}_{d}": f"{r} {title[d]}" for r in TABLE15_REGIMES
              for d in (*TABLE15_DATASETS, "avg")} | {"delta1": "Δ1 (HT-LP)",
                                                      "delta2": "Δ2 (FT-LP)"}
    wide = [dict(trunk=trunk, **{header[c]: _shown(cells.set_index("column").loc[c])
                                 for c in COLUMNS})
            for trunk, cells in long.groupby("trunk", sort=False)]
    intro = ("Ours (mean ± std over training seeds, n runs; the number compared first, the "
             "other in brackets) / the InternVL 2.5 report's Table 15, and the verdict (within "
             "or outside the tolerance). avg: the mean of a regime's two datasets' compared "
             "numbers; Δ from the unrounded averages.\n\n")
    if not wide:
        return intro + "No run of linear probing, head tuning or full tuning.\n"
    cells = long[long["column"].isin([f"{r}_{d}" for r in TABLE15_REGIMES
                                      for d in TABLE15_DATASETS])]
    return intro + to_markdown(pd.DataFrame(wide)) + "\n" + compared_note(cells)

