"""A run's identity decides what a work dir may resume: same inputs continue, changed inputs
start from iteration 0 with the old work dir moved aside; one trainer per work dir."""

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config

import internseg
from internseg.cli import main
from internseg.engine.identity import (IDENTITY_FILE, make_identity, settle_work_dir,
                                       training_config, work_dir_lock)
from test_workflow import BIN, DEMO_TRUNK, snakemake, workflow_copy

ITERS = 4


def train_args(demo_assets, root, work, *, seed=0, extra=()):
    split = root / "split.txt"
    split.write_text("".join(f"ADE_train_{i:08d}\n" for i in range(1, 9)))
    final = root / f"final-{work.name}-{seed}-{len(extra)}.pth"
    return final, ["train", "demo/fewshot_1of16", "--work-dir", str(work), "--auto-resume",
                   "--data-root", str(demo_assets["data_root"]), "--split", str(split),
                   "--pretrained", str(demo_assets["weights"]), "--seed", str(seed),
                   "--deterministic", "--threads", "2", "--final-checkpoint", str(final),
                   "--cfg-options", f"train_cfg.max_iters={ITERS}", f"train_cfg.val_interval={ITERS}",
                   "default_hooks.checkpoint.interval=2", *extra]


def train(demo_assets, root, work, **options):
    final, args = train_args(demo_assets, root, work, **options)
    assert main(args) == 0
    return torch.load(final, weights_only=True)


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def superseded(work):
    return sorted(work.parent.glob(f"{work.name}.superseded-*"))


def test_same_inputs_resume_and_record_the_identity(demo_assets, tmp_path, caplog,
                                                    monkeypatch):
    work = tmp_path / "work"
    first = train(demo_assets, tmp_path, work)
    recorded = json.loads((work / IDENTITY_FILE).read_text())
    assert first["meta"]["run_identity"] == recorded["digest"]
    assert first["meta"]["versions"]["internseg"] == internseg.__version__
    saved = torch.load(work / f"iter_{ITERS}.pth", weights_only=True)
    assert saved["meta"]["run_identity"] == recorded["digest"]
    caplog.clear()
    caplog.set_level(logging.INFO, logger="internseg")
    # a new release of the same code: recorded, but the finished run is kept, not retrained
    monkeypatch.setattr(internseg, "__version__", "99.0.0")
    again = train(demo_assets, tmp_path, work)
    assert f"auto-resume: from {work / f'iter_{ITERS}.pth'}" in caplog.text
    assert superseded(work) == []
    assert again["meta"]["run_identity"] == first["meta"]["run_identity"]
    assert again["meta"]["versions"]["internseg"] == "99.0.0"
    assert_bitwise_equal(again["state_dict"], first["state_dict"])


@pytest.mark.parametrize("change", [dict(seed=1),
                                    dict(extra=("optim_wrapper.optimizer.lr=0.001",))],
                         ids=["seed", "lr"])
def test_changed_inputs_train_afresh_like_a_new_work_dir(demo_assets, tmp_path, caplog, change):
    """A stale checkpoint is never continued: the rerun in the old work dir ends bitwise where
    a run of the new inputs in an empty work dir ends (same machine, same threads)."""
    work = tmp_path / "work"
    train(demo_assets, tmp_path, work)
    caplog.clear()
    rerun = train(demo_assets, tmp_path, work, **change)
    fresh = train(demo_assets, tmp_path, tmp_path / "fresh", **change)
    assert_bitwise_equal(rerun["state_dict"], fresh["state_dict"])
    moved = superseded(work)
    assert len(moved) == 1 and (moved[0] / f"iter_{ITERS}.pth").is_file()
    what = "seed" if "seed" in change else "config_sha256"
    assert f"its run differs in {what};" in caplog.text and str(moved[0]) in caplog.text
    assert rerun["meta"]["run_identity"] == fresh["meta"]["run_identity"]


def test_a_second_trainer_on_a_work_dir_is_refused(demo_assets, tmp_path, capsys):
    work = tmp_path / "work"
    with work_dir_lock(work):
        assert main(train_args(demo_assets, tmp_path, work)[1]) != 0
    err = capsys.readouterr().err
    assert f"{work} is in use by `" in err and f"(pid {os.getpid()} on " in err
    assert not (work / IDENTITY_FILE).exists()


def test_a_split_changed_after_writing_is_refused(demo_assets, tmp_path):
    split = tmp_path / "split.txt"
    split.write_text("ADE_train_00000001\n")
    (tmp_path / "split.txt.sha256").write_text("0" * 64 + "  split.txt\n")
    with pytest.raises(ValueError, match="split.txt: sha256 .* does not match"):
        make_identity(Config(dict(randomness=dict(seed=0))), split=str(split), pretrained=None,
                      load_from=None, data_root=None)


