"""Sharded training of the trained-trunk runs (FSDP through mmengine's FlexibleRunner)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from internseg.engine.train import TrainOptions, build_train_config

WORKER = Path(__file__).parent / "sharding" / "sharded_step.py"


def run_sharded(out, *flags):
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node=2", str(WORKER), "sharded", str(out), *flags],
                   check=True, capture_output=True, timeout=300)
    return torch.load(out, weights_only=True)


# Both layouts sum the same per-pixel terms, in another order (two half-batch sums, then the
# reduce-scatter). In float64 that reorders rounding errors of ~1e-16 relative; summed over
# ~1e4 terms with cancellation they stay near 1e-11 of a tensor's largest gradient (measured:
# 9.5e-12 on AMD EPYC). A fault (grads summed instead of averaged, a rank's shard lost, wrong
# batch split) is of order 1 relative.
GRAD_TOLERANCE = 1e-9
# AdamW moves a weight by about lr * g / (|g| + eps) per step: a fault moves it by a sizeable
# fraction of lr, while gradient noise of ~1e-14 is magnified at most lr/eps-fold where g ~ 0,
# i.e. to ~1e-6 lr (measured after two steps: 6.6e-14 = 3e-11 lr).
WEIGHT_TOLERANCE_IN_LR = 1e-5


def test_sharded_steps_match_one_process(tmp_path):
    """Two ranks with half the batch each, weights/grads/AdamW state sharded, compute the
    gradients of the whole batch and end where one process with the whole batch ends; the
    layer-decay groups (names, lrs, weight decay) are the same although the parameters are
    sharded. Validation with a different number of forward passes per rank between the steps
    must not hang or change anything. Gradients are compared as well as weights because
    AdamW's update hardly depends on the gradients' scale."""
    one = tmp_path / "one.pt"
    subprocess.run([sys.executable, str(WORKER), "reference", str(one)], check=True,
                   capture_output=True, timeout=300)
    ref = torch.load(one, weights_only=True)
    sharded = run_sharded(tmp_path / "two.pt")
    assert sharded["groups"] == ref["groups"]
    assert sharded["grads"].keys() == ref["grads"].keys() and ref["grads"]
    for name, grad in ref["grads"].items():
        assert grad.dtype == torch.float64, name
        scale = grad.abs().max().item()
        torch.testing.assert_close(sharded["grads"][name], grad, rtol=0,
                                   atol=GRAD_TOLERANCE * scale,
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")
    lr = max(lr for _, lr, _ in ref["groups"])
    assert sharded["state"].keys() == ref["state"].keys()
    for name, value in ref["state"].items():
        torch.testing.assert_close(sharded["state"][name], value, rtol=0,
                                   atol=WEIGHT_TOLERANCE_IN_LR * lr,
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


@pytest.mark.slow
def test_gathering_masters_in_bf16_changes_traffic_not_numbers(tmp_path):
    """fp32 masters computing in bf16 (full tuning) are all-gathered already rounded to bf16:
    half the bytes, and the same training to the last bit as gathering fp32 and rounding in
    each layer."""
    narrow = run_sharded(tmp_path / "bf16.pt", "bf16")
    wide = run_sharded(tmp_path / "fp32.pt", "bf16", "fp32-gather")
    assert narrow["gathered"] == ["torch.bfloat16"] and wide["gathered"] == ["torch.float32"]
    for name, value in wide["state"].items():
        assert torch.equal(narrow["state"][name], value), name


@pytest.mark.parametrize("experiment,master", [("full_tuning", True), ("fewshot_1of16", True),
                                               ("fewshot_1of16", False)])
def test_gather_policy_per_unit(experiment, master):
    from internseg.config import load_config
    from internseg.engine.sharding import gather_policy, shard_units
    from internseg.engine.segmentor import build_segmentor

    # few-shot: fp32 masters as the fork; master_weights=False is the main repo's bf16 path
    cfg = load_config(f"demo/{experiment}", {"model.backbone.master_weights": master})
    cfg.model.backbone.pretrained = None
    model = build_segmentor(cfg, device="meta")
    policies = {unit: gather_policy(model, unit) for unit in shard_units(model)}
    for block in model.backbone.blocks:
        expected = (torch.bfloat16, torch.float32) if master else (None, None)
        assert (policies[block].param_dtype, policies[block].reduce_dtype) == expected
    if master and experiment == "full_tuning":  # resamplers gathered in bf16, heads in fp32
        assert policies[model.neck].param_dtype == torch.bfloat16
        assert policies[model.decode_head].param_dtype is None
        assert policies[model.auxiliary_head].param_dtype is None
    else:
        assert policies[model.decode_head].param_dtype is None


FOLDER_WORKER = Path(__file__).parent / "sharding" / "checkpoint_folder.py"


def torchrun(ranks, *args):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={ranks}", str(FOLDER_WORKER), *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_same_state(saved, loaded):
    assert saved["model"].keys() == loaded["model"].keys()
    for key, value in saved["model"].items():
        assert value.dtype == loaded["model"][key].dtype, key
        assert torch.equal(value, loaded["model"][key]), key
    moments = saved["optimizer"]["state"]
    assert moments and moments.keys() == loaded["optimizer"]["state"].keys()
    for name, values in moments.items():
        for what, value in values.items():
            assert torch.equal(value, loaded["optimizer"]["state"][name][what]), (name, what)
    # the single file's path hands betas back as a list (mmengine's load, as before the
    # folders); AdamW unpacks either alike
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()}
              for group in loaded["optimizer"]["param_groups"]]
    assert saved["optimizer"]["param_groups"] == groups


def test_checkpoints_written_by_2_ranks_resume_on_3_bit_for_bit(tmp_path):
    """Each rank writes its own shards (a folder: metadata, one file per rank, the rest in
    extra.pth); 3 ranks read them resharded into the same weights and AdamW state. The single
    file sharded runs wrote before (gathered to rank 0) still resumes."""
    from internseg.engine.resilience import latest_valid_checkpoint

    torchrun(2, "save", tmp_path)
    folder = tmp_path / "iter_1.pth"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp", "extra.pth"]
    assert latest_valid_checkpoint(tmp_path) == folder
    # the temporary folder it was written in is gone: nothing but the checkpoint is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_1.pth", "old", "saved.pt"]
    torchrun(3, "load", tmp_path)
    saved = torch.load(tmp_path / "saved.pt", weights_only=True)
    assert saved["model"]["decode_head.norm.running_mean"].eq(1).all()  # rank 0's
    for what in ("folder", "file"):
        loaded = torch.load(tmp_path / f"{what}_3.pt", weights_only=True)
        assert_same_state(saved, loaded)
        assert loaded["rest"] == dict(meta=dict(iter=1, seed=0),
                                      message_hub=dict(log_scalars={})), what
    weights = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert weights["optimizer_entries"] == 0, "--load-from took the optimizer's state too"
    for key, value in saved["model"].items():
        assert torch.equal(value, weights["model"][key]), key
