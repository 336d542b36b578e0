"""The Snakemake workflow itself: schema validation, lint, format, and the whole demo DAG."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO
from internseg.records import record_of
from internseg.registry import experiments

BIN = Path(sys.executable).parent
PAPER = experiments("paper")
TRUNK_224 = "intern_vit_6b_224px"
RELEASED = [name for name in PAPER
            if (r := record_of(TRUNK_224, name, "ade20k")) and r.released_checkpoint]


def workflow_copy(dest: Path, with_package: bool = False) -> Path:
    """The workflow's files in ``dest``; ``with_package`` also copies ``core/``, which the
    workflow then imports (its registry) instead of the installed package."""
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, dest / name)
    for name in ("workflow", "profiles", "envs", *(["core"] if with_package else [])):
        shutil.copytree(REPO / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


# the end-to-end test's subset of the demo takes about 2 minutes on 2 cores; the limit only
# catches a hang
def snakemake(cwd, *args, timeout=1800):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    if (Path(cwd) / "core").is_dir():
        env["PYTHONPATH"] = str(Path(cwd) / "core")
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


def test_a_key_given_twice_in_config_yaml_is_named_with_both_lines(tmp_path):
    """PyYAML (and Snakemake's loader) would keep the second value silently."""
    copy = workflow_copy(tmp_path)
    text = (copy / "config.yaml").read_text().splitlines()
    first = next(i for i, line in enumerate(text) if line.startswith("preset:"))
    (copy / "config.yaml").write_text("\n".join([*text, "preset: paper"]) + "\n")
    result = snakemake(copy, "-n")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert (f"config.yaml:{len(text) + 1}:1: key 'preset' given twice (first on line "
            f"{first + 1})") in out, out[-2000:]


def test_an_unknown_key_is_one_line_naming_it_and_what_may_go_there(tmp_path):
    copy = workflow_copy(tmp_path)
    (copy / "colour.yaml").write_text("presets:\n  demo:\n    colour: blue\n")
    result = snakemake(copy, "-n", "--configfile", "colour.yaml")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("config.yaml: presets.demo: unknown key 'colour' (allowed: weights_local_dir, "
            "verify_hub_pins,") in out, out[-2000:]
    assert len(out.splitlines()) < 10, out  # Snakemake's `validate` prints the whole schema


def test_a_dataset_block_of_0_2_says_where_it_went():
    """A config.yaml written for 0.2.0 (presets.<p>.ade20k) names the block it now belongs in."""
    from internseg.errors import InputError
    from internseg.schema import check_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["presets"]["paper"]["ade20k"] = {"archive": "x/ADEChallengeData2016.zip"}
    with pytest.raises(InputError) as err:
        check_config(config, REPO / "workflow/schemas/config.schema.yaml")
    assert str(err.value).endswith(
        "; ade20k: moved to data.ade20k in 0.3.0 (archive: X/ADEChallengeData2016.zip is "
        "sources: X; CHANGELOG.md)")


@pytest.mark.parametrize("setting,named", [
    ("drift:\n  tolerance: .nan\n", "drift.tolerance: nan"),
    ("presets:\n  demo:\n    train:\n      mem_mb: .inf\n", "presets.demo.train.mem_mb: inf"),
])
def test_a_number_that_is_not_finite_is_refused_at_parse(tmp_path, setting, named):
    """NaN passes every bound of the schema: every paper train job was then refused."""
    wf = workflow_copy(tmp_path)
    (wf / "nan.yaml").write_text(setting)
    result = snakemake(wf, "-n", "--configfile", "nan.yaml")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"config.yaml: {named} is not a finite number" in out, out[-2000:]


def test_an_unregistered_experiment_is_named_with_the_registered_ones(tmp_path):
    result = snakemake(workflow_copy(tmp_path), "-n", "--config", "run=[fewshot_1of3]")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "core/internseg/configs/demo/): run lists fewshot_1of3, which have no config" in out
    assert all(name in out.split("registered:")[1] for name in PAPER)


def test_a_run_that_cannot_move_to_a_chosen_trunk_is_refused_before_any_job(tmp_path):
    wf = workflow_copy(tmp_path)
    (wf / "b.yaml").write_text("presets:\n  demo:\n    trunks: [intern_vit_tiny_demo_b]\n")
    result = snakemake(wf, "-n", "--configfile", "b.yaml", "--config", "run=[adapter_tuning]")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "configs/demo/adapter_tuning.py: --trunk intern_vit_tiny_demo_b" in out
    assert "interaction ranges" in out


def test_a_run_whose_traced_peak_exceeds_the_gpus_is_refused_before_any_job(tmp_path):
    from internseg.engine.rehearse import rehearse_runs
    from internseg.registry import Run

    wf = workflow_copy(tmp_path, with_package=True)
    run = Run("head_tuning", "intern_vit_tiny_demo", "ade20k")
    [trace] = rehearse_runs("demo", [run], 1, wf / "benchmarks/rehearsal/demo").values()
    result = snakemake(wf, "-n", "--config", "run=[head_tuning]", "gpu_memory_gb=0.001")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert (f"run {run.id} does not fit its GPUs: traced peak {trace.peak_bytes / 1e9:.3g} GB "
            f"per GPU (train) > 0.001 GB, biggest {trace.biggest_kind}") in out


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


@pytest.mark.parametrize("block, line", [
    ("coco_stuff164k:\n        download: true",
     "config.yaml: presets.demo.data.coco_stuff164k: pinned: false (synthetic stand-ins, no "
     "official pins) and download: true (the official files) contradict each other"),
    ("cityscapes: {}",
     "config.yaml: presets.demo.data.cityscapes: not a registered dataset (ade20k, "
     "coco_stuff164k)"),
    ("ade20k:\n        pins: {ADE.zip: " + "a" * 40 + "}",
     "config.yaml: presets.demo.data.ade20k: pins: ADE.zip is not a file of ade20k "
     "(ADEChallengeData2016.zip)"),
])
def test_dataset_settings_are_refused_at_parse_by_their_keys(tmp_path, block, line):
    wf = workflow_copy(tmp_path)
    (wf / "dl.yaml").write_text(f"presets:\n  demo:\n    data:\n      {block}\n")
    result = snakemake(wf, "-n", "--configfile", "dl.yaml")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    (said,) = [text for text in out.splitlines() if text.startswith("config.yaml:")]
    assert said.startswith(line), out


def test_a_read_only_results_folder_is_refused_before_any_job(tmp_path):
    """Snakemake made the first job's output folder only after earlier jobs ran, and then
    died with its PermissionError traceback."""
    wf = workflow_copy(tmp_path)
    (wf / "results").symlink_to("/sys")  # not writable, even for root
    result = snakemake(wf, "-n")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in out, out[-2000:]
    assert f"output folder results/demo: cannot write in {wf / 'results'} (" in out, out[-2000:]
    assert "Building DAG" not in out


def test_a_replaced_ade20k_zip_is_extracted_again_through_the_workflow(tmp_path):
    """Snakemake deletes the manifest (the rule's output) before preparing again: the tree's
    own record of its zip makes the new zip's images replace the old ones, not a validation
    of the old tree in place."""
    import zipfile

    from internseg.demo import write_demo_zip

    wf = workflow_copy(tmp_path)
    (wf / "small.yaml").write_text(
        "presets:\n  demo:\n    data:\n      ade20k:\n        train_count: 4\n"
        "        val_count: 2\n")
    target = "resources/demo/ade20k/manifest.json"
    first = snakemake(wf, "--cores", "1", target, "--configfile", "small.yaml")
    assert first.returncode == 0, first.stderr[-3000:]
    archive = wf / "resources/demo/ADEChallengeData2016.zip"
    write_demo_zip(archive, n_train=4, n_val=2, seed=1)  # another zip at the same path
    name = "ADEChallengeData2016/images/training/ADE_train_00000001.jpg"
    with zipfile.ZipFile(archive) as zf:
        new_image = zf.read(name)
    tree_image = wf / "resources/demo/ade20k" / name
    assert tree_image.read_bytes() != new_image
    again = snakemake(wf, "--cores", "1", target, "--configfile", "small.yaml")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "rule prepare_ade20k:" in again.stdout + again.stderr
    assert tree_image.read_bytes() == new_image
    log = (wf / "resources/demo/logs/prepare_ade20k.log").read_text()
    assert "building it again" in log and "re-extracted" in log, log[-2000:]


def test_lint_is_clean():
    result = snakemake(REPO, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "good condition" in result.stdout + result.stderr


def test_snakefmt_is_clean():
    result = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def place_paper_data(wf: Path) -> Path:
    """Empty stand-ins for the zips the paper preset's user places (a dry run reads none)."""
    zips = wf / "resources/paper/coco_stuff164k_zips"
    zips.mkdir(parents=True)
    for name in ("train2017.zip", "val2017.zip", "stuffthingmaps_trainval2017.zip"):
        (zips / name).touch()
    (wf / "resources/paper/ADEChallengeData2016.zip").touch()
    return wf


def test_paper_preset_without_its_zips_stops_at_parse_with_one_line(tmp_path):
    wf = workflow_copy(tmp_path)
    missing = snakemake(wf, "-n", "table15", "--config", "preset=paper")
    assert missing.returncode != 0
    lines = [line for line in (missing.stdout + missing.stderr).splitlines()
             if line.startswith("config.yaml:")]
    assert len(lines) == 1
    assert ("config.yaml: ADEChallengeData2016.zip not found in resources/paper/: place it "
            "there (presets.paper.data.ade20k.sources), or set "
            "presets.paper.data.ade20k.download: true to download it; ") in lines[0]
    assert "presets.paper.data.coco_stuff164k.download: true" in lines[0]
    assert "MissingInputException" not in missing.stdout + missing.stderr
    # with `download`, the preparing jobs fetch them: nothing is missing at parse time
    (wf / "dl.yaml").write_text("presets:\n  paper:\n    data:\n      ade20k: {download: true}\n"
                                "      coco_stuff164k: {download: true}\n")
    fetching = snakemake(wf, "-n", "-p", "table15", "--configfile", "dl.yaml",
                         "--config", "preset=paper")
    assert fetching.returncode == 0, fetching.stderr[-3000:]
    assert ("internseg download ade20k --out resources/paper/ADEChallengeData2016.zip"
            " > ") in fetching.stdout
    for name in ("train2017.zip", "val2017.zip", "stuffthingmaps_trainval2017.zip"):
        assert (f"internseg download coco_stuff164k --out resources/paper/coco_stuff164k_zips/"
                f"{name} > ") in fetching.stdout
    # the preparation is the same job as with placed files
    assert ("internseg prepare ade20k --train-count 20210 --val-count 2000 --source "
            "resources/paper --data-root resources/paper/ade20k") in fetching.stdout


def test_a_download_job_run_again_keeps_the_file_it_stands_for(tmp_path):
    """Snakemake deletes a job's output before it runs the job again (here: its pins changed):
    the download job's output is a receipt beside the zip, so a zip already there stays."""
    wf = place_paper_data(workflow_copy(tmp_path))
    zip_path = wf / "resources/paper/ADEChallengeData2016.zip"
    zip_path.write_bytes(b"the zip a user placed")
    receipt = "resources/paper/.ADEChallengeData2016.zip.downloaded"
    log = wf / "resources/paper/logs/download_ade20k/ADEChallengeData2016.zip.log"
    for pins in ("{}", "{ADEChallengeData2016.zip: " + "a" * 40 + "}"):
        (wf / "dl.yaml").write_text("presets:\n  paper:\n    data:\n      ade20k: "
                                    f"{{download: true, pins: {pins}}}\n")
        done = snakemake(wf, "--cores", "1", receipt, "--configfile", "dl.yaml",
                         "--config", "preset=paper")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "rule download_ade20k:" in done.stdout + done.stderr  # ran, the second time too
        assert "already there; not downloaded again" in log.read_text()
        assert zip_path.read_bytes() == b"the zip a user placed"


def test_paper_preset_plans_the_real_chain(tmp_path):
    wf = place_paper_data(workflow_copy(tmp_path))
    result = snakemake(wf, "-n", "--config", "preset=paper")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    for rule in ("fetch_weights", "fetch_log", "prepare_ade20k", "split", "train",
                 "evaluate", "aggregate"):
        assert rule in out
    assert "make_demo" not in out
    assert "--seed-from-log resources/paper/published/" in out
    # the table reads the original's validation mIoU from the same logs
    assert ("--published-log ade20k/intern_vit_6b_224px/fewshot_1of16=resources/paper/"
            "published/linear_intern_vit_6b_504_5k_ade20k_bs16_lr4e-5_1of16.log") in out
    assert "--sha256 b5ecc194f751cf" in out
    assert "--revision 98a13192e85078dc5806b39d7ebf5db0b9b12395" in out
    # an experiment's config and its whole _base_ chain are inputs of its training
    train = out.split("rule train:")[1].split("rule ")[0]
    assert "configs/paper/" in train and "configs/_base_/default_runtime.py" in train
    # each training is compared with the original's log of the same run as it trains
    assert ("--reference-log resources/paper/published/"
            "linear_intern_vit_6b_504_5k_ade20k_bs16_lr4e-5_1of16.log") in out
    assert "--stop-on-drift" not in out  # config.yaml's drift.stop is off


def paper_workflow(tmp_path):
    return place_paper_data(workflow_copy(tmp_path))


def test_released_target_fetches_pinned_files_and_tests_them_without_training(tmp_path):
    result = snakemake(paper_workflow(tmp_path), "-n", "-p", "released_metrics",
                       "--config", "preset=paper")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "rule train:" not in out and "rule aggregate:" not in out
    assert out.count("rule fetch_released:") == out.count("rule evaluate_released:") == len(
        RELEASED)
    # the released files are checked against their pins like the trunk
    assert ("internseg fetch upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.pth"
            " --out resources/paper/published/upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5"
            "_frozen.pth --repo-id OpenGVLab/InternVL"
            " --revision 98a13192e85078dc5806b39d7ebf5db0b9b12395 --sha256 eb3e92b685f8") in out
    # a head-only file takes the trunk from the pretrained file, on the evaluation resources
    assert ("internseg test paper/head_tuning resources/paper/published/upernet_intern_vit_6b"
            "_504_80k_ade20k_bs16_lr4e-5_frozen.pth --trunk intern_vit_6b_224px --dataset ade20k"
            " --out results/paper/released/ade20k/intern_vit_6b_224px/head_tuning/metrics.json"
            " --data-root resources/paper/ade20k/ADEChallengeData2016 --pretrained"
            " resources/paper/weights/intern_vit_6b_224px.pth") in out


def test_released_column_is_off_in_the_paper_preset_unless_asked(tmp_path):
    wf = paper_workflow(tmp_path)
    off = snakemake(wf, "-n", "-p", "all", "--config", "preset=paper")
    assert off.returncode == 0, off.stderr
    assert "rule evaluate_released:" not in off.stdout
    (wf / "on.yaml").write_text("presets:\n  paper:\n    evaluate_released: true\n")
    on = snakemake(wf, "-n", "-p", "all", "--configfile", "on.yaml", "--config", "preset=paper")
    assert on.returncode == 0, on.stderr
    assert on.stdout.count("rule evaluate_released:") == len(RELEASED)
    assert ("--released-metrics ade20k/intern_vit_6b_224px/fewshot_1of16=results/paper/"
            "released/ade20k/intern_vit_6b_224px/fewshot_1of16/metrics.json" in on.stdout)


def test_demo_plans_released_stand_ins_through_the_same_rule(tmp_path):
    result = snakemake(workflow_copy(tmp_path), "-n", "-p", "all")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert out.count("rule make_demo_released:") == out.count("rule evaluate_released:") == len(
        RELEASED)
    # the demo's trunk stands for the 224px one: its runs are compared with those records
    assert ("internseg make-demo-released linear_probing --trunk intern_vit_tiny_demo"
            " --dataset ade20k --pretrained resources/demo/weights/intern_vit_tiny_demo.pth"
            " --out resources/demo/hub/linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen"
            ".pth") in out
    assert ("internseg fetch linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.pth --out "
            "resources/demo/published/linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen"
            ".pth --repo-id OpenGVLab/InternVL --revision 98a13192e85078dc5806b39d7ebf5db0b9b12395"
            " --local-dir resources/demo/hub") in out
    assert ("--released-metrics ade20k/intern_vit_tiny_demo/fewshot_1of16=results/demo/"
            "released/ade20k/intern_vit_tiny_demo/fewshot_1of16/metrics.json") in out


def constant_predictor_miou(label_dir: Path) -> float:
    """mIoU of the best single-class prediction, scored the way mmseg scores (0 ignored)."""
    from PIL import Image

    counts = np.zeros(151)
    for png in label_dir.glob("*.png"):
        counts += np.bincount(np.asarray(Image.open(png)).ravel(), minlength=151)[:151]
    present = counts[1:]
    return 100 * present.max() / present.sum() / (present > 0).sum()


# What `make test` runs of the demo: a trained and a frozen trunk, a linear and a UperNet
# head, at a short budget. The whole demo at its own budget is `make demo`, and
# `make test-all` (CI) checks what every row learns.
SUBSET = ["fewshot_1of16", "linear_probing", "head_tuning"]
SHORT = {"train_cfg.max_iters": 12}


DEMO_TRUNK = "intern_vit_tiny_demo"


def run_demo(tmp_path, run, cfg_options=None, targets=("all",), **demo_settings):
    """The demo workflow on `run` (and the other targets), with the demo preset's settings
    changed as given; the table's rows by run id."""
    wf = workflow_copy(tmp_path)
    config = yaml.safe_load((wf / "config.yaml").read_text())
    config["run"] = run
    if cfg_options:
        config["presets"]["demo"]["cfg_options"] = cfg_options
    config["presets"]["demo"].update(demo_settings)
    (wf / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(wf, "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-4000:]
    with open(wf / "results/demo/table.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    return wf, rows


def beats_constant_predictor(wf, rows, names):
    baseline = constant_predictor_miou(
        wf / "resources/demo/ade20k/ADEChallengeData2016/annotations/validation")
    for name in names:
        ours = float(rows[f"ade20k/{DEMO_TRUNK}/{name}"]["our_mIoU"])
        assert ours > baseline, (name, ours, baseline)
    return baseline


def embedded_files(html: Path) -> dict[str, bytes]:
    """The files a Snakemake report embeds, by name: data URIs
    ``data:<mime>;charset=<enc>;filename=<name>;base64,<data>`` (snakemake.report.common)."""
    import base64
    import re

    found = re.findall(r"data:[^;\"']+;charset=[^;\"']+;filename=([^;\"']+);base64,"
                       r"([A-Za-z0-9+/=]+)", html.read_text())
    return {name: base64.b64decode(data) for name, data in found}


def check_table15(wf: Path) -> None:
    """The Table 15 view of a one-trunk grid on both datasets: every cell measured once, the
    averages and gaps from them, the records of the trunk the demo's stands for beside them;
    COCO-Stuff's runs ran on the converted dataset."""
    from internseg.records import table15_printed

    with open(wf / "results/demo/table15.csv") as f:
        cells = {r["column"]: r for r in csv.DictReader(f) if r["trunk"] == DEMO_TRUNK}
    assert len(cells) == 11 and all(c["n"] == "1" for c in cells.values()), cells
    ours = {k: float(c["our_mIoU"]) for k, c in cells.items()}
    for regime in ("LP", "HT", "FT"):
        mean = (ours[f"{regime}_ade20k"] + ours[f"{regime}_coco_stuff164k"]) / 2
        assert ours[f"{regime}_avg"] == pytest.approx(mean, abs=0.006)
    assert ours["delta2"] == pytest.approx(ours["FT_avg"] - ours["LP_avg"], abs=0.011)
    printed = table15_printed()[TRUNK_224]
    assert float(cells["delta1"]["paper_mIoU"]) == printed["delta1"]
    assert float(cells["HT_coco_stuff164k"]["paper_mIoU"]) == record_of(
        TRUNK_224, "head_tuning", "coco_stuff164k").miou
    assert "| intern_vit_tiny_demo |" in (wf / "results/demo/table15.md").read_text()
    from internseg.config import load_config

    coco = wf / "results/demo/runs/coco_stuff164k" / DEMO_TRUNK / "head_tuning"
    ran = load_config(coco / "config.py", import_modules=False)
    assert ran.train_dataloader.dataset.type == "COCOStuffDataset"
    assert ran.model.decode_head.num_classes == ran.model.auxiliary_head.num_classes == 171
    assert json.loads((coco / "metrics.json").read_text())["num_images"] == 12
    manifest = json.loads((wf / "resources/demo/coco_stuff164k/manifest.json").read_text())
    assert manifest["conversion"]["images_per_s"] > 0 and manifest["train_count"] == 48


def check_report(wf: Path, rows: dict) -> None:
    """`snakemake --report` stands alone: the table with its verdicts, every plot, the plan,
    and each run's provenance."""
    built = snakemake(wf, "--report", "report.html")
    assert built.returncode == 0, built.stderr[-3000:]
    embedded = embedded_files(wf / "report.html")
    assert {"table.csv", "summary.csv", "provenance.csv", "plan.md", "miou_vs_fraction.png",
            "trunk_regimes.png", "training_curves.png"} <= set(embedded), sorted(embedded)
    for name in ("miou_vs_fraction.png", "trunk_regimes.png", "training_curves.png"):
        assert embedded[name][:4] == b"\x89PNG", name
    summary = list(csv.DictReader(embedded["summary.csv"].decode().splitlines()))
    assert {r["verdict"] for r in summary} <= {"within", "outside"} and len(summary) == len(rows)
    provenance = {r["run"]: r for r in csv.DictReader(
        embedded["provenance.csv"].decode().splitlines())}
    assert list(provenance) == list(rows)
    for run_id, record in provenance.items():
        written = json.loads((wf / "results/demo/runs" / run_id / "provenance.json").read_text())
        assert record["run_identity"] == written["run_identity"] != ""
        assert record["split_sha256"] == (
            wf / "results/demo/runs" / run_id / "split.txt.sha256").read_text().split()[0]
        assert record["git_commit"] and record["device"].startswith("cpu")
    # the plan prices every run of the preset's targets: `all`'s rows and the Table 15 grid
    from internseg.registry import experiments as registered, table15_runs

    config = yaml.safe_load((wf / "config.yaml").read_text())["presets"]["demo"]["table15"]
    grid = table15_runs(registered("demo"), config["trunks"], config["datasets"])
    plan = embedded["plan.md"].decode()
    assert all(f"| {run_id} |" in plan for run_id in {*rows, *grid})
    assert f"{len({*rows, *grid})} runs:" in plan


@pytest.mark.workflow
def test_demo_dag_end_to_end(tmp_path):
    """The rows of `all` and a Table 15 grid on both datasets (COCO-Stuff prepared from its
    zips by the workflow), the report, and what reruns."""
    grid = {"trunks": [DEMO_TRUNK], "datasets": ["ade20k", "coco_stuff164k"]}
    wf, rows = run_demo(tmp_path, SUBSET, SHORT, targets=("all", "table15"), table15=grid)
    assert list(rows) == [f"ade20k/{DEMO_TRUNK}/{name}" for name in SUBSET]
    for run_id, row in rows.items():
        name = row["experiment"]
        exp = PAPER[name]
        # the demo trunk stands for the 224px one: its runs sit beside that trunk's records
        paper = record_of(TRUNK_224, name, "ade20k").miou
        assert (row["setting"], float(row["paper_mIoU"]), row["fraction"]) == (
            exp.setting, paper, f"1/{exp.fraction}")
        assert (row["head"], row["trunk_mode"]) == (exp.head, exp.trunk_mode)
        assert row["trunk"] == DEMO_TRUNK and row["train_seed"] == row["subset_seed"] == "0"
        assert int(row["iterations"]) == SHORT["train_cfg.max_iters"]
        assert int(row["train_images"]) == 96 // exp.fraction
        assert row["seed_source"] == "config"
        ours = float(row["our_mIoU"])
        # no published log read in the demo: the InternVL 1.0 rule compares the best validation
        assert (row["compared"], row["compared_mIoU"]) == ("best validation",
                                                           row["best_val_mIoU"])
        assert float(row["difference"]) == pytest.approx(
            float(row["compared_mIoU"]) - paper, abs=0.011)
        # the released-checkpoint rule ran on the demo's stand-ins (random heads: no value)
        assert 0 <= float(row["released_mIoU"]) <= 100, name
        assert 0 < ours <= 100
        run = wf / "results/demo/runs" / run_id
        for f in ("metrics.json", "split.txt", "split.txt.sha256", "config.py", "train.log",
                  "final.pth"):
            assert (run / f).is_file(), (name, f)
    for f in ("table.md", "summary.csv", "miou_vs_fraction.png", "trunk_regimes.png",
              "training_curves.png", "table15.png"):
        assert (wf / "results/demo" / f).stat().st_size > 0

    check_table15(wf)
    again = snakemake(wf, "--cores", "2", "-n", "all", "table15")
    assert "Nothing to be done" in again.stdout + again.stderr
    check_report(wf, rows)

    # a changed seed is a changed param: that experiment's split, training and evaluation
    # rerun (and the table), nothing else
    # (a file: `--config` turns the nested value into the string '1', which the schema refuses)
    config = yaml.safe_load((wf / "config.yaml").read_text())
    config["presets"]["demo"]["seeds"] = {"fewshot_1of16": 1}
    (wf / "reseeded.yaml").write_text(yaml.safe_dump(config))
    reseeded = snakemake(wf, "--cores", "2", "-n", "all", "--configfile", "reseeded.yaml")
    planned = reseeded.stdout
    assert reseeded.returncode == 0, reseeded.stderr
    for rule in ("split", "train", "evaluate"):
        jobs = planned.split(f"rule {rule}:")[1:]
        assert len(jobs) == 1 and "fewshot_1of16" in jobs[0].split("rule ")[0], rule
    assert "rule aggregate:" in planned

    # a changed budget retrains every run and re-evaluates the released files, nothing more
    config["presets"]["demo"]["seeds"] = {}
    config["presets"]["demo"]["cfg_options"] = {"train_cfg.max_iters": 30}
    (wf / "longer.yaml").write_text(yaml.safe_dump(config))
    longer = snakemake(wf, "--cores", "2", "-n", "all", "--configfile", "longer.yaml")
    assert longer.returncode == 0, longer.stderr
    assert longer.stdout.count("rule train:") == len(SUBSET)
    assert "rule split:" not in longer.stdout and "rule make_demo" not in longer.stdout

    # targets before --forcerun, which takes every path that follows it
    one_run = f"results/demo/runs/ade20k/{DEMO_TRUNK}/fewshot_1of16"
    one = snakemake(wf, "--cores", "2", "-n", f"{one_run}/metrics.json",
                    "--forcerun", f"{one_run}/final.pth")
    planned = one.stdout
    assert "rule train:" in planned and "rule evaluate:" in planned
    assert "fewshot_1of8" not in planned and "rule aggregate" not in planned


@pytest.mark.slow
def test_demo_with_two_trunks_and_two_seeds(tmp_path):
    """`trunks` and `train_seeds` of a preset: one run per trunk and seed, the table's rows
    per trunk with mean ± std over the seeds, the trunk x regime grid and plot."""
    trunks = [DEMO_TRUNK, "intern_vit_tiny_demo_b"]
    wf, rows = run_demo(tmp_path, ["linear_probing"], {"train_cfg.max_iters": 6},
                        trunks=trunks, train_seeds=[0, 1])
    assert list(rows) == [f"ade20k/{t}/linear_probing/seed{s}" for t in trunks for s in (0, 1)]
    assert {(r["trunk"], r["train_seed"], r["subset_seed"]) for r in rows.values()} == {
        (t, str(s), "0") for t in trunks for s in (0, 1)}
    other = rows["ade20k/intern_vit_tiny_demo_b/linear_probing/seed1"]
    # a released checkpoint is the reference of its own trunk's runs only
    assert other["released_mIoU"] == "" and rows[f"ade20k/{DEMO_TRUNK}/linear_probing/seed0"][
        "released_mIoU"] != ""
    from internseg.config import backbone_architecture, load_config

    ran = load_config(wf / "results/demo/runs/ade20k/intern_vit_tiny_demo_b/linear_probing/"
                      "seed1/config.py", import_modules=False)
    # the demo's linear probe reads block 2 of 4, its third tap: on the 3-block trunk (taps
    # 0, 1, 1, 2) the third tap is block 1
    assert ran.model.backbone.out_indices == [1]
    assert backbone_architecture(ran.model.backbone)["pretrain_size"] == 56
    assert ran.randomness.seed == 1
    with open(wf / "results/demo/summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [(r["trunk"], r["n"], r["varied"]) for r in summary] == [
        (t, "2", "training seed") for t in trunks]
    for r in summary:
        # the mean of the number each run's verdict compares (final or best validation)
        values = [float(rows[run]["compared_mIoU"]) for run in r["runs"].split()]
        assert float(r["our_mIoU"]) == pytest.approx(np.mean(values), abs=0.006)
        assert float(r["our_mIoU_std"]) == pytest.approx(np.std(values, ddof=1), abs=0.006)
    md = (wf / "results/demo/table.md").read_text()
    assert f"## ade20k, {DEMO_TRUNK}" in md and "## ade20k, intern_vit_tiny_demo_b" in md
    assert "## Trunk x regime" in md and " ± " in md
    assert (wf / "results/demo/trunk_regimes.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.full_demo
def test_whole_demo_learns(tmp_path):
    """Every row of `make demo`, at the demo's own budget, beats the best constant predictor;
    the frozen linear probe by a factor 3 (about 20 minutes on 2 cores: `make test-all`)."""
    names = sorted(experiments("demo"))
    wf, rows = run_demo(tmp_path, names)
    assert list(rows) == [f"ade20k/{DEMO_TRUNK}/{name}" for name in names]
    baseline = beats_constant_predictor(wf, rows, names)
    assert float(rows[f"ade20k/{DEMO_TRUNK}/linear_probing"]["our_mIoU"]) > 3 * baseline


def test_a_new_experiment_is_one_file(tmp_path):
    """docs/adding-an-experiment.md, step by step, in a copy of the repository: each code
    block written where its first line says, every command as the page shows it."""
    wf = workflow_copy(tmp_path, with_package=True)
    doc = (REPO / "docs" / "adding-an-experiment.md").read_text()
    blocks = [b.split("\n", 1) for b in doc.split("```")[1::2]]
    for lang, body in blocks:
        first = body.splitlines()[0].removeprefix("# ")
        if not (lang in ("python", "yaml") and "/" in first or first.endswith(".yaml")):
            continue
        name, _, where = first.partition(", ")
        entry = body.split("\n", 1)[1]  # what goes into an existing file: without its name
        if where == "at the end":
            (wf / name).write_text((wf / name).read_text() + "\n" + entry)
        elif where.startswith("under "):
            text = (wf / name).read_text()
            anchor = where.removeprefix("under ") + "\n"
            assert text.count(anchor) == 1, (name, anchor)
            (wf / name).write_text(text.replace(anchor, anchor + entry))
        else:
            (wf / name).write_text(body)
    place_paper_data(wf)
    env = dict(os.environ, PYTHONPATH=str(wf / "core"))

    def run(words):
        """A command of the page as shown, in the copy."""
        if words[0] == "snakemake":
            done = snakemake(wf, *words[1:])
        else:
            done = subprocess.run([sys.executable, "-m", "internseg", *words[1:]], cwd=wf,
                                  env=env, capture_output=True, text=True)
        assert done.returncode == 0, (words, done.stderr[-3000:])
        return done.stdout

    # every command of the page, in its order
    outputs = {" ".join(words): run(words) for lang, body in blocks if lang == "bash"
               for line in body.splitlines() if line.startswith(("snakemake", "internseg"))
               for words in [line.split("#")[0].split()]}
    out = outputs["snakemake -n -p --configfile new.yaml --config preset=paper"]
    assert ("internseg split --manifest resources/paper/ade20k/manifest.json --fraction 4"
            " --seed 0") in out
    assert ("internseg train paper/head_tuning_1of4 --trunk intern_vit_6b_224px"
            " --dataset ade20k") in out
    assert "configs/paper/head_tuning_1of4.py" in out.split("rule train:")[1]
    # no published log, no released checkpoint: nothing to fetch for it but its trunk
    assert "rule fetch_log:" not in out and "rule fetch_released:" not in out
    assert "internseg fetch intern_vit_6b_224px.pth" in out
    assert "head_tuning_1of4" in outputs["internseg plan --experiments head_tuning_1of4"]
    # the row runs in the demo with no demo file, and is what the page says it is
    demo = snakemake(wf, "-n", "--configfile", "new.yaml")
    assert demo.returncode == 0, demo.stderr[-3000:]
    check = subprocess.run(
        [sys.executable, "-c", "from internseg.registry import experiments; "
         "e = experiments('demo')['head_tuning_1of4']; print(e.fraction, e.setting)"],
        env=env, capture_output=True, text=True, check=True)
    assert check.stdout.split() == ["4", "head", "tuning"]
    # the record: listed with its source
    listed = json.loads(outputs["internseg records --json"])
    assert any(r["experiment"] == "head_tuning_1of4" and r["mIoU"] == 52.0 for r in listed)
    # the trunk: the demo row resolved on it; the dry run writes its file and trains on it
    resolved = outputs["internseg inspect demo/fewshot_1of16 --trunk intern_vit_tiny_layernorm "
                       "--json"]
    assert "intern_vit_tiny_layernorm" in resolved
    tiny = outputs["snakemake -n -p --configfile tiny.yaml"]
    assert "internseg make-demo --trunk intern_vit_tiny_layernorm" in tiny
    assert "internseg train demo/adapter_tuning --trunk intern_vit_tiny_layernorm" in tiny
