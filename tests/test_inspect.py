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


def test_adapter_tuning_counts_its_adapter_apart(capsys):
    """The adapter's size from its recorded architecture (3200 wide, 25 deformable heads of
    32 value channels, 4 points, ConvFFN ratio 0.25, SPM stem 64, 4 interactions with 3 / 1
    levels, 2 extra extractors, a 2x2 ConvTranspose, 4 final norms), worked out by hand."""
    d, v, heads, points = 3200, 800, 25, 4

    def deform(levels):
        offsets, weights = heads * levels * points * 2, heads * levels * points
        return (d + 1) * (offsets + weights) + (d + 1) * v + (v + 1) * d

    layer_norms = 2 * 2 * d
    injector = layer_norms + deform(3) + d
    ffn = (d + 1) * v + v * 9 + v + (v + 1) * d + 2 * d
    extractor = layer_norms + deform(1) + ffn
    stem = 3 * 64 * 9 + 2 * 64 * 64 * 9 + 64 * 128 * 9 + 128 * 256 * 9 + 256 * 256 * 9
    stem_norms = 2 * (64 * 3 + 128 + 256 + 256)
    projections = (64 + 1) * d + (128 + 1) * d + 2 * (256 + 1) * d
    spm = stem + stem_norms + projections
    adapter = 4 * (injector + extractor) + 2 * extractor + spm + 3 * d + (4 * d * d + d) + 4 * 2 * d
    info = inspect(capsys, "paper/adapter_tuning")
    assert info["adapter_params"] == adapter
    # the trunk at patch 16 and a 32x32 grid: the 224 px count with a larger kernel and grid
    trunk_224 = 5_902_793_600
    trunk = trunk_224 + 3 * d * (16 * 16 - 14 * 14) + d * (32 * 32 - 16 * 16)
    assert info["backbone_params"] == trunk + adapter
    assert info["trainable_params"] == info["total_params"] - trunk
