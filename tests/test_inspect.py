"""`internseg inspect` on the 6B paper configs (meta device: no memory allocated)."""

import json

import pytest

from internseg.cli import main


def inspect(capsys, config):
    assert main(["inspect", config, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_linear_probing_trains_half_a_million_of_5_9b(capsys):
    info = inspect(capsys, "paper/linear_probing")
    assert info["summary"] == "486.6K / 5.9B"  # README: 0.5M / 5.9B
    assert info["backbone_params"] == 5_906_121_600
    assert info["param_groups"]["count"] == 2  # head: decay / no decay, one slot
    assert info["param_groups"]["lr_scale_min"] == info["param_groups"]["lr_scale_max"] == 1.0


def test_head_tuning_matches_readme_without_auxiliary_head(capsys):
    info = inspect(capsys, "paper/head_tuning")
    assert info["summary_without_auxiliary_head"] == "435.4M / 6.3B"  # README: 0.4B / 6.3B
    assert info["trainable_params"] - info["auxiliary_head_params"] == pytest.approx(0.435e9,
                                                                                     rel=0.01)


def test_full_tuning_trains_everything_with_fifty_lr_slots(capsys):
    info = inspect(capsys, "paper/full_tuning")
    assert info["trainable_params"] == info["total_params"]
    assert info["summary_without_auxiliary_head"] == "6.3B / 6.3B"
    groups = info["param_groups"]
    assert groups["count"] == 100 and groups["with_weight_decay"] == 50
    assert groups["lr_scale_min"] == pytest.approx(0.95 ** 49)


def test_backbone_benchmark_smoke_runs_on_cpu():
    import subprocess
    import sys

    from conftest import REPO

    out = subprocess.run([sys.executable, str(REPO / "benchmarks/backbone_step.py"), "--tiny",
                          "--warmup", "1", "--iters", "1"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    rows = [json.loads(line) for line in out]
    assert [(r.get("regime"), r.get("weight_dtype")) for r in rows[1:]] == [
        ("frozen", "bfloat16"), ("trained_master", "float32"), ("trained_bf16", "bfloat16")]
    assert all(r["seconds_per_iter"] > 0 for r in rows[1:])
