"""Figures: mIoU against training fraction, and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # batch jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path  # noqa: E402
from .published import PublishedLog  # noqa: E402
from .table import read_scalars, validations  # noqa: E402


def fraction_series(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows that form a curve over the training fraction: per setting (from each
    experiment's metadata), those with two or more distinct fractions, sorted by fraction."""
    rows = table.assign(x=table["fraction"].map(lambda f: 1 / int(str(f).split("/")[1])))
    return {setting: group.sort_values("x") for setting, group in rows.groupby("setting")
            if group["x"].nunique() > 1}


def plot_miou_vs_fraction(table: pd.DataFrame, out: str | Path) -> Path:
    series = fraction_series(table)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if not series:  # e.g. `run: [full_tuning]`: keep the output, say why it is empty
        ax.text(0.5, 0.5, "no setting with several training fractions in this run",
                ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, out)
    for setting, rows in series.items():
        paper = ax.plot(rows["x"], rows["paper_mIoU"], "o--", label=f"{setting}: paper")[0]
        ax.plot(rows["x"], rows["our_mIoU"], "s-", color=paper.get_color(),
                label=f"{setting}: ours")
    ticks = pd.concat(series.values()).drop_duplicates("x")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks["x"], ticks["fraction"])
    ax.set_xlabel("fraction of ADE20K training images")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("InternViT-6B segmentation against training fraction")
    ax.grid(alpha=0.3)
    ax.legend()
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
