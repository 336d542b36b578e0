"""`internseg plan`: the cost of a preset's runs, from the best throughput source there is."""

import json

import pytest

from internseg.cli import main
from internseg.config import load_config
from internseg.plan import (measured_step_seconds, plan, published_iteration_seconds,
                            trunk_flops_per_image)
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
    assert fewshot.wall_hours == pytest.approx(5000 * 1.0 / 3600, abs=0.05)
    assert fewshot.gpu_hours == pytest.approx(8 * fewshot.wall_hours, abs=0.1)
    # a trained trunk's state, sharded over 8 GPUs, is larger than a frozen trunk's in bf16
    assert full.gpu_memory_gb > frozen.gpu_memory_gb
    # fp32 masters and fp32 AdamW: 6.4B x 12 B per checkpoint (the README's 77 GB)
    assert full.checkpoint_gb == pytest.approx(77, abs=1.5)
    assert full.work_dir_gb > 2 * full.checkpoint_gb


def test_more_gpus_less_wall_time_same_gpu_hours():
    eight, = plan(runs("full_tuning"), "paper", 8)
    sixteen, = plan(runs("full_tuning"), "paper", 16)
    assert sixteen.wall_hours == pytest.approx(eight.wall_hours / 2, abs=0.1)
    assert sixteen.gpu_hours == pytest.approx(eight.gpu_hours, abs=0.2)
    assert sixteen.gpu_memory_gb < eight.gpu_memory_gb  # the state is sharded over more


def test_cli_json_gives_the_rows_and_totals(capsys, tmp_path):
    out = tmp_path / "plan.md"
    assert main(["plan", "--preset", "paper", "--experiments", "head_tuning", "full_tuning",
                 "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["experiment"] for r in printed["runs"]] == ["head_tuning", "full_tuning"]
    assert set(printed["runs"][0]) >= {"gpus", "wall_hours", "gpu_hours", "gpu_memory_gb",
                                       "host_memory_gb", "checkpoint_gb", "work_dir_gb"}
    assert printed["totals"]["gpu_hours"] == pytest.approx(
        sum(r["gpu_hours"] for r in printed["runs"]), abs=0.11)
    assert "| ade20k/intern_vit_6b_224px/head_tuning | frozen | 8 |" in out.read_text()


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
