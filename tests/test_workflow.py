"""The Snakemake workflow itself: schema validation, lint, format, and the whole demo DAG."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO

BIN = Path(sys.executable).parent
EXPERIMENTS = ["fewshot_1of16", "fewshot_1of8", "fewshot_1of4", "fewshot_1of2",
               "fewshot_1of1", "linear_probing", "head_tuning", "full_tuning"]


def workflow_copy(dest: Path) -> Path:
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, dest / name)
    for name in ("workflow", "profiles", "envs"):
        shutil.copytree(REPO / name, dest / name)
    return dest


# the whole demo DAG (53 jobs, released-checkpoint evaluations included) takes about 25 minutes
# on 2 cores; the limit only catches a hang
def snakemake(cwd, *args, timeout=3600):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.parametrize("override,named", [
    ("preset=tiny", "tiny"),
    ("run=[fewshot_1of3]", "fewshot_1of3"),
    ("colour=blue", "colour"),
])
def test_bad_config_stops_with_its_name(tmp_path, override, named):
    result = snakemake(workflow_copy(tmp_path), "-n", "--config", override)
    assert result.returncode != 0
    assert named in result.stderr + result.stdout


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    copy = workflow_copy(tmp_path)
    text = (copy / "config.yaml").read_text().splitlines()
    first_key = next(i for i, line in enumerate(text) if line.startswith("run:"))
    text[first_key] = "run: [fewshot_1of16, linear_probing"  # bracket never closed
    (copy / "config.yaml").write_text("\n".join(text) + "\n")
    result = snakemake(copy, "-n")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert f"while parsing a flow sequence at line {first_key + 1}" in out, out[-2000:]
    assert "config.yaml:" in out


def test_a_run_without_an_experiment_entry_is_named(tmp_path):
    import yaml

    copy = workflow_copy(tmp_path)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    del cfg["experiments"]["fewshot_1of8"]
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    result = snakemake(copy, "-n", "--config", "run=[fewshot_1of8]")
    assert result.returncode != 0
    assert "run lists fewshot_1of8, which have no entry under experiments" in (
        result.stdout + result.stderr)


def test_unpinned_hub_revision_is_refused_by_the_schema(tmp_path):
    result = snakemake(workflow_copy(tmp_path), "-n", "--config", "hub={'revision': 'main'}")
    assert result.returncode != 0


def test_a_hub_source_without_revision_is_refused_at_parse_time(tmp_path):
    wf = workflow_copy(tmp_path)
    config = (wf / "config.yaml").read_text()
    (wf / "config.yaml").write_text(config.replace(
        "revision: 98a13192e85078dc5806b39d7ebf5db0b9b12395", "revision: null"))
    result = snakemake(wf, "-n", "--config", "preset=paper")
    assert result.returncode != 0
    assert "hub.revision is null" in result.stdout + result.stderr
    assert snakemake(wf, "-n").returncode == 0  # the demo reads a local folder


def test_lint_is_clean():
    result = snakemake(REPO, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "good condition" in result.stdout + result.stderr


def test_snakefmt_is_clean():
    result = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_paper_preset_needs_the_archive_and_plans_the_real_chain(tmp_path):
    wf = workflow_copy(tmp_path)
    missing = snakemake(wf, "-n", "--config", "preset=paper")
    assert missing.returncode != 0
    assert "resources/paper/ADEChallengeData2016.zip" in missing.stdout + missing.stderr
    (wf / "resources/paper").mkdir(parents=True)
    (wf / "resources/paper/ADEChallengeData2016.zip").touch()
    result = snakemake(wf, "-n", "--config", "preset=paper")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    for rule in ("fetch_weights", "fetch_log", "prepare_ade20k", "split", "train",
                 "evaluate", "aggregate"):
        assert rule in out
    assert "make_demo" not in out
    assert "--seed-from-log resources/paper/published/" in out
    # the table reads the original's validation mIoU from the same logs
    assert ("--published-log fewshot_1of16=resources/paper/published/"
            "linear_intern_vit_6b_504_5k_ade20k_bs16_lr4e-5_1of16.log") in out
    assert "--sha256 b5ecc194f751cf" in out
    assert "--revision 98a13192e85078dc5806b39d7ebf5db0b9b12395" in out
    # an experiment's config and its whole _base_ chain are inputs of its training
    train = out.split("rule train:")[1].split("rule ")[0]
    assert "configs/paper/" in train and "configs/_base_/default_runtime.py" in train


def paper_workflow(tmp_path):
    wf = workflow_copy(tmp_path)
    (wf / "resources/paper").mkdir(parents=True)
    (wf / "resources/paper/ADEChallengeData2016.zip").touch()
    return wf


def test_released_target_fetches_pinned_files_and_tests_them_without_training(tmp_path):
    result = snakemake(paper_workflow(tmp_path), "-n", "-p", "released_metrics",
                       "--config", "preset=paper")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "rule train:" not in out and "rule aggregate:" not in out
    assert out.count("rule fetch_released:") == out.count("rule evaluate_released:") == 8
    # the released files are checked against their pins like the trunk
    assert ("internseg fetch upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.pth"
            " --out resources/paper/published/upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5"
            "_frozen.pth --repo-id OpenGVLab/InternVL"
            " --revision 98a13192e85078dc5806b39d7ebf5db0b9b12395 --sha256 eb3e92b685f8") in out
    # a head-only file takes the trunk from the pretrained file, on the evaluation resources
    assert ("internseg test paper/head_tuning resources/paper/published/upernet_intern_vit_6b"
            "_504_80k_ade20k_bs16_lr4e-5_frozen.pth --out results/released/head_tuning/"
            "metrics.json --data-root resources/paper/ade/ADEChallengeData2016 --pretrained"
            " resources/paper/weights/intern_vit_6b_224px.pth") in out


def test_released_column_is_off_in_the_paper_preset_unless_asked(tmp_path):
    wf = paper_workflow(tmp_path)
    off = snakemake(wf, "-n", "-p", "all", "--config", "preset=paper")
    assert off.returncode == 0, off.stderr
    assert "rule evaluate_released:" not in off.stdout
    (wf / "on.yaml").write_text("presets:\n  paper:\n    evaluate_released: true\n")
    on = snakemake(wf, "-n", "-p", "all", "--configfile", "on.yaml", "--config", "preset=paper")
    assert on.returncode == 0, on.stderr
    assert on.stdout.count("rule evaluate_released:") == 8
    assert ("--released-metrics fewshot_1of16=results/released/fewshot_1of16/metrics.json"
            in on.stdout)


def test_demo_plans_released_stand_ins_through_the_same_rule(tmp_path):
    result = snakemake(workflow_copy(tmp_path), "-n", "-p", "all")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert out.count("rule make_demo_released:") == out.count("rule evaluate_released:") == 8
    assert ("internseg make-demo-released linear_probing --pretrained resources/demo/hub/"
            "intern_vit_6b_224px.pth --out resources/demo/hub/linear_intern_vit_6b_504_80k_"
            "ade20k_bs16_lr4e-5_frozen.pth") in out
    assert ("internseg fetch linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.pth --out "
            "resources/demo/published/linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen"
            ".pth --repo-id OpenGVLab/InternVL --revision 98a13192e85078dc5806b39d7ebf5db0b9b12395"
            " --local-dir resources/demo/hub") in out
    assert "--released-metrics fewshot_1of16=results/released/fewshot_1of16/metrics.json" in out


def constant_predictor_miou(label_dir: Path) -> float:
    """mIoU of the best single-class prediction, scored the way mmseg scores (0 ignored)."""
    from PIL import Image

    counts = np.zeros(151)
    for png in label_dir.glob("*.png"):
        counts += np.bincount(np.asarray(Image.open(png)).ravel(), minlength=151)[:151]
    present = counts[1:]
    return 100 * present.max() / present.sum() / (present > 0).sum()


@pytest.mark.workflow
def test_demo_dag_end_to_end(tmp_path):
    wf = workflow_copy(tmp_path)
    result = snakemake(wf, "--cores", "2", "all")
    assert result.returncode == 0, result.stderr[-4000:]

    with open(wf / "results" / "table.csv") as f:
        rows = {r["experiment"]: r for r in csv.DictReader(f)}
    assert list(rows) == EXPERIMENTS
    paper = {"fewshot_1of16": 46.5, "fewshot_1of1": 57.2, "linear_probing": 47.2,
             "full_tuning": 58.9}
    for name, value in paper.items():
        assert float(rows[name]["paper_mIoU"]) == value
    sizes = {"fewshot_1of16": 6, "fewshot_1of8": 12, "fewshot_1of4": 24, "fewshot_1of2": 48,
             "fewshot_1of1": 96, "head_tuning": 96}
    for name, n in sizes.items():
        assert int(rows[name]["train_images"]) == n
    assert rows["head_tuning"]["trunk"] == "frozen" and rows["head_tuning"]["head"] == "upernet"
    assert rows["full_tuning"]["trunk"] == "trained"
    assert rows["fewshot_1of16"]["seed_source"] == "config"
    # the released-checkpoint rule ran on the demo's stand-ins (random heads: no value check)
    for name, row in rows.items():
        assert 0 <= float(row["released_mIoU"]) <= 100, name

    baseline = constant_predictor_miou(
        wf / "resources/demo/ade/ADEChallengeData2016/annotations/validation")
    for name, row in rows.items():
        ours = float(row["our_mIoU"])
        assert float(row["difference"]) == pytest.approx(ours - float(row["paper_mIoU"]),
                                                         abs=0.011)
        assert ours > baseline, (name, ours, baseline)
    assert float(rows["linear_probing"]["our_mIoU"]) > 3 * baseline

    for name in EXPERIMENTS:
        run = wf / "results" / "runs" / name
        for f in ("metrics.json", "split.txt", "split.txt.sha256", "config.py", "train.log",
                  "final.pth"):
            assert (run / f).is_file(), (name, f)
    for f in ("table.md", "miou_vs_fraction.png", "training_curves.png"):
        assert (wf / "results" / f).stat().st_size > 0

    again = snakemake(wf, "--cores", "2", "-n", "all")
    assert "Nothing to be done" in again.stdout + again.stderr

    # a changed seed is a changed param: that experiment's split, training and evaluation
    # rerun (and the table), nothing else
    # (a file: `--config` turns the nested value into the string '1', which the schema refuses)
    config = yaml.safe_load((wf / "config.yaml").read_text())
    config["presets"]["demo"]["seeds"]["fewshot_1of16"] = 1
    (wf / "reseeded.yaml").write_text(yaml.safe_dump(config))
    reseeded = snakemake(wf, "--cores", "2", "-n", "all", "--configfile", "reseeded.yaml")
    planned = reseeded.stdout
    assert reseeded.returncode == 0, reseeded.stderr
    for rule in ("split", "train", "evaluate"):
        jobs = planned.split(f"rule {rule}:")[1:]
        assert len(jobs) == 1 and "fewshot_1of16" in jobs[0].split("rule ")[0], rule
    assert "rule aggregate:" in planned

    # targets before --forcerun, which takes every path that follows it
    one = snakemake(wf, "--cores", "2", "-n", "results/runs/fewshot_1of16/metrics.json",
                    "--forcerun", "results/runs/fewshot_1of16/final.pth")
    planned = one.stdout
    assert "rule train:" in planned and "rule evaluate:" in planned
    assert "fewshot_1of8" not in planned and "rule aggregate" not in planned
