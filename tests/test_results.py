import json

import pandas as pd
import pytest

from internseg.cli import main, parse_pairs
from internseg.config import config_path
from internseg.results.published import parse_published_validation
from internseg.results.table import (COLUMNS, SUMMARY_COLUMNS, RunRecord, best_validation,
                                    build_table, regimes, report_markdown, summarize,
                                    to_markdown)

TRUNK = "intern_vit_6b_224px"


def record(name, ours, paper, fraction=1, setting="few-shot", trunk=TRUNK, train_seed=None,
           subset_seed=7, dataset="ade20k"):
    run = f"{dataset}/{trunk}/{name}" + ("" if train_seed is None else f"/seed{train_seed}")
    return RunRecord(run=run, dataset=dataset, experiment=name, setting=setting,
                     head="LinearHead",
                     trunk=trunk, trunk_mode="trained", fraction=fraction,
                     iterations=100, train_images=20210 // fraction, subset_seed=subset_seed,
                     train_seed=train_seed, seed_source="log:x.log", paper_miou=paper,
                     metrics={"mIoU": ours, "mAcc": 1.0, "aAcc": 2.0})


def test_table_rows_and_difference():
    table = build_table([record("fewshot_1of16", 40.25, 46.5, 16),
                         record("linear_probing", None, 47.2, setting="linear probing")])
    assert list(table.columns) == COLUMNS
    row = table.iloc[0]
    assert (row.setting, row.fraction, row.train_images) == ("few-shot", "1/16", 1263)
    assert row.difference == pytest.approx(-6.25)
    assert pd.isna(table.iloc[1].difference)
    assert table.iloc[1].setting == "linear probing"


def test_markdown_has_a_row_per_run_and_dashes_for_missing():
    md = to_markdown(build_table([record("head_tuning", 50.0, 54.9),
                                  record("full_tuning", None, 58.9)]))
    lines = md.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| run | dataset | experiment |")
    # no released mIoU, no validation: compared with the final weights
    assert "| 54.90 | – | 50.00 | – | – | final | 50.00 | -4.90 |" in lines[2]
    assert "–" in lines[3]


def test_pairs_parse_and_reject_garbage():
    assert parse_pairs(["a=1.5", "b=2"], "--x", float) == {"a": 1.5, "b": 2.0}
    for bad in (["a"], ["a=x"]):
        with pytest.raises(ValueError, match="--x expects EXPERIMENT=NUMBER"):
            parse_pairs(bad, "--x", float, "NUMBER")
    with pytest.raises(ValueError, match="--published-log expects RUN=PATH"):
        parse_pairs(["a="], "--published-log", key="RUN")


def outputs(tmp_path):
    """The aggregate command's output options, all under tmp_path."""
    return ["--runs-root", str(tmp_path / "runs"), "--csv", str(tmp_path / "t.csv"),
            "--summary-csv", str(tmp_path / "s.csv"), "--markdown", str(tmp_path / "t.md"),
            "--fraction-plot", str(tmp_path / "f.png"), "--trunk-plot", str(tmp_path / "r.png"),
            "--curves-plot", str(tmp_path / "c.png")]


def evaluated(run, **metrics) -> str:
    """metrics.json as `internseg test` writes it for the run's own weights."""
    return json.dumps({"config": str(run / "config.py"), "checkpoint": str(run / "final.pth"),
                       **metrics})


def provenance(run) -> None:
    (run / "provenance.json").write_text(json.dumps({"run_identity": "cd" * 32}))


def aggregate_one(tmp_path, metrics_text, config=None):
    run = tmp_path / "runs" / "ade20k" / TRUNK / "fewshot_1of16"
    run.mkdir(parents=True)
    config = config or f'_base_ = ["{config_path("paper", "fewshot_1of16")}"]\n'
    (run / "config.py").write_text(config)
    (run / "metrics.json").write_text(metrics_text)
    (run / "split.json").write_text(json.dumps({"count": 6, "fraction": 16}))
    provenance(run)
    code = main(["aggregate", str(run), *outputs(tmp_path)])
    return code, run


