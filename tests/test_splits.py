"""Few-shot subsets, split files with sha256 sidecars, and seeds read from published logs."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess

import pytest

from internseg import splits
from internseg.io import write_json
from internseg.splits import (LogFacts, SplitError, few_shot_subset, parse_training_log,
                              seed_from_log, write_split)

STEMS = [f"ADE_train_{i:08d}" for i in range(1, 20211)]
# sha256 of "\n".join(few_shot_subset(STEMS, 16, seed=0)), computed once.  A change means
# Python's random.shuffle changed, and with it every 1/N subset.
GOLDEN_1OF16_SEED0 = "eed5585662ed4ad7d9e528688993dd7cbb30c10b8f503e2b398cd2ca83f757fd"

LOG = """\
2024-01-10 11:59:58,001 - mmseg - INFO - Environment info:
------------------------------------------------------------
sys.platform: linux
------------------------------------------------------------
2024-01-10 11:59:59,500 - mmseg - INFO - Distributed training: True
2024-01-10 12:00:00,123 - mmseg - INFO - Set random seed to 1234567, deterministic: False
2024-01-10 12:00:05,456 - mmseg - INFO - Randomly select 1263 images
2024-01-10 12:00:06,000 - mmseg - INFO - Loaded 1263 images
2024-01-10 12:05:00,000 - mmseg - INFO - Iter [50/5000]\tlr: 1.960e-05, time: 2.1, loss: 3.9
"""


# ---------------------------------------------------------------- subsets


@pytest.mark.parametrize("fraction, size", [(16, 1263), (8, 2526), (4, 5052), (2, 10105),
                                            (1, 20210)])
def test_paper_subset_sizes(fraction, size):
    assert splits.subset_size(20210, fraction) == size
    assert len(few_shot_subset(STEMS, fraction, seed=1)) == size


def test_golden_subset():
    chosen = few_shot_subset(STEMS, 16, seed=0)
    assert hashlib.sha256("\n".join(chosen).encode()).hexdigest() == GOLDEN_1OF16_SEED0


def test_matches_the_recipe():
    names = sorted(STEMS)
    random.Random(42).shuffle(names)
    assert few_shot_subset(STEMS, 8, seed=42) == names[:20210 // 8]


def test_deterministic_and_seed_dependent():
    assert few_shot_subset(STEMS, 16, seed=7) == few_shot_subset(STEMS, 16, seed=7)
    assert few_shot_subset(STEMS, 16, seed=7) != few_shot_subset(STEMS, 16, seed=8)


def test_input_order_does_not_matter():
    shuffled = STEMS[::-1]
    random.Random(3).shuffle(shuffled)
    assert few_shot_subset(shuffled, 4, seed=5) == few_shot_subset(STEMS, 4, seed=5)


def test_subset_is_a_subset_without_duplicates():
    chosen = few_shot_subset(STEMS, 2, seed=9)
    assert len(set(chosen)) == len(chosen)
    assert set(chosen) <= set(STEMS)


def test_input_is_not_modified():
    stems = ["b", "a", "c"]
    few_shot_subset(stems, 1, seed=0)
    assert stems == ["b", "a", "c"]


def test_fraction_one_without_seed_keeps_all_sorted():
    assert few_shot_subset(["b", "c", "a"], 1, seed=None) == ["a", "b", "c"]


@pytest.mark.parametrize("seed", [0, 7, 1234567])
def test_fraction_one_is_the_sorted_list_whatever_the_seed(seed):
    """few_shot: fraction 1 (no max_image_num in the original) is never shuffled."""
    shuffled = STEMS[::-1]
    assert few_shot_subset(shuffled, 1, seed=seed) == sorted(STEMS)


def test_few_shot_without_seed_is_an_error():
    with pytest.raises(ValueError, match="needs a seed"):
        few_shot_subset(STEMS, 16, seed=None)


@pytest.mark.parametrize("fraction", [0, -2, 1.5, "16", True])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match=repr(fraction).replace("(", r"\(")):
        few_shot_subset(STEMS, fraction, seed=0)


def test_duplicate_stems_are_an_error():
    with pytest.raises(ValueError, match="duplicate stems: a"):
        few_shot_subset(["a", "b", "a"], 1, seed=0)


def test_empty_subset_is_an_error():
    with pytest.raises(ValueError, match="selects no image"):
        few_shot_subset(["a", "b"], 4, seed=0)


# ---------------------------------------------------------------- split files


def test_write_split_and_sidecar(tmp_path):
    path = tmp_path / "splits" / "1of16.txt"
    digest = write_split(path, ["x", "y"])
    assert path.read_text() == "x\ny\n"
    assert digest == hashlib.sha256(b"x\ny\n").hexdigest()
    assert (tmp_path / "splits" / "1of16.txt.sha256").read_text() == f"{digest}  1of16.txt\n"
    assert splits.read_split(path) == ["x", "y"]
    check = subprocess.run(["sha256sum", "-c", "1of16.txt.sha256"], cwd=path.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_read_split_detects_tampering(tmp_path):
    path = tmp_path / "s.txt"
    write_split(path, ["x", "y"])
    path.write_text("x\n")
    with pytest.raises(SplitError, match="does not match"):
        splits.read_split(path)


# ---------------------------------------------------------------- logs


def test_parse_log_with_mmcv_prefixes():
    assert parse_training_log(LOG) == LogFacts(seed=1234567, deterministic=False, selected=1263)


def test_parse_log_deterministic_true_without_selection():
    text = "2024-01-10 12:00:00,123 - mmseg - INFO - Set random seed to 0, deterministic: True\n"
    assert parse_training_log(text) == LogFacts(seed=0, deterministic=True, selected=None)


def test_parse_log_without_prefix():
    assert parse_training_log("Set random seed to 42, deterministic: False").seed == 42


def test_resumed_log_repeating_the_same_seed_is_fine():
    assert parse_training_log(LOG + LOG).seed == 1234567


def test_conflicting_seeds_are_an_error():
    other = LOG.replace("1234567", "7654321")
    with pytest.raises(SplitError, match="conflicting.*1234567, 7654321"):
        parse_training_log(LOG + other)


def test_missing_seed_names_the_log(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("2024-01-10 12:00:00,123 - mmseg - INFO - Randomly select 1263 images\n")
    with pytest.raises(SplitError, match=rf"{log}: no 'Set random seed to"):
        seed_from_log(log)


def test_missing_log_file(tmp_path):
    with pytest.raises(SplitError, match="nope.log: cannot read log"):
        seed_from_log(tmp_path / "nope.log")


def test_seed_from_log_checks_the_count(tmp_path):
    log = tmp_path / "fewshot_1of8.log"
    log.write_text(LOG)
    assert seed_from_log(log, fraction=16).seed == 1234567
    with pytest.raises(SplitError) as err:
        seed_from_log(log, fraction=8)
    message = str(err.value)
    assert str(log) in message and "1263" in message and "2526" in message


def test_seed_from_log_without_selection_line_warns(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("Set random seed to 5, deterministic: False\n")
    with pytest.warns(UserWarning, match="cannot confirm"):
        assert seed_from_log(log, fraction=16).seed == 5


# ---------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    from internseg.cli import main

    return main(argv)


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "ADEChallengeData2016.manifest.json"
    write_json(path, {"valid": True, "train_count": len(STEMS), "train_stems": STEMS[::-1]})
    return path


def test_cli_split_with_seed_writes_split_sidecar_and_record(manifest, tmp_path, capsys):
    out, record = tmp_path / "out" / "1of16.txt", tmp_path / "out" / "split.json"
    rc = run_cli(["split", "--manifest", str(manifest), "--fraction", "16", "--seed", "0",
                  "--out", str(out), "--record", str(record)])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == GOLDEN_1OF16_SEED0
    recorded_hex, name = (out.parent / "1of16.txt.sha256").read_text().split()
    assert name == "1of16.txt"
    assert recorded_hex == hashlib.sha256(out.read_bytes()).hexdigest()
    facts = json.loads(record.read_text())
    assert facts == {"fraction": 16, "seed": 0, "seed_source": "config", "count": 1263,
                     "total": 20210, "sha256": recorded_hex, "split": str(out)}
    assert "1263 of 20210" in capsys.readouterr().out


def test_cli_split_with_seed_from_log(manifest, tmp_path):
    log = tmp_path / "fewshot_1of16.log"
    log.write_text(LOG)
    out, record = tmp_path / "1of16.txt", tmp_path / "split.json"
    assert run_cli(["split", "--manifest", str(manifest), "--fraction", "16",
                    "--seed-from-log", str(log), "--out", str(out), "--record", str(record)]) == 0
    facts = json.loads(record.read_text())
    assert facts["seed"] == 1234567 and facts["seed_source"] == f"log:{log}"
    assert out.read_text().splitlines() == few_shot_subset(STEMS, 16, 1234567)


def test_cli_split_fraction_one_without_seed_keeps_all(manifest, tmp_path):
    out, record = tmp_path / "all.txt", tmp_path / "split.json"
    assert run_cli(["split", "--manifest", str(manifest), "--fraction", "1",
                    "--out", str(out), "--record", str(record)]) == 0
    assert out.read_text().splitlines() == STEMS
    facts = json.loads(record.read_text())
    assert facts["seed"] is None and facts["seed_source"] == "none" and facts["count"] == 20210


def test_cli_split_log_count_mismatch_returns_2(manifest, tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text(LOG)
    out = tmp_path / "1of4.txt"
    rc = run_cli(["split", "--manifest", str(manifest), "--fraction", "4",
                  "--seed-from-log", str(log), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and str(log) in err and "5052" in err
    assert not out.exists()


def test_cli_split_few_shot_without_seed_returns_2(manifest, tmp_path, capsys):
    rc = run_cli(["split", "--manifest", str(manifest), "--fraction", "16",
                  "--out", str(tmp_path / "x.txt")])
    assert rc == 2 and "needs a seed" in capsys.readouterr().err


def test_cli_split_invalid_manifest_returns_2(tmp_path, capsys):
    bad = tmp_path / "m.json"
    write_json(bad, {"valid": False, "train_stems": ["a"]})
    rc = run_cli(["split", "--manifest", str(bad), "--fraction", "1",
                  "--out", str(tmp_path / "x.txt")])
    assert rc == 2 and f"{bad}: not a valid dataset manifest" in capsys.readouterr().err


def test_cli_seed_and_log_are_exclusive(manifest, tmp_path):
    with pytest.raises(SystemExit):
        run_cli(["split", "--manifest", str(manifest), "--fraction", "16", "--seed", "1",
                 "--seed-from-log", "x.log", "--out", str(tmp_path / "x.txt")])


def test_cli_seed_from_log(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text(LOG)
    assert run_cli(["seed-from-log", str(log), "--fraction", "16"]) == 0
    assert capsys.readouterr().out == "1234567\n"
    assert run_cli(["seed-from-log", str(log), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "log": str(log), "seed": 1234567, "deterministic": False, "selected": 1263}


def test_cli_seed_from_log_errors_return_1(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text(LOG)
    assert run_cli(["seed-from-log", str(log), "--fraction", "8"]) == 2
    assert "2526" in capsys.readouterr().err
    log.write_text("nothing here\n")
    assert run_cli(["seed-from-log", str(log)]) == 2
    assert f"{log}: no 'Set random seed" in capsys.readouterr().err


def test_cli_seed_from_log_with_demo_total(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text("Set random seed to 3, deterministic: False\nRandomly select 6 images\n")
    assert run_cli(["seed-from-log", str(log), "--fraction", "16", "--total", "96"]) == 0
    assert capsys.readouterr().out == "3\n"
