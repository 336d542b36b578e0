"""`internseg train` and `internseg test` on the tiny demo, through the CLI entry point."""

import json

import pytest
import torch

from internseg.cli import main
from internseg.config import load_config
from internseg.config import sync_bn_to_bn
from internseg.engine.train import TrainOptions, build_train_config


def train(demo_assets, tmp_path, experiment, iters=4, extra=()):
    run = tmp_path / experiment
    split = tmp_path / "split.txt"
    split.write_text("".join(f"ADE_train_{i:08d}\n" for i in range(1, 9)))
    args = ["train", f"demo/{experiment}", "--work-dir", str(run / "work"),
            "--data-root", str(demo_assets["data_root"]), "--split", str(split),
            "--pretrained", str(demo_assets["weights"]), "--seed", "0", "--deterministic",
            "--threads", "2", "--final-checkpoint", str(run / "final.pth"),
            "--config-out", str(run / "config.py"), "--scalars-out", str(run / "scalars.jsonl"),
            "--provenance-out", str(run / "provenance.json"),
            "--cfg-options", f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={iters}",
            f"default_hooks.checkpoint.interval={iters // 2}", *extra]
    assert main(args) == 0
    return run


@pytest.fixture(scope="module")
def linear_probe_run(demo_assets, tmp_path_factory):
    return train(demo_assets, tmp_path_factory.mktemp("lp"), "linear_probing")


def test_train_writes_final_checkpoint_with_meta(linear_probe_run):
    ckpt = torch.load(linear_probe_run / "final.pth", weights_only=True)
    meta = ckpt["meta"]
    assert meta["iteration"] == 4 and meta["seed"] == 0
    assert "InternViT6B" in meta["config"]
    assert len(meta["dataset_meta"]["classes"]) == 150
    assert len(meta["dataset_meta"]["palette"]) == 150
    assert meta["versions"]["torch"].startswith("2.13")
    # frozen trunk: the result is the heads only, as in the released checkpoints
    assert not any(k.startswith("backbone.") for k in ckpt["state_dict"])
    assert "decode_head.conv_seg.weight" in ckpt["state_dict"]


def test_provenance_names_the_code_inputs_and_hardware_of_the_weights(linear_probe_run):
    import hashlib
    import re

    from conftest import REPO

    record = json.loads((linear_probe_run / "provenance.json").read_text())
    final = torch.load(linear_probe_run / "final.pth", weights_only=True)["meta"]
    assert record["run_identity"] == final["run_identity"]
    split = (linear_probe_run.parent / "split.txt").read_bytes()
    assert record["split_sha256"] == hashlib.sha256(split).hexdigest()
    head = (REPO / ".git" / "HEAD").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record["git_commit"]), record["git_commit"]
    if not head.startswith("ref:"):
        assert record["git_commit"].startswith(head)
    assert record["device"].startswith("cpu") and record["world_size"] == 1
    assert record["iterations"] == 4 and record["versions"]["torch"].startswith("2.13")
    from internseg import __version__

    assert record["versions"]["internseg"] == __version__


def test_work_dir_checkpoints_carry_versions_and_classes(linear_probe_run):
    ckpt = torch.load(linear_probe_run / "work" / "iter_4.pth", weights_only=True)
    assert ckpt["meta"]["versions"]["onedl-mmsegmentation"] == "1.4.2"
    assert len(ckpt["meta"]["dataset_meta"]["classes"]) == 150
    assert "cfg" in ckpt["meta"]


def test_config_out_is_loadable_and_bn_not_syncbn(linear_probe_run):
    cfg = load_config(linear_probe_run / "config.py")
    assert cfg.model.decode_head.norm_cfg.type == "BN"
    assert cfg.train_cfg.max_iters == 4


def test_scalars_hold_loss_and_validation(linear_probe_run):
    rows = [json.loads(line) for line in (linear_probe_run / "scalars.jsonl").read_text()
            .splitlines()]
    assert any("loss" in r for r in rows)
    assert any("mIoU" in r for r in rows)