def config(**changes):
    base = dict(model=dict(backbone=dict(pretrained="/a/trunk.pth", depth=4),
                           test_cfg=dict(mode="slide")),
                optim_wrapper=dict(optimizer=dict(lr=1e-3)),
                train_dataloader=dict(batch_size=2, dataset=dict(data_root="/a", ann_file="/s")),
                train_cfg=dict(max_iters=10, val_interval=5), work_dir="/w",
                randomness=dict(seed=0),
                custom_hooks=[dict(type="IterationSeedHook"), dict(type="PreemptionHook")])
    cfg = Config(base)
    cfg.merge_from_dict(changes)
    return cfg


@pytest.mark.parametrize("change,decides", [
    ({"optim_wrapper.optimizer.lr": 2e-3}, True),
    ({"train_cfg.max_iters": 20}, True),
    ({"randomness.seed": 1}, False),  # a component of its own, beside the config's digest
    ({"randomness.deterministic": True}, True),
    ({"model.backbone.depth": 5}, True),
    ({"train_dataloader.batch_size": 1}, True),
    ({"work_dir": "/elsewhere"}, False),
    ({"train_cfg.val_interval": 1}, False),
    # the plan's what-ifs (internseg plan --checkpoint-interval) leave the weights as they are
    ({"default_hooks.checkpoint.interval": 4000}, False),
    ({"model.test_cfg.mode": "whole"}, False),
    ({"model.backbone.pretrained": "/b/trunk.pth"}, False),  # its content is hashed instead
    ({"train_dataloader.dataset.data_root": "/b"}, False),
])
def test_what_decides_the_weights(change, decides):
    assert (training_config(config(**change)) != training_config(config())) is decides


def test_settling_a_work_dir_without_identity_moves_it_aside(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "iter_2.pth").write_bytes(b"old")
    identity = dict(digest="f" * 64, components={})
    moved = settle_work_dir(work, identity)
    assert moved is not None and (moved / "iter_2.pth").read_bytes() == b"old"
    assert json.loads((work / IDENTITY_FILE).read_text())["digest"] == "f" * 64
    assert settle_work_dir(work, identity) is None  # the same identity keeps it


def test_the_sha256_verified_at_fetch_is_trusted_until_the_file_changes(tmp_path):
    import hashlib
    import os
    import time

    from internseg.io import recorded_sha256

    trunk = tmp_path / "trunk.pth"
    trunk.write_bytes(b"weights")
    (tmp_path / "trunk.pth.sha256").write_text("a" * 64 + "  trunk.pth\n")
    assert recorded_sha256(trunk) == "a" * 64  # the sidecar, not a re-hash
    time.sleep(0.01)
    replacement = tmp_path / "other.pth"
    replacement.write_bytes(b"other weights")
    os.replace(replacement, trunk)  # replacing the file changes its inode's ctime
    assert recorded_sha256(trunk) == hashlib.sha256(b"other weights").hexdigest()


def test_a_superseded_link_of_the_identity_starting_comes_back_as_the_work_dir(tmp_path):
    """Versions that did not follow a linked work dir moved the link itself aside and trained
    the next identity in a real folder: undoing that change brings the link back."""
    scratch = tmp_path / "scratch" / "work"
    scratch.mkdir(parents=True)
    (scratch / "iter_2.pth").write_bytes(b"run a")
    run_a, run_b = (dict(digest=c * 64, components={"seed": i}) for i, c in enumerate("ab"))
    (scratch / IDENTITY_FILE).write_text(json.dumps(run_a))
    work = tmp_path / "work"
    work.with_name(f"work.superseded-{'a' * 12}-20240101-120000").symlink_to(scratch)
    work.mkdir()
    (work / "iter_2.pth").write_bytes(b"run b")
    (work / IDENTITY_FILE).write_text(json.dumps(run_b))
    moved = settle_work_dir(work, run_a)
    assert work.is_symlink() and work.readlink() == scratch
    assert (work / "iter_2.pth").read_bytes() == b"run a"
    assert moved == tmp_path / f"work.superseded-{'b' * 12}-{moved.name[-15:]}"
    assert (moved / "iter_2.pth").read_bytes() == b"run b"
    assert superseded(work) == [moved]


# ---------------------------------------------------------------- through the workflow

RUN = f"results/demo/runs/ade20k/{DEMO_TRUNK}/linear_probing"
WORK = f"work/demo/ade20k/{DEMO_TRUNK}/linear_probing"
# the demo's lr is its one schedule's (every demo config is derived with it)
CONFIG = "core/internseg/configs/_base_/demo.py"
LR_LINE = "    lr={},\n"


