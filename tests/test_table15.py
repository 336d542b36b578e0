"""The Table 15 view: the report's layout, our means beside its printed numbers, averages
and gaps from unrounded means, "not run" where a cell was not made."""

import pandas as pd
import pytest
import yaml

from conftest import FACTS
from internseg.results.table import RunRecord, build_table, summarize
from internseg.results.table15 import COLUMNS, table15, table15_markdown

TABLE15 = yaml.safe_load(FACTS.read_text())["table15"]
PRINTED_224 = dict(zip(TABLE15["columns"], TABLE15["rows"]["224px"]))
REGIME = {"linear_probing": "LP", "head_tuning": "HT", "full_tuning": "FT"}


def run(experiment, dataset, miou, trunk="intern_vit_6b_224px", seed=None):
    from internseg.records import record_of

    record = record_of(trunk, experiment, dataset)
    return RunRecord(run=f"{dataset}/{trunk}/{experiment}" + (f"/seed{seed}" if seed else ""),
                     dataset=dataset, experiment=experiment, setting=experiment,
                     head="UPerHead", trunk=trunk, trunk_mode="frozen", fraction=1,
                     iterations=80000, train_images=1, subset_seed=None, train_seed=seed,
                     seed_source="none", paper_miou=record.miou if record else None,
                     metrics={"mIoU": miou, "mAcc": 1.0, "aAcc": 1.0})


def cell(long, trunk, column):
    return long[(long["trunk"] == trunk) & (long["column"] == column)].iloc[0]


def test_cells_averages_and_gaps_beside_the_printed_ones():
    ours = {("linear_probing", "ade20k"): 47.0, ("linear_probing", "coco_stuff164k"): 43.05,
            ("head_tuning", "ade20k"): 55.0, ("head_tuning", "coco_stuff164k"): 49.0,
            ("full_tuning", "ade20k"): 59.0, ("full_tuning", "coco_stuff164k"): 51.5}
    long = table15(summarize(build_table([run(e, d, v) for (e, d), v in ours.items()])))
    assert list(long["column"]) == COLUMNS
    trunk = "intern_vit_6b_224px"
    lp = cell(long, trunk, "LP_ade20k")
    assert (lp.our_mIoU, lp.paper_mIoU, lp.n) == (47.0, PRINTED_224["LP_ade20k"], 1)
    assert lp.verdict == "within"  # 47.0 vs 47.2, one run: the default tolerance 1.0
    # averages of the unrounded means; the printed ones beside them
    avg = cell(long, trunk, "LP_avg")
    assert avg.our_mIoU == pytest.approx((47.0 + 43.05) / 2, abs=0.005)
    assert avg.paper_mIoU == PRINTED_224["LP_avg"]
    gap = cell(long, trunk, "delta2")
    assert gap.our_mIoU == pytest.approx((59.0 + 51.5) / 2 - (47.0 + 43.05) / 2, abs=0.005)
    assert gap.paper_mIoU == PRINTED_224["delta2"]
    assert gap.difference == pytest.approx(gap.our_mIoU - PRINTED_224["delta2"], abs=0.01)


def test_a_dataset_not_run_says_so_and_gives_no_average():
    long = table15(summarize(build_table([run("linear_probing", "ade20k", 47.0),
                                          run("head_tuning", "ade20k", 55.0)])))
    trunk = "intern_vit_6b_224px"
    coco = cell(long, trunk, "LP_coco_stuff164k")
    assert coco.verdict == "not run" and pd.isna(coco.our_mIoU)
    assert coco.paper_mIoU == PRINTED_224["LP_coco_stuff164k"]  # the paper's number stays
    for column in ("LP_avg", "HT_avg", "FT_avg", "delta1", "delta2", "FT_ade20k"):
        assert cell(long, trunk, column).verdict == "not run", column
    md = table15_markdown(long)
    assert "not run / 42.8" in md and "final 47.00 (n=1; best val –) / 47.2 within" in md


def test_seeds_give_a_mean_with_its_spread_and_n():
    long = table15(summarize(build_table([
        run("head_tuning", "ade20k", 54.0, seed=1), run("head_tuning", "ade20k", 56.0, seed=2)])))
    ht = cell(long, "intern_vit_6b_224px", "HT_ade20k")
    assert (ht.our_mIoU, ht.our_mIoU_std, ht.n) == (55.0, 1.41, 2)
    assert "final 55.00 ± 1.41 (n=2; best val –) / 54.9 within" in table15_markdown(long)