def test_aggregate_names_the_broken_run(tmp_path, capsys):
    code, run = aggregate_one(tmp_path, "{not json")
    assert code == 2
    assert f"ade20k/{TRUNK}/fewshot_1of16" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("metrics,problem", [
    ('{"mIoU": NaN, "mAcc": 1.0, "aAcc": 2.0}', "mIoU is nan"),
    ('{"mIoU": 40.0, "mAcc": Infinity, "aAcc": 2.0}', "mAcc is inf"),
    ('{"mAcc": 1.0, "aAcc": 2.0}', "mIoU missing"),
    ('{"mIoU": null, "mAcc": 1.0, "aAcc": 2.0}', "mIoU missing"),
    ('[40.0]', "JSON object"),
])
def test_aggregate_refuses_a_metrics_file_without_a_finite_miou(tmp_path, capsys, metrics,
                                                                 problem):
    """"–" in the table means "not measured"; a NaN or missing mIoU must not become one."""
    code, run = aggregate_one(tmp_path, metrics)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and str(run / "metrics.json") in line and problem in line, line
    assert not (tmp_path / "t.csv").exists()


def test_aggregate_names_a_config_with_a_missing_base(tmp_path, capsys):
    code, run = aggregate_one(tmp_path, "{}", config='_base_ = ["../nope.py"]\n')
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and str(run / "config.py") in line and "nope.py" in line, line


