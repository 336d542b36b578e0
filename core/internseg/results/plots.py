"""Figures: mIoU against training fraction, trunk x regime, and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # batch jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path  # noqa: E402
from .published import PublishedLog  # noqa: E402
from .table import read_scalars, regimes, validations  # noqa: E402


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


def _save(fig, out: str | Path) -> Path:
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return Path(out)
