"""`internseg plan`: the cost of a preset's runs, from the best throughput source there is."""

import json

import pytest

from conftest import REPO
from internseg.cli import main
from internseg.config import load_config
from internseg.plan import (A100_BF16_PEAK, ASSUMED_UTILISATION, FIRST_JOB_HOURS,
                            MAX_JOB_HOURS, STOP_WARNING_S, Bandwidth, Events, Units, job_seconds,
                            measured_step_seconds, plan, published_iteration_seconds, timeline,
                            to_markdown, trunk_flops_per_image)
from internseg.sizing import resized_for_test, slide_windows
from internseg.registry import experiments, plan_runs


def runs(*names, trunks=None, datasets=None, seeds=None):
    return plan_runs(list(names), experiments("paper"), trunks, datasets, seeds).values()

# The mmcv 1.x text-log format of the original's published logs.
LOG = """2023-11-02 10:00:00,000 - mmseg - INFO - Iter [50/20000]\tlr: 9.800e-07, eta: 1 day, \
time: 0.900, data_time: 0.010, memory: 35982, decode.loss_ce: 4.1000, loss: 4.1000
2023-11-02 10:01:00,000 - mmseg - INFO - Iter [100/20000]\tlr: 1.980e-06, eta: 8:40:17, \
time: 1.100, data_time: 0.005, memory: 35982, decode.loss_ce: 3.0000, loss: 3.0000
2023-11-02 10:02:00,000 - mmseg - INFO - Iter [150/20000]\tlr: 2.970e-06, eta: 8:40:17, \
time: 1.000, data_time: 0.005, memory: 35982, decode.loss_ce: 2.0000, loss: 2.0000
2023-11-02 10:03:00,000 - mmseg - INFO - Iter(val) [250]\taAcc: 0.7915, mIoU: 0.3867, mAcc: \
0.5076, IoU.wall: 0.7157
"""

RESULTS = """| regime | GPU | s / iteration | images / s | peak memory (GiB) |
|---|---|---|---|---|
| `frozen`: bf16 weights, no graph (linear probing, head tuning) | H200 | 0.20 | 10.0 | 20.1 |
| `trained_master`: fp32 master weights (full tuning) | – | – | – | – |
| `trained_bf16`: bf16 weights and gradients (few-shot) | – | – | – | – |
"""


def test_published_iteration_time_is_the_median_of_the_training_lines():
    assert published_iteration_seconds(LOG) == 1.0
    assert published_iteration_seconds("no training lines") is None


def test_measured_rows_are_read_and_unmeasured_ones_skipped():
    assert measured_step_seconds(RESULTS) == {"frozen": 0.20}


def test_trunk_flops_follow_the_architecture():
    backbone = load_config("paper/full_tuning").model.backbone
    tokens, dim = 36 * 36 + 1, 3200  # 504 px at patch 14, plus the cls token
    # per block and token: qkv, proj and the 4x MLP as multiply-adds, then QK^T and AV
    expected = 48 * tokens * (2 * (3 + 1 + 8) * dim ** 2 + 2 * 2 * tokens * dim)
    assert trunk_flops_per_image(backbone) == expected
    linear = load_config("paper/linear_probing").model.backbone
    assert trunk_flops_per_image(linear) == expected * 45 // 48  # runs to its tap, block 44


def test_each_run_says_where_its_time_comes_from(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS)
    log = tmp_path / "1of16.log"
    log.write_text(LOG)
    costs = {c.experiment: c for c in plan(
        runs("linear_probing", "fewshot_1of16", "full_tuning"), "paper", 8, results_md=results,
        published_logs={"fewshot_1of16": log})}
    frozen, fewshot, full = costs["linear_probing"], costs["fewshot_1of16"], costs["full_tuning"]
    assert frozen.source == "measured" and frozen.seconds_per_iteration == 0.2  # 16 = 8 x 2
    assert fewshot.source == "published log" and fewshot.seconds_per_iteration == 1.0
    assert full.source.startswith("trunk FLOPs")
    assert fewshot.train_hours == pytest.approx(5000 * 1.0 / 3600, abs=0.005)
    assert fewshot.wall_hours == pytest.approx(
        fewshot.train_hours + fewshot.validation_hours + fewshot.checkpoint_hours
        + fewshot.load_hours, abs=0.05)
    # from the unrounded wall time: 8 x half a rounding step apart at most
    assert fewshot.gpu_hours == pytest.approx(8 * fewshot.wall_hours, abs=0.4)
    # a trained trunk's state, sharded over 8 GPUs, is larger than a frozen trunk's in bf16
    assert full.gpu_memory_gb > frozen.gpu_memory_gb
    # fp32 masters and fp32 AdamW: 6.4B x 12 B per checkpoint (the README's 77 GB)
    assert full.checkpoint_gb == pytest.approx(77, abs=1.5)
    assert full.work_dir_gb > 2 * full.checkpoint_gb