def test_plots_without_few_shot_rows_or_several_trunks_still_write(tmp_path):
    from internseg.results.plots import plot_miou_vs_fraction, plot_trunk_regimes

    summary = summarize(build_table([record("full_tuning", 50.0, 58.9)]))
    for plot, name in ((plot_miou_vs_fraction, "f.png"), (plot_trunk_regimes, "r.png")):
        assert plot(summary, tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_fraction_series_come_from_the_settings_not_the_names():
    from internseg.results.plots import fraction_series

    summary = summarize(build_table([
        record("a", 40.0, 46.5, 16), record("b", 50.0, 57.2, 1),
        record("c", 45.0, 47.2, 1, setting="linear probing"),
        record("d", 30.0, None, 4, setting="head tuning"), record("e", 35.0, None, 2,
                                                                 setting="head tuning"),
        record("b", 52.0, 57.2, 1, trunk="other")]))
    series = fraction_series(summary)
    # two trunks in the run: a series is named by dataset, trunk and setting
    assert sorted(series) == [f"ade20k, {TRUNK}, few-shot", f"ade20k, {TRUNK}, head tuning"]
    assert list(series[f"ade20k, {TRUNK}, few-shot"]["experiment"]) == ["a", "b"]  # 1/16 first


def test_summary_is_mean_std_and_verdict_over_the_seeds_of_a_row():
    table = build_table([record("head_tuning", 50.0, 54.9, train_seed=0),
                         record("head_tuning", 53.0, 54.9, train_seed=1),
                         record("head_tuning", 51.0, 54.9, train_seed=2),
                         record("fewshot_1of16", 46.0, 46.5, 16, subset_seed=1),
                         record("fewshot_1of16", 45.0, 46.5, 16, subset_seed=2)])
    summary = summarize(table).set_index("experiment")
    assert list(summarize(table).columns) == SUMMARY_COLUMNS
    head = summary.loc["head_tuning"]
    # mean 51.33, sample std sqrt(((−1.33)² + 1.67² + (−0.33)²) / 2) = 1.53
    assert (head.n, head.our_mIoU, head.our_mIoU_std) == (3, 51.33, 1.53)
    assert head.varied == "training seed" and head.runs.count(" ") == 2
    # default tolerance: twice the spread; 54.9 - 51.33 = 3.57 > 3.06
    assert (head.difference, head.tolerance, head.verdict) == (-3.57, 3.06, "outside")
    few = summary.loc["fewshot_1of16"]
    assert (few.our_mIoU, few.varied, few.verdict) == (45.5, "subset seed", "within")
    given = summarize(table, tolerance=4.0).set_index("experiment")
    assert given.loc["head_tuning"].verdict == "within"
    one = summarize(build_table([record("full_tuning", 57.5, 58.9)])).iloc[0]
    assert (one.n, one.our_mIoU_std, one.tolerance, one.verdict) == (1, None, 1.0, "outside")
    assert summarize(build_table([record("x", 50.0, None)])).iloc[0].verdict == "–"


def test_trunk_by_regime_grid_and_report_blocks():
    table = build_table([
        record("linear_probing", 47.0, 47.2, setting="linear probing"),
        record("head_tuning", 54.0, 54.9, setting="head tuning"),
        record("linear_probing", 44.0, None, setting="linear probing", trunk="v2_5"),
        record("head_tuning", 52.0, None, setting="head tuning", trunk="v2_5"),
        record("fewshot_1of16", 40.0, 46.5, 16)])
    summary = summarize(table)
    grid = regimes(summary)
    assert list(grid.index) == [TRUNK, "v2_5"]
    assert list(grid.columns) == ["linear probing", "head tuning"]  # few-shot 1/16 is not 1/1
    assert grid.loc["v2_5", "head tuning"] == 52.0
    md = report_markdown(table, summary)
    assert md.index(f"## ade20k, {TRUNK}") < md.index("## ade20k, v2_5") < md.index(
        "## Trunk x regime on ade20k")
    assert md.index("## Trunk x regime") < md.index("## Every run")
    assert "| within ±1.00 |" in md and f"| ade20k/{TRUNK}/linear_probing |" in md


def test_best_validation_is_the_first_highest_in_optimizer_updates():
    scalars = [{"loss": 3.0, "iter": 1000, "step": 1000},
               {"mIoU": 41.0, "step": 1000}, {"mIoU": 44.5, "step": 2000},
               {"mIoU": 44.5, "step": 3000}, {"mIoU": 43.0, "step": 4000}]
    assert best_validation(scalars) == (44.5, 2000)
    # with accumulation the loop counts micro-batches, the table optimizer updates
    assert best_validation(scalars, accumulation=8) == (44.5, 250)
    assert best_validation([{"loss": 3.0, "iter": 1, "step": 1}]) is None


def finished_run(tmp_path, experiment: str, miou: float, count: int, fraction: int):
    """A run folder as the workflow leaves it: config, metrics, split record, provenance."""
    run = tmp_path / "runs" / "ade20k" / TRUNK / experiment
    run.mkdir(parents=True)
    (run / "config.py").write_text(f'_base_ = ["{config_path("paper", experiment)}"]\n')
    (run / "metrics.json").write_text(evaluated(run, mIoU=miou, mAcc=55.0, aAcc=80.0))
    (run / "split.json").write_text(json.dumps({"count": count, "fraction": fraction,
                                                "seed": 3}))
    provenance(run)
    return run


def test_aggregate_reports_final_and_best_validation(tmp_path):
    run = finished_run(tmp_path, "fewshot_1of16", 44.0, 1263, 16)
    (run / "scalars.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"loss": 2.0, "iter": 1000, "step": 1000}, {"mIoU": 45.25, "step": 3000},
        {"mIoU": 44.0, "step": 5000}]) + "\n")
    log = tmp_path / "published.log"
    log.write_text(PUBLISHED_LOG)
    csv = tmp_path / "t.csv"
    code = main(["aggregate", str(run), "--published-log",
                 f"ade20k/{TRUNK}/fewshot_1of16={log}",
                 *outputs(tmp_path)])
    assert code == 0
    row = pd.read_csv(csv).iloc[0]
    # setting, head and trunk are the config's; the paper's number is its record's
    assert (row.setting, row.paper_mIoU, row["head"], row.trunk, row.trunk_mode) == (
        "few-shot", 46.5, "LinearHead", "intern_vit_6b_224px", "trained")
    assert row.dataset == "ade20k" and row.paper_source == "InternVL 1.0, Sec. 4.2.2: few-shot 1/16"
    assert (row.best_val_mIoU, row.best_val_iter) == (45.25, 3000)
    assert (row.published_final_mIoU, row.published_best_mIoU, row.published_best_iter) == (
        43.98, 45.12, 1000)
    # neither of the log's numbers is the printed 46.5: the configs kept the best validation
    assert (row.our_mIoU, row.compared, row.compared_mIoU, row.difference) == (
        44.0, "best validation", 45.25, -1.25)
    summary = pd.read_csv(tmp_path / "s.csv").iloc[0]
    assert (summary.final_mIoU, summary.best_val_mIoU, summary.our_mIoU) == (44.0, 45.25, 45.25)
    markdown = (tmp_path / "t.md").read_text()
    assert "- best validation: its published log not read here (or neither" in markdown
    assert (row.published_s_per_iter, row.published_memory_MB) == (2.001, 61234)


