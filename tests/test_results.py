import json

import pandas as pd
import pytest

from internseg.cli import main, parse_pairs
from internseg.results.table import COLUMNS, RunRecord, build_table, to_markdown


def record(name, ours, paper, fraction=1):
    return RunRecord(experiment=name, head="linear", trunk="trained", fraction=fraction,
                     iterations=100, train_images=20210 // fraction, seed=7,
                     seed_source="log:x.log", paper_miou=paper,
                     metrics={"mIoU": ours, "mAcc": 1.0, "aAcc": 2.0})


def test_table_rows_and_difference():
    table = build_table([record("fewshot_1of16", 40.25, 46.5, 16),
                         record("linear_probing", None, 47.2)])
    assert list(table.columns) == COLUMNS
    row = table.iloc[0]
    assert (row.setting, row.fraction, row.train_images) == ("few-shot", "1/16", 1263)
    assert row.difference == pytest.approx(-6.25)
    assert pd.isna(table.iloc[1].difference)
    assert table.iloc[1].setting == "linear probing"


def test_markdown_has_a_row_per_experiment_and_dashes_for_missing():
    md = to_markdown(build_table([record("head_tuning", 50.0, 54.9),
                                  record("full_tuning", None, 58.9)]))
    lines = md.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| experiment |")
    assert "| 54.90 | 50.00 | -4.90 |" in lines[2]
    assert "–" in lines[3]


def test_paper_pairs_parse_and_reject_garbage():
    assert parse_pairs(["a=1.5", "b=2"]) == {"a": 1.5, "b": 2.0}
    for bad in (["a"], ["a=x"]):
        with pytest.raises(ValueError, match="EXPERIMENT=NUMBER"):
            parse_pairs(bad)


def test_aggregate_names_the_broken_run(tmp_path, capsys):
    run = tmp_path / "runs" / "fewshot_1of16"
    run.mkdir(parents=True)
    (run / "config.py").write_text('_base_ = ["../paper/fewshot_1of16.py"]\n')
    (run / "metrics.json").write_text("{not json")
    (run / "split.json").write_text(json.dumps({"count": 6, "fraction": 16}))
    code = main(["aggregate", str(run), "--csv", str(tmp_path / "t.csv"),
                 "--markdown", str(tmp_path / "t.md"), "--fraction-plot",
                 str(tmp_path / "f.png"), "--curves-plot", str(tmp_path / "c.png")])
    assert code == 1
    assert "fewshot_1of16" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_fraction_plot_without_few_shot_rows_still_writes(tmp_path):
    from internseg.results.plots import plot_miou_vs_fraction

    table = build_table([record("full_tuning", 50.0, 58.9)])
    out = plot_miou_vs_fraction(table, tmp_path / "f.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