def test_test_reproduces_validation_and_writes_per_class(linear_probe_run, demo_assets):
    out = linear_probe_run / "metrics.json"
    assert main(["test", str(linear_probe_run / "config.py"),
                 str(linear_probe_run / "final.pth"), "--out", str(out),
                 "--data-root", str(demo_assets["data_root"]),
                 "--pretrained", str(demo_assets["weights"]), "--threads", "2"]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) >= {"mIoU", "mAcc", "aAcc", "per_class", "num_images", "inference"}
    assert metrics["num_images"] == 4 and metrics["dataset"] == "ade20k"
    assert metrics["inference"]["mode"] == "slide"
    assert len(metrics["per_class"]) == 150
    per_class = metrics["per_class"]
    assert per_class["sky"]["IoU"] is not None
    # a class not in the ground truth has no accuracy; its IoU is 0 where it was predicted
    # and none where it was not (absent from both: as mmseg, no IoU)
    absent = [c for c, v in per_class.items() if v["Acc"] is None]
    assert absent and all(per_class[c]["IoU"] in (None, 0.0) for c in absent)
    assert any(per_class[c]["IoU"] is None for c in absent)
    rows = [json.loads(line) for line in (linear_probe_run / "scalars.jsonl").read_text()
            .splitlines()]
    last_val = [r for r in rows if "mIoU" in r][-1]
    assert metrics["mIoU"] == pytest.approx(last_val["mIoU"], abs=0.01)


def test_trained_trunk_checkpoint_keeps_backbone(demo_assets, tmp_path):
    run = train(demo_assets, tmp_path, "fewshot_1of16", iters=2)
    state = torch.load(run / "final.pth", weights_only=True)["state_dict"]
    assert "backbone.blocks.0.attn.qkv.weight" in state


def test_work_dir_precedence():
    base = dict(config="demo/fewshot_1of16")
    assert build_train_config(TrainOptions(**base, work_dir="w")).work_dir == "w"
    derived = build_train_config(TrainOptions(**base))
    assert derived.work_dir == "work_dirs/fewshot_1of16"
    from_cfg = build_train_config(TrainOptions(**base, cfg_options={"work_dir": "c"}))
    assert from_cfg.work_dir == "c"


def test_syncbn_becomes_bn_without_launcher_or_gpus(monkeypatch):
    import torch

    cfg = dict(a=dict(type="SyncBN"), b=[dict(norm_cfg=dict(type="SyncBN"))], c="SyncBN")
    assert sync_bn_to_bn(cfg) == dict(a=dict(type="BN"), b=[dict(norm_cfg=dict(type="BN"))],
                                      c="SyncBN")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    slurm = build_train_config(TrainOptions(config="paper/head_tuning", launcher="slurm"))
    assert slurm.model.decode_head.norm_cfg.type == "SyncBN"
    # torch's SyncBN runs on GPUs only: CPU ranks (the sharding tests) use BN
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu_ranks = build_train_config(TrainOptions(config="paper/head_tuning", launcher="slurm"))
    assert cpu_ranks.model.decode_head.norm_cfg.type == "BN"
    local = build_train_config(TrainOptions(config="paper/head_tuning"))
    assert local.model.decode_head.norm_cfg.type == "BN"
    assert local.model.auxiliary_head.norm_cfg.type == "BN"


def test_bad_config_path_is_a_clear_error(capsys):
    assert main(["train", "demo/fewshot_1of3"]) == 2
    assert "fewshot_1of3" in capsys.readouterr().err


def test_auto_resume_prefers_work_dir_checkpoint_over_load_from(tmp_path):
    init = str(tmp_path / "init" / "init.pth")
    (tmp_path / "init").mkdir()
    torch.save({"state_dict": {}}, init)
    opts = dict(config="demo/fewshot_1of16", work_dir=str(tmp_path), load_from=init,
                auto_resume=True)
    fresh = build_train_config(TrainOptions(**opts))
    assert (fresh.resume, fresh.load_from) == (False, init)
    torch.save({"state_dict": {}}, tmp_path / "iter_3.pth")
    resumed = build_train_config(TrainOptions(**opts))
    assert (resumed.resume, resumed.load_from) == (True, str(tmp_path / "iter_3.pth"))


