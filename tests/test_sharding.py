"""Sharded training of the trained-trunk runs (FSDP through mmengine's FlexibleRunner)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from internseg.engine.train import TrainOptions, build_train_config

WORKER = Path(__file__).parent / "sharding" / "sharded_step.py"


def test_sharded_steps_match_one_process(tmp_path):
    """Two ranks with half the batch each, weights/grads/AdamW state sharded, end where one
    process with the whole batch ends; the layer-decay groups (names, lrs, weight decay) are
    the same although the parameters are sharded. Validation with a different number of
    forward passes per rank between the steps must not hang or change anything."""
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    subprocess.run([sys.executable, str(WORKER), "reference", str(one)], check=True,
                   capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node=2", str(WORKER), "sharded", str(two)],
                   check=True, capture_output=True, timeout=300)
    ref, sharded = (torch.load(p, weights_only=False) for p in (one, two))
    assert sharded["groups"] == ref["groups"]
    assert sharded["state"].keys() == ref["state"].keys()
    for name, value in ref["state"].items():
        torch.testing.assert_close(sharded["state"][name], value, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("experiment,sharded", [("fewshot_1of16", True),
                                                ("full_tuning", True),
                                                ("head_tuning", False)])
def test_multi_rank_runs_shard_only_a_trained_trunk(experiment, sharded, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    cfg = build_train_config(TrainOptions(config=f"paper/{experiment}", launcher="pytorch"))
    assert (cfg.get("strategy", {}).get("type") == "ShardedTrunkStrategy") is sharded
    hooks = [h["type"] for h in cfg.custom_hooks]
    assert ("GatheredValidationHook" in hooks) is sharded
    assert cfg.batch_plan == dict(world_size=8, per_gpu=2, accumulation=1, effective=16)


def test_one_process_trains_unsharded():
    cfg = build_train_config(TrainOptions(config="paper/fewshot_1of16"))
    assert "strategy" not in cfg
    assert "GatheredValidationHook" not in [h["type"] for h in cfg.custom_hooks]