def test_more_gpus_halve_the_steps_and_validations_not_the_writes():
    eight, = plan(runs("full_tuning"), "paper", 8)
    sixteen, = plan(runs("full_tuning"), "paper", 16)
    assert sixteen.train_hours == pytest.approx(eight.train_hours / 2, abs=0.01)
    assert sixteen.validation_hours == pytest.approx(eight.validation_hours / 2, abs=0.01)
    # 16 GPUs finish in the first job: no time-limit stop, so one checkpoint fewer to write;
    # the others take as long: 8 ranks already reach the file system's aggregate figure
    assert (eight.starts, sixteen.starts) == (2, 1)
    assert sixteen.checkpoints == eight.checkpoints - 1
    assert sixteen.checkpoint_hours == pytest.approx(
        eight.checkpoint_hours * (1 - 1 / eight.checkpoints), abs=0.01)
    assert sixteen.gpu_memory_gb < eight.gpu_memory_gb  # the state is sharded over more


def test_cli_json_gives_the_rows_and_totals(capsys, tmp_path):
    out = tmp_path / "plan.md"
    assert main(["plan", "--preset", "paper", "--experiments", "head_tuning", "full_tuning",
                 "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["experiment"] for r in printed["runs"]] == ["head_tuning", "full_tuning"]
    assert set(printed["runs"][0]) >= {
        "gpus", "wall_hours", "gpu_hours", "gpu_memory_gb", "host_memory_gb", "checkpoint_gb",
        "work_dir_gb", "train_hours", "validations", "validation_hours", "validation_source",
        "checkpoints", "checkpoint_hours", "starts", "load_hours", "io_source",
        "saved_gpu_hours"}
    totals = printed["totals"]
    assert totals["gpu_hours"] == pytest.approx(
        sum(r["gpu_hours"] for r in printed["runs"]), abs=0.11)
    for part in ("train_hours", "validation_hours", "checkpoint_hours", "load_hours"):
        assert totals[part] == pytest.approx(sum(r[part] for r in printed["runs"]), abs=0.011)
    assert printed["assumptions"]["fs_write_gbps"] == 2.0
    assert printed["assumptions"]["validation_image_height_width"]["ade20k"] == [512, 683]
    markdown = out.read_text()
    assert "| ade20k/intern_vit_6b_224px/head_tuning | frozen | 8 |" in markdown
    assert "Assumed, not measured: " in markdown and "--fs-write-gbps" in markdown
    assert "`--val-interval 4000`) saves" in markdown


def test_every_trunk_and_seed_is_a_run_and_other_trunks_scale_by_their_flops(tmp_path):
    log = tmp_path / "1of16.log"
    log.write_text(LOG)
    trunks = ["intern_vit_6b_224px", "intern_vit_6b_448px_v2_5"]
    costs = {c.run: c for c in plan(runs("fewshot_1of16", trunks=trunks, seeds=[0, 1]),
                                    "paper", 8, published_logs={"fewshot_1of16": log})}
    assert sorted(costs) == [f"ade20k/{t}/fewshot_1of16/seed{s}" for t in trunks for s in (0, 1)]
    own, other = (costs[f"ade20k/{t}/fewshot_1of16/seed0"] for t in trunks)
    assert (own.trunk, own.source, own.seconds_per_iteration) == (
        "intern_vit_6b_224px", "published log", 1.0)
    # the same 504 px tokens through 45 blocks instead of 48
    assert other.source == "published log, x0.938 trunk FLOPs"
    assert other.seconds_per_iteration == pytest.approx(45 / 48, abs=1e-3)
    assert other.checkpoint_gb < own.checkpoint_gb  # 45 blocks stored, not 48
    assert costs[f"ade20k/{trunks[1]}/fewshot_1of16/seed1"] == other.__class__(
        **{**other.__dict__, "run": f"ade20k/{trunks[1]}/fewshot_1of16/seed1"})


def test_the_table15_grid_is_planned_on_every_trunk_and_dataset(capsys):
    assert main(["plan", "--preset", "paper", "--experiments", "head_tuning", "--table15",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["runs"]
    # the row asked for and the 30 cells of Table 15, of which it is one
    assert len(rows) == 30
    assert {(r["trunk"], r["dataset"]) for r in rows} == {
        (t, d) for t in ("intern_vit_6b_224px", "intern_vit_6b_448px_v1_0",
                         "intern_vit_6b_448px_v1_2", "intern_vit_6b_448px_v1_5",
                         "intern_vit_6b_448px_v2_5") for d in ("ade20k", "coco_stuff164k")}


def test_a_gpu_check_on_a_gpu_is_preferred_and_a_cpu_smoke_run_ignored(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS)
    check = tmp_path / "gpu_check.json"
    row = dict(regime="frozen", batch=2, seconds_per_iter=0.5)
    check.write_text(json.dumps(dict(device="NVIDIA H200", tiny=False, trunk=[row])))
    (gpu,) = plan(runs("linear_probing"), "paper", 8, results_md=results, gpu_check=check)
    assert gpu.seconds_per_iteration == 0.5
    check.write_text(json.dumps(dict(device="cpu", tiny=True, trunk=[row])))
    (smoke,) = plan(runs("linear_probing"), "paper", 8, results_md=results, gpu_check=check)
    assert smoke.seconds_per_iteration == 0.2  # RESULTS.md's figure


def test_a_paper_run_also_validates_checkpoints_and_starts():
    (full,) = plan(runs("full_tuning"), "paper", 8)
    backbone = load_config("paper/full_tuning").model.backbone
    # 2000 ADE20K images, each 2 slide windows of 504 px (an assumed 512 x 683 image becomes
    # 504 x 672), shared by the 8 GPUs
    per_pass = 2000 * 2 * trunk_flops_per_image(backbone) / (
        A100_BF16_PEAK * ASSUMED_UTILISATION) / 8
    assert full.validations == 80 and full.validation_source.startswith("trunk FLOPs")
    assert full.validation_hours == pytest.approx(80 * per_pass / 3600, abs=0.01)
    # training alone fits the first 24 h job, with validation and checkpoints it does not:
    # one time-limit stop, which writes a checkpoint of its own and reads it back
    assert full.train_hours < FIRST_JOB_HOURS - STOP_WARNING_S / 3600 < full.wall_hours
    assert full.starts == 2 and full.checkpoints == 80 + 1
    final_gb = full.checkpoint_gb / 12 * 4  # fp32 weights of a checkpoint's weights + moments
    # the periodic ones written by the 8 ranks at once (8 x 2 GB/s, capped at 8 GB/s in all),
    # final.pth by rank 0 alone
    assert full.checkpoint_hours == pytest.approx(
        (81 * full.checkpoint_gb / 8.0 + final_gb / 2.0) / 3600, abs=0.02)
    assert full.load_hours == pytest.approx(
        (2 * 12.034 + full.checkpoint_gb) / 2.0 / 3600, abs=0.005)
    assert full.wall_hours == pytest.approx(full.train_hours + full.validation_hours
                                            + full.checkpoint_hours + full.load_hours, abs=0.05)
    assert full.gpu_hours == pytest.approx(8 * full.wall_hours, abs=0.5)
    # the work dir: 2 kept, the one of the stop (CheckpointHook deletes only its own), one
    # being written, and final.pth
    assert full.work_dir_gb == pytest.approx(4 * full.checkpoint_gb + final_gb, abs=1.0)


def test_coco_stuff_validates_its_5000_images():
    ade, coco = plan(runs("linear_probing", datasets=["ade20k", "coco_stuff164k"]), "paper", 8)
    # COCO's 480 x 640 images are 2 windows too: 2.5 times the images, the same windows each
    assert coco.validation_seconds == pytest.approx(2.5 * ade.validation_seconds, rel=1e-3)
    assert coco.train_hours == ade.train_hours


def test_slide_windows_follow_each_test_pipeline():
    def windows(experiment, height, width):
        cfg = load_config(f"paper/{experiment}")
        size = resized_for_test(cfg.val_dataloader.dataset.pipeline, height, width,
                                experiment)
        test = cfg.model.test_cfg
        return size, slide_windows(*size, test.crop_size, test.stride)

    # SETR_Resize to a 504 short side, then to multiples of 14
    assert windows("full_tuning", 512, 683) == ((504, 672), 2)
    assert windows("full_tuning", 683, 512) == ((672, 504), 2)
    assert windows("full_tuning", 504, 504) == ((504, 504), 1)
    assert windows("full_tuning", 400, 1400) == ((504, 1764), 5)
    # the few-shot configs cap the long side at 2016; the adapter slides 512 windows
    assert windows("fewshot_1of16", 400, 2400) == ((336, 2016), 6)
    assert windows("adapter_tuning", 512, 683) == ((512, 683), 2)


def test_a_gpu_check_slide_measurement_prices_validation(tmp_path):
    check = tmp_path / "gpu_check.json"
    check.write_text(json.dumps(dict(device="NVIDIA H100 80GB HBM3", tiny=False, trunk=[],
                                     checks=[dict(check="slide_inference", image=[504, 672],
                                                  crop=[504, 504], stride=[322, 322],
                                                  images_per_s=4.0)])))
    costs = {c.experiment: c for c in plan(runs("linear_probing", "full_tuning"), "paper", 8,
                                           gpu_check=check)}
    probe, full = costs["linear_probing"], costs["full_tuning"]
    # the check timed this very segmentor on a 2-window image: a quarter second an image
    assert probe.validation_seconds == pytest.approx(2000 * 0.25 / 8, abs=0.1)
    assert probe.validation_source.startswith("measured slide inference (linear head), x1.000")
    # full tuning's trunk runs all 48 blocks, linear probing's 45
    assert full.validation_seconds == pytest.approx(2000 * 0.25 / 8 * 48 / 45, abs=0.1)
    assert full.source.startswith("trunk FLOPs")  # no trunk row: steps stay arithmetic


def test_bandwidths_and_starts_are_options():
    (base,) = plan(runs("fewshot_1of16"), "paper", 8)
    (slow,) = plan(runs("fewshot_1of16"), "paper", 8,
                   bandwidth=Bandwidth(write_gbps=1.0, aggregate_write_gbps=4.0))
    (three,) = plan(runs("fewshot_1of16"), "paper", 8, bandwidth=Bandwidth(starts=3))
    assert base.starts == 1 and base.checkpoints == 5 and base.load_hours < 0.005
    assert slow.checkpoint_hours == pytest.approx(2 * base.checkpoint_hours, abs=0.011)
    assert "1 GB/s write" in slow.io_source and "(--starts)" in three.io_source
    # a frozen trunk's checkpoint is written by rank 0 alone: the aggregate figure is not its
    (frozen,) = plan(runs("linear_probing"), "paper", 8)
    (capped,) = plan(runs("linear_probing"), "paper", 8,
                     bandwidth=Bandwidth(aggregate_write_gbps=0.5))
    assert capped.checkpoint_hours == frozen.checkpoint_hours
    # two stops: two more checkpoints written, read back and left in the work dir
    assert three.checkpoints == 7
    assert three.load_hours == pytest.approx(
        (3 * 12.034 + 2 * base.checkpoint_gb) / 2.0 / 3600, abs=0.005)
    assert three.work_dir_gb == pytest.approx(base.work_dir_gb + 2 * base.checkpoint_gb, abs=0.2)


def test_starts_follow_the_slurm_profiles_time_limits():
    import yaml

    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    train = profile["set-resources"]["train"]
    for attempt in range(1, 5):
        minutes = eval(train["runtime"], {}, dict(attempt=attempt))  # the profile's expression
        assert min(FIRST_JOB_HOURS * attempt, MAX_JOB_HOURS) * 60 == minutes
    assert f"--signal=URG@{STOP_WARNING_S}" in train["slurm_extra"]
    assert job_seconds(2) == (24 + 48) * 3600 - 2 * STOP_WARNING_S

    def starts(hours):
        return timeline(1000, Events(hours * 3.6, 0, 0, 0, 0, 0), 1000, 1000, True).starts

    assert [starts(h) for h in (23.8, 23.9, 71.6, 71.7)] == [1, 2, 2, 3]


def test_what_ifs_price_fewer_validations_and_checkpoints(capsys):
    assert main(["plan", "--preset", "paper", "--experiments", "head_tuning", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["runs"]
    saved = row["saved_gpu_hours"]
    # every 4000 iterations: 20 validations instead of 80, 20 checkpoints instead of 80
    assert saved["val_interval=4000"] == pytest.approx(
        60 * row["validation_seconds"] * 8 / 3600, abs=0.1)
    assert saved["checkpoint_interval=4000"] == pytest.approx(
        60 / 80 * row["checkpoint_hours"] * 8, abs=0.1)
    assert main(["plan", "--preset", "paper", "--experiments", "head_tuning", "--json",
                 "--val-interval", "4000", "--checkpoint-interval", "4000"]) == 0
    (fewer,) = json.loads(capsys.readouterr().out)["runs"]
    assert (fewer["validations"], fewer["checkpoints"]) == (20, 20)
    assert fewer["gpu_hours"] == pytest.approx(
        row["gpu_hours"] - saved["val_interval=4000"] - saved["checkpoint_interval=4000"],
        abs=0.2)
    assert fewer["saved_gpu_hours"] == {"val_interval=4000": 0.0,
                                        "checkpoint_interval=4000": 0.0}


GPU = dict(device="NVIDIA H100 80GB HBM3", tiny=False)


@pytest.mark.parametrize("content,named", [
    ('{"device": "NVIDIA H100", "trunk": [', "not valid JSON"),
    ("[1, 2]", "got a list"),
    (json.dumps(dict(GPU, trunk=[dict(regime="frozen", seconds_per_iter="0.5")])),
     "trunk[0].seconds_per_iter is '0.5', not a number > 0"),
    (json.dumps(dict(GPU, trunk=[dict(regime="frozen", seconds_per_iter=-0.1)])),
     "trunk[0].seconds_per_iter is -0.1"),
    (json.dumps(dict(GPU, trunk=[dict(regime="frozen", seconds_per_iter=0)])),
     "trunk[0].seconds_per_iter is 0"),
    (json.dumps(dict(GPU, checks=[dict(check="slide_inference", image=[504, 672],
                                       crop=[504, 504], stride=[322, 322],
                                       images_per_s=None)])),
     "checks[0].images_per_s is None"),
])
def test_a_bad_gpu_check_is_one_line_naming_file_and_key(tmp_path, capsys, content, named):
    check = tmp_path / "gpu_check.json"
    check.write_text(content)
    assert main(["plan", "--experiments", "head_tuning", "--gpu-check", str(check)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--gpu-check {check}: " in err and named in err, err


def test_binary_results_are_one_line_naming_the_file(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert main(["plan", "--experiments", "head_tuning", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"internseg plan: error: --results {results}: not a text file (byte 0 is "
                   "not UTF-8)")


def table_columns(markdown: str) -> dict[str, list[str]]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("| ")]
    return {name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])}


def test_the_demos_plan_reads_in_seconds_and_megabytes_not_zeros():
    demo = plan_runs(list(experiments("demo")), experiments("demo"), None, None, None)
    markdown = to_markdown(plan(demo.values(), "demo", 1))
    columns = table_columns(markdown)
    assert "train_s" in columns and "wall_s" in columns and "train_hours" not in columns
    assert "checkpoint_mb" in columns and "work_dir_mb" in columns
    for name, cells in columns.items():
        if name not in ("run", "regime", "sources", "starts"):
            assert any(float(cell) > 0 for cell in cells), f"{name}: {cells}"
    total = next(line for line in markdown.splitlines() if line.startswith("9 runs:"))
    assert " GPU-seconds (" in total and " MB of work dirs" in total and " 0.0 " not in total


def test_the_paper_plan_keeps_hours_and_gigabytes():
    markdown = to_markdown(plan(runs("fewshot_1of16"), "paper", 8))
    columns = table_columns(markdown)
    assert columns["train_hours"] == ["1.45"] and columns["checkpoint_gb"] == ["70.9"]
    assert "1 runs: 12.5 GPU-hours (1.6 h if run one after another" in markdown


@pytest.mark.parametrize("wall_hours,unit", [(2.0, "hours"), (0.5, "min"), (0.001, "s")])
def test_the_time_unit_is_the_longest_runs(wall_hours, unit):
    from dataclasses import replace

    (cost,) = plan(runs("fewshot_1of16"), "paper", 8)
    assert Units.fitting([replace(cost, wall_hours=wall_hours)]).time == unit
    assert Units.fitting([replace(cost, wall_hours=wall_hours)]).hours(0.5) == {
        "hours": "0.5", "min": "30", "s": "1800"}[unit]


@pytest.mark.parametrize("option,given,named", [
    ("--results", "folder", "is a directory; give the file, e.g. "),
    ("--gpu-check", "missing.json", "no such file (the default is benchmarks/gpu_check.json)"),
    ("--results", "missing.md", "no such file (the default is benchmarks/RESULTS.md)"),
])
def test_measurements_named_but_not_there_are_refused(tmp_path, capsys, option, given, named):
    """They were ignored: the plan came from its assumptions without a word."""
    (tmp_path / "folder").mkdir()
    path = tmp_path / given
    assert main(["plan", "--experiments", "head_tuning", option, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{option} {path}: {named}" in err, err