def test_tensorboard_event_files_hold_the_training_scalars(linear_probe_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (linear_probe_run / "work").glob("*/vis_data/events.out.tfevents.*")
    reader = EventAccumulator(str(events))
    reader.Reload()
    tags = set(reader.Tags()["scalars"])
    assert {"loss", "lr", "grad_norm", "grad_norm_mean", "grad_norm_std", "mIoU"} <= tags, tags
    assert all(e.value > 0 for e in reader.Scalars("grad_norm"))
    rows = [json.loads(line) for line in (linear_probe_run / "scalars.jsonl").read_text()
            .splitlines()]
    assert any("grad_norm" in r for r in rows)


def test_ema_weights_are_the_result_and_the_best_validation_is_kept_in_bf16(demo_assets,
                                                                             tmp_path):
    run = train(demo_assets, tmp_path, "linear_probing",
                extra=["--ema-momentum", "0.5", "--keep-best", "1"])
    final = torch.load(run / "final.pth", weights_only=True)["state_dict"]
    # mmengine's EMAHook saves the average as `state_dict` and the raw weights beside it
    saved = torch.load(run / "work" / "iter_4.pth", weights_only=True)
    head = "decode_head.conv_seg.weight"
    assert torch.equal(final[head], saved["state_dict"][head])
    assert not torch.equal(final[head], saved["ema_state_dict"][f"module.{head}"])
    (best,) = (run / "work").glob("best_mIoU_iter_*.pth")
    kept = torch.load(best, weights_only=True)
    assert kept["meta"]["iteration"] == 4 and kept["meta"]["metric"] == "mIoU"
    assert kept["state_dict"][head].dtype == torch.bfloat16
    # the validated weights are the EMA ones, and only they: no optimizer state
    assert torch.equal(kept["state_dict"][head], final[head].to(torch.bfloat16))
    assert set(kept) == {"meta", "state_dict"}
    assert not any(k.startswith("backbone.") for k in kept["state_dict"])
    assert [h["type"] for h in load_config(run / "config.py").custom_hooks].count("EMAHook") == 1


def test_the_config_a_run_dumps_is_a_fresh_resolution_of_the_same_run(demo_assets, tmp_path):
    """What ran is what the file, moved to the run's trunk, with the run's options, resolves
    to: the dumped config.py reloads to a fresh resolution, and mmengine loads it as it is."""
    from mmengine.config import Config

    run = train(demo_assets, tmp_path, "head_tuning",
                extra=["--trunk", "intern_vit_tiny_demo_b"])
    dumped = Config.fromfile(str(run / "config.py"))
    options = {"train_cfg.max_iters": 4, "train_cfg.val_interval": 4,
               "default_hooks.checkpoint.interval": 2}
    fresh = build_train_config(TrainOptions(
        config="demo/head_tuning", trunk="intern_vit_tiny_demo_b", cfg_options=options,
        work_dir=str(run / "work"), data_root=str(demo_assets["data_root"]),
        split=str(tmp_path / "split.txt"), pretrained=str(demo_assets["weights"]), seed=0,
        deterministic=True), with_start=False)
    for key in ("model", "optim_wrapper", "param_scheduler", "train_cfg", "train_dataloader",
                "val_dataloader", "test_dataloader", "randomness", "batch_plan",
                "default_hooks", "total_batch_size", "train_fraction"):
        assert dumped[key] == fresh[key], key
    added = [h for h in dumped.custom_hooks if h not in fresh.custom_hooks]
    assert [h["type"] for h in added] == ["RunIdentityHook"]  # the identity of what ran
    assert dumped.model.backbone.trunk == "intern_vit_tiny_demo_b"
    assert dumped.model.backbone.out_indices == [0, 1, 1, 2]