def tiny_workflow(dest: Path) -> Path:
    """The demo workflow and its package on one run of 2 iterations: a job takes seconds."""
    dest.mkdir(parents=True, exist_ok=True)
    wf = workflow_copy(dest, with_package=True)
    config = yaml.safe_load((wf / "config.yaml").read_text())
    config["run"] = ["linear_probing"]
    config["presets"]["demo"]["cfg_options"] = {"train_cfg.max_iters": 2}
    config["presets"]["demo"]["data"]["ade20k"].update(train_count=8, val_count=2)
    (wf / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return wf


def with_lr(wf: Path, lr: str) -> dict:
    """Edit the experiment's config to this lr and ask the workflow for the run's weights."""
    config = wf / CONFIG
    text = config.read_text()
    (current,) = [line for line in text.splitlines(keepends=True)
                  if line.startswith(LR_LINE.split("{")[0])]
    config.write_text(text.replace(current, LR_LINE.format(lr)))
    result = snakemake(wf, "--cores", "2", f"{RUN}/final.pth")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule train:" in result.stdout + result.stderr
    return torch.load(wf / RUN / "final.pth", weights_only=True)


def last_start(wf: Path) -> str:
    """What the trainer's log holds of its last start (a header line begins each)."""
    return (wf / RUN / "train.log").read_text().split("==== ")[-1]


def test_undoing_a_config_edit_resumes_the_finished_run_through_the_workflow(tmp_path):
    """The undo brought back nothing: the trainer moved the edited run aside, removed the
    finished one as beyond the newest superseded, and trained it again from iteration 0."""
    wf = tiny_workflow(tmp_path)
    work = wf / WORK
    finished = with_lr(wf, "2e-3")
    edited = with_lr(wf, "1e-3")
    (aside,) = superseded(work)
    undone = with_lr(wf, "2e-3")
    assert_bitwise_equal(undone["state_dict"], finished["state_dict"])
    assert undone["meta"]["run_identity"] == finished["meta"]["run_identity"]
    assert json.loads((work / IDENTITY_FILE).read_text())["digest"] == (
        finished["meta"]["run_identity"])
    (edit_aside,) = superseded(work)  # the edited run, kept for its own undo
    assert json.loads((edit_aside / IDENTITY_FILE).read_text())["digest"] == (
        edited["meta"]["run_identity"])
    said = last_start(wf)
    assert f"brought back {aside.relative_to(wf)}, this run's own work dir" in said
    assert f"auto-resume: from {WORK}/iter_2.pth" in said
    assert "from iteration 0" not in said and "removing" not in said


def test_a_work_dir_linked_to_scratch_stays_there_through_the_workflow(tmp_path):
    """The first change renamed the link aside and trained in a new folder off scratch; from
    the second on, every start died on `rmtree` of that link."""
    wf = tiny_workflow(tmp_path / "wf")
    scratch = tmp_path / "scratch" / "linear_probing"
    scratch.mkdir(parents=True)
    work = wf / WORK
    work.parent.mkdir(parents=True)
    work.symlink_to(scratch)
    runs = {lr: with_lr(wf, lr)["meta"]["run_identity"] for lr in ("2e-3", "1e-3", "5e-4")}
    # every run on scratch, moved aside there; the oldest aside removed by retention
    assert work.is_symlink() and work.readlink() == scratch
    assert sorted(p.name for p in work.parent.iterdir()) == [".linear_probing.lock",
                                                             "linear_probing"]
    (kept,) = superseded(scratch)
    assert json.loads((kept / IDENTITY_FILE).read_text())["digest"] == runs["1e-3"]
    assert f"removing {scratch}.superseded-{runs['2e-3'][:12]}-" in last_start(wf)

    undone = with_lr(wf, "1e-3")  # brought back on scratch
    assert undone["meta"]["run_identity"] == runs["1e-3"]
    assert work.readlink() == scratch and not kept.exists()
    assert json.loads((scratch / IDENTITY_FILE).read_text())["digest"] == runs["1e-3"]
    assert f"auto-resume: from {WORK}/iter_2.pth" in last_start(wf)
    (aside,) = superseded(scratch)
    assert json.loads((aside / IDENTITY_FILE).read_text())["digest"] == runs["5e-4"]

    cleaned = subprocess.run([str(BIN / "internseg"), "clean", "--remove"], cwd=wf,
                             capture_output=True, text=True)
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"removing {aside} (" in cleaned.stdout and not aside.exists()
    assert (scratch / "iter_2.pth").is_file() and work.readlink() == scratch