def test_rows_are_trunks_in_the_reports_layout_and_a_demo_trunk_stands_for_its_counterpart():
    records = [run("linear_probing", "ade20k", 40.0, trunk="intern_vit_6b_448px_v2_5"),
               run("linear_probing", "ade20k", 30.0, trunk="intern_vit_tiny_demo_b")]
    long = table15(summarize(build_table(records)))
    assert list(dict.fromkeys(long["trunk"])) == ["intern_vit_6b_448px_v2_5",
                                                  "intern_vit_tiny_demo_b"]
    v25 = dict(zip(TABLE15["columns"], TABLE15["rows"]["448px_v2_5"]))
    assert cell(long, "intern_vit_6b_448px_v2_5", "LP_ade20k").paper_mIoU == v25["LP_ade20k"]
    v10 = dict(zip(TABLE15["columns"], TABLE15["rows"]["448px_v1_0"]))
    # the demo's second trunk stands for V1-0 (trunks.py: stands_for)
    assert cell(long, "intern_vit_tiny_demo_b", "LP_avg").paper_mIoU == v10["LP_avg"]
    lines = table15_markdown(long).splitlines()
    header = next(line for line in lines if line.startswith("| trunk"))
    assert header.split(" | ")[1:4] == ["LP ADE20K", "LP COCO-Stuff-164K", "LP avg"]
    assert header.rstrip(" |").endswith("Δ2 (FT-LP)")


def test_no_grid_run_is_said_not_made_up():
    long = table15(summarize(build_table([run("fewshot_1of16", "ade20k", 40.0)])))
    assert long.empty
    assert "No run of linear probing" in table15_markdown(long)


def test_a_cell_shows_final_and_best_and_says_which_it_compares():
    record = run("linear_probing", "ade20k", 40.0, trunk="intern_vit_6b_448px_v2_5")
    from dataclasses import replace

    record = replace(record, paper_reports="best_validation", best_validation=(41.5, 7000))
    long = table15(summarize(build_table([record])))
    lp = cell(long, "intern_vit_6b_448px_v2_5", "LP_ade20k")
    assert (lp.final_mIoU, lp.best_val_mIoU, lp.compared, lp.our_mIoU) == (
        40.0, 41.5, "best validation", 41.5)
    md = table15_markdown(long)
    v25 = dict(zip(TABLE15["columns"], TABLE15["rows"]["448px_v2_5"]))
    assert f"best val 41.50 (n=1; final 40.00) / {v25['LP_ade20k']:.1f}" in md
    note = md.split("\n\n")[-1]
    assert note.startswith("- best validation: the configs that produced it kept the best "
                           "validation (save_best='auto') (1 row)")


def grid(skip=()):
    """Every cell of two trunks, ours 1 point under the report's, but ``skip``."""
    from internseg.records import record_of

    records = []
    for trunk in ("intern_vit_6b_224px", "intern_vit_6b_448px_v2_5"):
        for experiment in REGIME:
            for dataset in ("ade20k", "coco_stuff164k"):
                if (trunk, experiment, dataset) not in skip:
                    records.append(run(experiment, dataset,
                                       record_of(trunk, experiment, dataset).miou - 1.5,
                                       trunk=trunk))
    return table15(summarize(build_table(records)))


def test_the_figure_pairs_ours_with_the_reports_per_cell_both_datasets_and_averages():
    from internseg.results.plots import table15_points

    missing = ("intern_vit_6b_448px_v2_5", "full_tuning", "coco_stuff164k")
    long = grid(skip=(missing,))
    points = table15_points(long)
    assert len(points) == 3 * 3 * 2  # ADE20K, COCO-Stuff, average x LP, HT, FT x trunks
    for p in points:
        shown = cell(long, p["trunk"], f"{p['regime']}_{p['panel']}")
        assert p["paper"] == shown.paper_mIoU and p["verdict"] == shown.verdict
        if p["ours"] is not None:
            assert p["gap"] == pytest.approx(p["ours"] - p["paper"], abs=0.01)
    by = {(p["trunk"], p["regime"], p["panel"]): p for p in points}
    v25 = "intern_vit_6b_448px_v2_5"
    assert by[(v25, "FT", "coco_stuff164k")]["ours"] is None  # not run: the report's alone
    assert by[(v25, "FT", "avg")]["verdict"] == "not run"
    assert by[(v25, "LP", "ade20k")]["gap"] == -1.5
    assert by[(v25, "LP", "ade20k")]["verdict"] == "outside"
    # a regime's trunks side by side, in the table's order, inside the regime's slot
    lp = [by[(t, "LP", "ade20k")]["x"] for t in ("intern_vit_6b_224px", v25)]
    assert -0.5 < lp[0] < lp[1] < 0.5


def test_the_figure_is_written(tmp_path):
    from internseg.results.plots import plot_table15

    for name, long in (("grid.png", grid()), ("empty.png", table15(summarize(build_table([]))))):
        out = plot_table15(long, tmp_path / name)
        assert out.read_bytes()[:4] == b"\x89PNG"