def test_aggregate_puts_the_released_checkpoints_miou_beside_the_papers(tmp_path):
    run = finished_run(tmp_path, "head_tuning", 50.0, 20210, 1)
    released = tmp_path / "released.json"
    released.write_text(json.dumps({"mIoU": 54.87, "mAcc": 66.0, "aAcc": 85.0}))
    args = ["aggregate", str(run), *outputs(tmp_path)]
    assert main([*args, "--released-metrics", f"ade20k/{TRUNK}/head_tuning={released}"]) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table.columns[table.columns.get_loc("paper_mIoU"):][:3]) == [
        "paper_mIoU", "released_mIoU", "our_mIoU"]
    assert table.iloc[0].released_mIoU == 54.87
    assert main(args) == 0  # without released metrics: the column stays, empty
    assert pd.isna(pd.read_csv(tmp_path / "t.csv").iloc[0].released_mIoU)
    released.write_text(json.dumps({"mAcc": 66.0}))
    assert main([*args, "--released-metrics", f"ade20k/{TRUNK}/head_tuning={released}"]) == 2


# mmcv 1.x text-log lines as its TextLoggerHook and EvalHook write them (mmseg 0.x: fractions)
PUBLISHED_LOG = """\
2024-01-10 09:00:01,123 - mmseg - INFO - Set random seed to 1234, deterministic: False
2024-01-10 09:40:00,000 - mmseg - INFO - Iter [1000/5000]\tlr: 3.960e-05, eta: 2:40:00, \
time: 2.001, data_time: 0.010, memory: 61234, decode.loss_ce: 0.6120, decode.acc_seg: 80.1, \
loss: 0.6120
2024-01-10 09:52:00,000 - mmseg - INFO - Now best checkpoint is saved as best_mIoU_iter_1000.pth.
2024-01-10 09:52:00,000 - mmseg - INFO - Best mIoU is 0.4512 at 1000 iter.
2024-01-10 09:52:00,001 - mmseg - INFO - Iter(val) [250]\taAcc: 0.8123, mIoU: 0.4512, \
mAcc: 0.5701, IoU.wall: 0.7301, IoU.building: 0.8012, Acc.wall: 0.8800
2024-01-10 10:50:00,001 - mmseg - INFO - Iter(val) [250]\taAcc: 0.8101, mIoU: 0.4398, \
mAcc: 0.5650, IoU.wall: 0.7290, IoU.building: 0.7999, Acc.wall: 0.8790
"""


def test_published_log_gives_last_validation_and_last_best():
    found = parse_published_validation(PUBLISHED_LOG)
    assert (found.final_miou, found.best_miou, found.best_iter) == (43.98, 45.12, 1000)
    empty = parse_published_validation("Set random seed to 1, deterministic: False\n")
    assert (empty.final_miou, empty.best_miou, empty.best_iter) == (None, None, None)


