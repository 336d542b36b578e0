"""Figures: mIoU against training fraction, trunk x regime, Table 15 ours against the
report's, and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # batch jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path  # noqa: E402
from .published import PublishedLog  # noqa: E402
from .table import read_scalars, regimes, validations  # noqa: E402
from .table15 import NOT_RUN, TABLE15_DATASETS  # noqa: E402


def fraction_series(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows that form a curve over the training fraction: per dataset, trunk and setting,
    those with two or more distinct fractions, sorted by fraction. With one trunk and one
    dataset a series is named by its setting alone."""
    rows = summary.assign(x=summary["fraction"].map(lambda f: 1 / int(str(f).split("/")[1])))
    several = rows["trunk"].nunique() > 1 or rows["dataset"].nunique() > 1
    return {(f"{dataset}, {trunk}, {setting}" if several else setting): group.sort_values("x")
            for (dataset, trunk, setting), group in rows.groupby(["dataset", "trunk", "setting"],
                                                                  sort=False)
            if group["x"].nunique() > 1}


def _empty(fig, ax, out, why: str) -> Path:
    """Keep the output when there is nothing to draw, and say why."""
    ax.text(0.5, 0.5, why, ha="center", va="center")
    ax.set_axis_off()
    return _save(fig, out)


def plot_miou_vs_fraction(summary: pd.DataFrame, out: str | Path) -> Path:
    """Our mIoU (mean, with the seed-to-seed standard deviation as error bars) against the
    fraction of training images, beside the paper's."""
    series = fraction_series(summary)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if not series:  # e.g. `run: [full_tuning]`
        return _empty(fig, ax, out, "no setting with several training fractions in this run")
    drawn = set()  # the paper's curve once per setting, whatever the trunks
    for name, rows in series.items():
        setting = rows["setting"].iloc[0]
        if setting not in drawn and rows["paper_mIoU"].notna().any():
            drawn.add(setting)
            ax.plot(rows["x"], rows["paper_mIoU"], "o--", color="0.3", label=f"{setting}: paper")
        ax.errorbar(rows["x"], rows["our_mIoU"], yerr=rows["our_mIoU_std"].fillna(0),
                    fmt="s-", capsize=3, label=f"{name}: ours")
    ticks = pd.concat(series.values()).drop_duplicates("x")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks["x"], ticks["fraction"])
    ax.set_xlabel("fraction of the training images")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("InternViT-6B segmentation against training fraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out)


def plot_trunk_regimes(summary: pd.DataFrame, out: str | Path) -> Path:
    """Trunk x regime, one panel per dataset: for each setting trained on all the images, one
    bar per trunk (mean mIoU, seed spread as error bars)."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    grids = {d: (regimes(summary[summary["dataset"] == d]),
                 regimes(summary[summary["dataset"] == d], "our_mIoU_std")) for d in datasets}
    grids = {d: g for d, g in grids.items() if not g[0].empty}
    fig, axes = plt.subplots(1, max(len(grids), 1), figsize=(6 * max(len(grids), 1), 3.5),
                             squeeze=False)
    if not grids:
        return _empty(fig, axes[0][0], out, "no setting trained on all the images in this run")
    for ax, (dataset, (means, spreads)) in zip(axes[0], grids.items()):
        width = 0.8 / len(means.index)
        for i, trunk in enumerate(means.index):
            x = [j + (i - (len(means.index) - 1) / 2) * width for j in range(len(means.columns))]
            ax.bar(x, means.loc[trunk].fillna(0), width, yerr=spreads.loc[trunk].fillna(0),
                   capsize=3, label=trunk)
        ax.set_xticks(range(len(means.columns)), means.columns)
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"trunk x regime, {dataset}")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    return _save(fig, out)


# Table 15's figure: one column per dataset and one for the averages; per regime, one slot per
# trunk holding the report's number (hollow) and ours (filled), joined by a line in the colour
# of the verdict, and under them the gap as a bar, so that a cell's gap reads at a glance.
TABLE15_PANELS = (*TABLE15_DATASETS, "avg")
VERDICT_COLOURS = {"within": "tab:green", "outside": "tab:red"}


def table15_points(long: pd.DataFrame) -> list[dict]:
    """What Table 15's figure draws, from :func:`internseg.results.table15.table15`'s long
    form: per panel, regime and trunk, ours (None where not run) beside the paper's, the gap
    and the verdict, and the slot's x within its panel."""
    from ..records import TABLE15_REGIMES

    trunks = list(dict.fromkeys(long["trunk"]))
    width = 0.8 / max(len(trunks), 1)
    cells = long.set_index(["trunk", "column"])
    points = []
    for panel in TABLE15_PANELS:
        for r, regime in enumerate(TABLE15_REGIMES):
            for i, trunk in enumerate(trunks):
                cell = cells.loc[(trunk, f"{regime}_{panel}")]
                ours = None if cell["verdict"] == NOT_RUN else float(cell["our_mIoU"])
                paper = None if pd.isna(cell["paper_mIoU"]) else float(cell["paper_mIoU"])
                std = cell["our_mIoU_std"]
                points.append(dict(
                    panel=panel, regime=regime, trunk=trunk,
                    x=r + (i - (len(trunks) - 1) / 2) * width, ours=ours,
                    std=None if std is None or pd.isna(std) else float(std), paper=paper,
                    gap=None if ours is None or paper is None else round(ours - paper, 2),
                    verdict=cell["verdict"]))
    return points


def plot_table15(long: pd.DataFrame, out: str | Path) -> Path:
    """Table 15, ours against the report's per cell: the two datasets and the averages. Top:
    the two numbers of a cell side by side (the report's hollow, ours filled, joined in the
    verdict's colour); below: the gap itself, ours - report, a bar per cell."""
    from matplotlib.lines import Line2D

    from ..datasets import DATASETS
    from ..records import TABLE15_REGIMES, of_record

    points = table15_points(long)
    fig, axes = plt.subplots(2, len(TABLE15_PANELS), figsize=(15, 6.5), sharey="row",
                             sharex="col", gridspec_kw=dict(height_ratios=(3, 1.5)),
                             squeeze=False)
    if not points:
        for ax in axes.flat:
            ax.set_axis_off()
        return _empty(fig, axes[0][0], out, "no run of linear probing, head tuning or full "
                                            "tuning")
    trunks = list(dict.fromkeys(p["trunk"] for p in points))
    colour = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(trunks)}
    slot = 0.8 / len(trunks)
    gaps = [abs(p["gap"]) for p in points if p["gap"] is not None]
    reach = max(gaps, default=1.0) * 1.45 or 1.0  # room for the labels beyond the bars
    for column, panel in enumerate(TABLE15_PANELS):
        top, bottom = axes[0][column], axes[1][column]
        for p in (p for p in points if p["panel"] == panel):
            line = VERDICT_COLOURS.get(p["verdict"], "0.6")
            if p["paper"] is not None:
                top.plot(p["x"], p["paper"], "D", mfc="white", mec="black", ms=7, zorder=3)
            if p["ours"] is None:
                bottom.text(p["x"], 0, NOT_RUN, ha="center", va="center", rotation=90,
                            fontsize=7, color="0.4")
                continue
            if p["paper"] is not None:
                top.plot([p["x"], p["x"]], [p["paper"], p["ours"]], "-", color=line, lw=2.5,
                         zorder=2)
            top.errorbar(p["x"], p["ours"], yerr=p["std"] or 0, fmt="o", ms=7,
                         color=colour[p["trunk"]], mec="black", capsize=3, zorder=4)
            if p["gap"] is not None:
                bottom.bar(p["x"], p["gap"], slot * 0.8, color=line, edgecolor="black",
                           linewidth=0.5)
                label = ("0.0" if abs(p["gap"]) < 0.05
                         else f"{p['gap']:+.1f}".replace("-", "\u2212"))
                bottom.annotate(label, (p["x"], p["gap"]),
                                xytext=(0, 2 if p["gap"] >= 0 else -2),
                                textcoords="offset points", ha="center",
                                va="bottom" if p["gap"] >= 0 else "top", fontsize=7)
        for ax in (top, bottom):
            for boundary in (0.5, 1.5):
                ax.axvline(boundary, color="0.85", lw=1)
            ax.grid(alpha=0.3, axis="y")
        bottom.axhline(0, color="black", lw=0.8)
        bottom.set_xticks(range(len(TABLE15_REGIMES)), list(TABLE15_REGIMES))
        bottom.set_xlim(-0.5, len(TABLE15_REGIMES) - 0.5)
        top.set_title("average of the two" if panel == "avg" else DATASETS[panel].title)
    axes[1][0].set_ylim(-reach, reach)
    axes[0][0].set_ylabel("mIoU (%)")
    axes[1][0].set_ylabel("ours - report")
    # a synthetic trunk is compared with the records of the trunk it stands for: say which
    handles = [Line2D([], [], marker="o", ls="", color=colour[t], mec="black",
                      label=f"{t}{f' (for {of_record(t)})' if of_record(t) != t else ''}: ours")
               for t in trunks]
    handles += [Line2D([], [], marker="D", ls="", mfc="white", mec="black",
                       label="the report's Table 15"),
                *(Line2D([], [], color=c, lw=6, label=f"gap {v} the tolerance")
                  for v, c in VERDICT_COLOURS.items())]
    rows = -(-len(handles) // 4)
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Table 15: ours (filled) against the InternVL 2.5 report (hollow), per cell")
    fig.tight_layout(rect=(0, 0.035 * rows, 1, 1))
    return _save(fig, out, tight=False)


def plot_training_curves(scalars: dict[str, str | Path], out: str | Path,
                         published: dict[str, PublishedLog] | None = None) -> Path:
    """Training loss per iteration for every run, and validation mIoU where it was measured;
    with ``published``, the original's curves from its logs overlaid (dashed, same colour).
    The x axis is the loop iteration, which is the original's iteration at 8 GPUs x 2."""
    fig, (loss_ax, miou_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    published = published or {}
    for name in sorted(set(scalars) | set(published)):
        records = read_scalars(scalars[name]) if name in scalars else []
        train = [(r["iter"], r["loss"]) for r in records if "loss" in r and "iter" in r]
        val = validations(records)
        colour = None
        if train:
            colour = loss_ax.plot(*zip(*train), label=name)[0].get_color()
        if val:
            colour = miou_ax.plot(*zip(*val), "o-", label=name, color=colour)[0].get_color()
        log = published.get(name)
        if log is None:
            continue
        theirs = [(r["iter"], r["loss"]) for r in log.train if "loss" in r]
        if theirs:
            colour = loss_ax.plot(*zip(*theirs), "--", color=colour, alpha=0.7,
                                  label=f"{name} (original)")[0].get_color()
        if log.validation:
            miou_ax.plot(*zip(*log.validation), "x--", color=colour, alpha=0.7,
                         label=f"{name} (original)")
    loss_ax.set(xlabel="iteration", ylabel="training loss", title="training loss")
    miou_ax.set(xlabel="iteration", ylabel="mIoU (%)", title="validation mIoU")
    for ax in (loss_ax, miou_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7)
    return _save(fig, out)


def _save(fig, out: str | Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return Path(out)