# The per-50-iteration lines exactly as mmcv 1.x's TextLoggerHook writes them (tab after the
# iteration counter, ", "-separated pairs, eta as h:mm:ss), and mmseg 0.x's validation lines.
TRAINING_LOG = """\
2023-11-02 12:00:00,000 - mmseg - INFO - Iter [15950/160000]\tlr: 5.401e-05, eta: 8:41:02, \
time: 0.251, data_time: 0.006, memory: 35980, decode.loss_ce: 0.5901, decode.acc_seg: 78.1022, \
loss: 0.5901
2023-11-02 12:00:12,000 - mmseg - INFO - Iter [16000/160000]\tlr: 5.400e-05, eta: 8:40:17, \
time: 0.249, data_time: 0.005, memory: 35982, decode.loss_ce: 0.5778, decode.acc_seg: 79.3311, \
loss: 0.5778
2023-11-02 12:03:00,000 - mmseg - INFO - Iter(val) [250]\taAcc: 0.7915, mIoU: 0.3867, \
mAcc: 0.5076, IoU.wall: 0.7157, IoU.building: 0.7890, Acc.wall: 0.8512
2023-11-02 12:03:12,000 - mmseg - INFO - Iter [16050/160000]\tlr: 5.399e-05, eta: 8:39:30, \
time: 0.260, data_time: 0.005, memory: 36010, decode.loss_ce: 0.5702, decode.acc_seg: 79.9, \
loss: 0.5702
"""


def test_published_log_gives_the_training_and_validation_curves():
    from internseg.results.published import parse_published_log

    log = parse_published_log(TRAINING_LOG)
    assert log.max_iters == 160000
    assert [(r["iter"], r["lr"], r["loss"]) for r in log.train] == [
        (15950, 5.401e-05, 0.5901), (16000, 5.4e-05, 0.5778), (16050, 5.399e-05, 0.5702)]
    assert "eta" not in log.train[0] and log.train[1]["data_time"] == 0.005
    # Iter(val) [250] counts validation batches: the validation belongs to iteration 16000
    assert log.validation == [(16000, 38.67)]
    assert log.summary.final_miou == 38.67
    assert (log.seconds_per_iter, log.memory_mb) == (0.251, 36010)


def test_training_curves_overlay_the_originals(tmp_path, monkeypatch):
    from internseg.results import plots
    from internseg.results.published import parse_published_log

    drawn = {}

    def keep(fig, out):
        drawn.update({(ax.get_title(), line.get_label()): line.get_xydata().tolist()
                      for ax in fig.axes for line in ax.get_lines()})
        return out

    monkeypatch.setattr(plots, "_save", keep)
    ours = tmp_path / "scalars.jsonl"
    ours.write_text(json.dumps({"loss": 0.9, "iter": 16000, "step": 16000}) + "\n")
    plots.plot_training_curves({"full_tuning": ours}, tmp_path / "c.png",
                               {"full_tuning": parse_published_log(TRAINING_LOG)})
    assert drawn["training loss", "full_tuning"] == [[16000.0, 0.9]]
    assert drawn["training loss", "full_tuning (original)"][:2] == [[15950.0, 0.5901],
                                                                     [16000.0, 0.5778]]
    assert drawn["validation mIoU", "full_tuning (original)"] == [[16000.0, 38.67]]


def test_aggregate_writes_each_runs_provenance(tmp_path):
    run = finished_run(tmp_path, "head_tuning", 50.0, 20210, 1)
    bare = finished_run(tmp_path, "full_tuning", 51.0, 20210, 1)
    (run / "provenance.json").write_text(json.dumps({
        "git_commit": "ab" * 20, "run_identity": "cd" * 32, "split_sha256": "ef" * 32,
        "device": "NVIDIA H200", "world_size": 8, "iterations": 80000,
        "versions": {"torch": "2.13.0", "onedl-mmsegmentation": "1.4.2"}}))
    out = tmp_path / "p.csv"
    assert main(["aggregate", str(run), str(bare), *outputs(tmp_path),
                 "--provenance-csv", str(out)]) == 0
    rows = pd.read_csv(out, dtype=str).set_index("run")
    first = rows.loc[f"ade20k/{TRUNK}/head_tuning"]
    assert (first.git_commit, first.device, first.world_size, first.torch) == (
        "ab" * 20, "NVIDIA H200", "8", "2.13.0")
    assert first["onedl-mmsegmentation"] == "1.4.2"
    # only what its provenance.json holds: nothing made up
    assert rows.loc[f"ade20k/{TRUNK}/full_tuning"].drop("run_identity").isna().all()


def test_a_broken_provenance_file_is_named(tmp_path, capsys):
    run = finished_run(tmp_path, "head_tuning", 50.0, 20210, 1)
    (run / "provenance.json").write_text("{broken")
    assert main(["aggregate", str(run), *outputs(tmp_path),
                 "--provenance-csv", str(tmp_path / "p.csv")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(run / "provenance.json") in line and f"ade20k/{TRUNK}/head_tuning" in line, line


# ---------------------------------------------------------------- what a run folder holds


def other_runs_metrics(run):
    other = run.parent / "head_tuning"
    return evaluated(other, mIoU=40.0, mAcc=1.0, aAcc=2.0)


@pytest.mark.parametrize("name,content,named", [
    ("split.json", '{"fraction": 16}', "key 'count' must be int, found missing"),
    ("split.json", '{"count": "6"}', "key 'count' must be int, found '6'"),
    ("split.json", "[6]", "split record must be a JSON object, found list"),
    ("provenance.json", "[]", "provenance must be a JSON object, found list"),
    ("provenance.json", "{}", "key 'run_identity' must be str, found missing"),
    ("provenance.json", None, "provenance not found"),
    ("scalars.jsonl", '{"loss": 1.0, "step": 1}\n{"loss": 0.9, "st\n',
     "scalars.jsonl:2:15: training scalars is not valid JSON"),
    ("scalars.jsonl", '{"loss": 1.0, "step": 1}\n[1]\n', "scalars.jsonl:2: training scalars "
                                                        "must be a JSON object"),
    ("metrics.json", other_runs_metrics, "'checkpoint' is "),
    ("metrics.json", lambda run: json.dumps({"mIoU": 1.0, "mAcc": 1.0, "aAcc": 1.0}),
     "key 'checkpoint' must be str, found missing"),
    # the run's own weights tested on another dataset (`internseg test --dataset`)
    ("metrics.json", lambda run: evaluated(run, mIoU=30.0, mAcc=1.0, aAcc=2.0,
                                           dataset="coco_stuff164k"),
     "an evaluation on 'coco_stuff164k', but the run is on ade20k (150 classes)"),
    ("metrics.json", lambda run: evaluated(run, mIoU=30.0, mAcc=1.0, aAcc=2.0, per_class={
        f"class{i}": {"IoU": 1.0, "Acc": 1.0} for i in range(171)}),
     "an evaluation of 171 classes, but the run is on ade20k (150 classes)"),
])
def test_a_run_file_that_is_not_what_it_should_be_is_named(tmp_path, capsys, name, content,
                                                            named):
    """One line naming the run, the file (and line) and what was expected; never a
    traceback, never a row built from another run's files."""
    run = finished_run(tmp_path, "fewshot_1of16", 44.0, 1263, 16)
    if content is None:
        (run / name).unlink()
    else:
        (run / name).write_text(content(run) if callable(content) else content)
    code = main(["aggregate", str(run), *outputs(tmp_path)])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert f"run ade20k/{TRUNK}/fewshot_1of16" in line and str(run / name) in line, line
    assert named in line, line
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("ending,why", [
    ("Iter(val) [250]\taAcc: 0.8000, mIoU: nan, mAcc: 0.5000\n", "reads 'nan'"),
    ("Iter(val) [250]\taAcc: 0.8000, mIoU: 0.45", "ends inside its last validation's mIoU"),
    ("Iter(val) [250]\taAcc: 0.8000, mIoU: , mAcc: 0.5\n", "reads ''"),
])
def test_a_published_last_validation_that_is_not_a_number_is_not_measured(ending, why):
    """Never the validation before it in its place: that is another iteration's number."""
    found = parse_published_validation(PUBLISHED_LOG + ending)
    assert found.final_miou is None and why in found.final_missing
    assert parse_published_validation(PUBLISHED_LOG).final_missing is None


def test_the_table_tells_not_measured_from_no_log(tmp_path, caplog):
    """A published log without a validation says "not measured"; a row without a log "–"."""
    run = finished_run(tmp_path, "fewshot_1of16", 44.0, 1263, 16)
    log = tmp_path / "published.log"
    log.write_text(PUBLISHED_LOG.split("2024-01-10 09:52")[0])  # training lines only
    assert main(["aggregate", str(run), "--published-log",
                 f"ade20k/{TRUNK}/fewshot_1of16={log}", *outputs(tmp_path)]) == 0
    assert pd.read_csv(tmp_path / "t.csv").iloc[0].published_final_mIoU == "not measured"
    assert "| not measured |" in (tmp_path / "t.md").read_text()
    assert f"{log}: final validation not measured: no validation (Iter(val)) line" in caplog.text
    assert main(["aggregate", str(run), *outputs(tmp_path)]) == 0
    assert pd.isna(pd.read_csv(tmp_path / "t.csv").iloc[0].published_final_mIoU)


def judged(experiment, final, best, *, trunk=TRUNK, dataset="ade20k", log=None):
    """A run's record with its final and best validation mIoU and, if given, the original's
    published log's (last, best) validation."""
    from internseg.records import record_of
    from internseg.results.published import PublishedLog, PublishedValidation

    rec = record_of(trunk, experiment, dataset)
    published = None if log is None else PublishedLog(
        summary=PublishedValidation(final_miou=log[0], best_miou=log[1], best_iter=7000))
    return RunRecord(run=f"{dataset}/{trunk}/{experiment}", dataset=dataset,
                     experiment=experiment, setting="s", head="UPerHead", trunk=trunk,
                     trunk_mode="frozen", fraction=1, iterations=80000, train_images=1,
                     subset_seed=None, train_seed=None, seed_source="none",
                     paper_miou=rec.miou, paper_reports=rec.reports,
                     metrics={"mIoU": final, "mAcc": 1.0, "aAcc": 1.0},
                     best_validation=None if best is None else (best, 6000), published=published)


@pytest.mark.parametrize("case,compared,value,why", [
    # Table 15's grid: no logs; the fork's configs set save_best='auto'
    (dict(experiment="linear_probing", final=40.0, best=41.0, trunk="intern_vit_6b_448px_v2_5"),
     "best validation", 41.0, "the configs that produced it kept the best validation"),
    # InternVL 1.0 (54.9 printed): its log's last validation is the printed number
    (dict(experiment="head_tuning", final=53.0, best=54.0, log=(54.93, 55.3)),
     "final", 53.0, "the published log's last validation is the printed number"),
    # ... its log's best validation is
    (dict(experiment="head_tuning", final=53.0, best=54.0, log=(54.5, 54.87)),
     "best validation", 54.0, "the published log's best validation is the printed number"),
    # ... no log read (the demo, or before the logs are fetched)
    (dict(experiment="head_tuning", final=53.0, best=54.0),
     "best validation", 54.0, "its published log not read here"),
    # a run that validated nothing has only its final weights
    (dict(experiment="linear_probing", final=40.0, best=None, trunk="intern_vit_6b_448px_v2_5"),
     "final", 40.0, "no validation recorded during training"),
])
def test_the_verdict_compares_the_number_its_source_reports(case, compared, value, why):
    row = build_table([judged(**case)]).iloc[0]
    assert (row.compared, row.compared_mIoU) == (compared, value)
    assert row.compared_why.startswith(why)
    assert row.difference == pytest.approx(value - row.paper_mIoU)
    summary = summarize(build_table([judged(**case)])).iloc[0]
    assert (summary.final_mIoU, summary.our_mIoU) == (case["final"], value)
