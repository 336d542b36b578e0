"""Bad input and faults on the demo: one line naming the culprit (exit 2), never a silent
acceptance; anything unexpected keeps its traceback."""

import pytest
import torch

import internseg.plugin  # noqa: F401  (registers models and hooks, as custom_imports does)
from internseg.cli import main
from internseg.config import load_config
from internseg.engine.segmentor import build_segmentor
from internseg.errors import InputError
from internseg.models.pretrained import CheckpointError, load_pretrained_backbone
from internseg.splits import few_shot_subset



def last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def train_args(demo_assets, tmp_path, experiment="linear_probing", iters=2, options=()):
    split = tmp_path / "split.txt"
    split.write_text("".join(f"ADE_train_{i:08d}\n" for i in range(1, 9)))
    return ["train", f"demo/{experiment}", "--work-dir", str(tmp_path / "work"),
            "--data-root", str(demo_assets["data_root"]), "--split", str(split),
            "--pretrained", str(demo_assets["weights"]), "--seed", "0", "--threads", "2",
            "--final-checkpoint", str(tmp_path / "final.pth"),
            "--cfg-options", f"train_cfg.max_iters={iters}", *options]


# ---------------------------------------------------------------- errors keep their cause


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    import internseg.engine.inspect as inspect_module

    def broken(cfg):
        raise KeyError("foo")  # what an mmengine bug would raise, deep inside

    monkeypatch.setattr(inspect_module, "describe", broken)
    with pytest.raises(KeyError, match="foo"):
        main(["inspect", "demo/head_tuning"])


# ---------------------------------------------------------------- --cfg-options


def test_max_iters_option_lengthens_the_schedule_too():
    base = load_config("demo/head_tuning")
    iters = base.train_cfg.max_iters
    longer = load_config("demo/head_tuning", {"train_cfg.max_iters": 3 * iters})
    assert longer.train_cfg.max_iters == 3 * iters
    # the poly factor reaches 0 at the new end, not at the old one
    assert longer.param_scheduler[1].end == 3 * iters + 1
    assert longer.param_scheduler[0].end == base.param_scheduler[0].end


@pytest.mark.parametrize("option,named", [
    ("train_cfg.max_iter=2", "train_cfg.max_iter: no such key"),
    ("model.backbone.depht=2", "model.backbone.depht: no such key"),
    ("model.nothing.x=1", "model.nothing is not a section"),
    ("train_cfg.max_iters=abc", "train_cfg.max_iters='abc': expected int"),
    ("optim_wrapper.optimizer.lr=fast", "optim_wrapper.optimizer.lr='fast': expected float"),
    ("model.backbone.freeze_trunk=1", "expected bool"),
    ("model.backbone.depth=12", "fixed by the trunk"),
])
def test_bad_cfg_options_are_refused_by_name(capsys, option, named):
    assert main(["inspect", "demo/head_tuning"]) == 0
    capsys.readouterr()
    code = main(["train", "demo/head_tuning", "--cfg-options", option])
    line = last_line(capsys)
    assert code == 2 and named in line, line


def test_config_syntax_error_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text('_base_ = ["x.py"]\nmodel = dict(\n')
    assert main(["inspect", str(bad)]) == 2
    line = last_line(capsys)
    assert f"{bad}:2" in line or f"{bad}:3" in line, line


# ---------------------------------------------------------------- seeds


def test_a_negative_seed_is_refused(demo_assets, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(train_args(demo_assets, tmp_path)[:2] + ["--seed", "-1"])
    assert stop.value.code == 2 and "--seed" in capsys.readouterr().err
    # random.Random(-1) draws what random.Random(1) draws: two seeds, one subset
    with pytest.raises(InputError, match="seed must be in 0.."):
        few_shot_subset([f"s{i}" for i in range(32)], 4, -1)


def test_a_broken_seed_record_is_named(tmp_path, capsys):
    record = tmp_path / "split.json"
    record.write_text("{broken")
    assert main(["train", "demo/head_tuning", "--seed-record", str(record)]) == 2
    assert str(record) in last_line(capsys)


# ---------------------------------------------------------------- pretrained trunk


def test_pretrained_with_other_key_names_is_an_error(demo_assets, tmp_path):
    """Every key prefixed ``backbone.``: nothing would load, the trunk would stay random."""
    cfg = load_config("demo/linear_probing")
    trunk = torch.load(demo_assets["weights"], weights_only=True)
    prefixed = tmp_path / "prefixed.pth"
    torch.save({f"backbone.{k}": v for k, v in trunk.items()}, prefixed)
    model = build_segmentor(cfg).backbone
    with pytest.raises(CheckpointError, match=r"prefixed\.pth does not fit the trunk: missing"):
        load_pretrained_backbone(model, prefixed)


def test_pretrained_with_an_unknown_extra_key_is_an_error(demo_assets, tmp_path):
    cfg = load_config("demo/linear_probing")
    trunk = torch.load(demo_assets["weights"], weights_only=True)
    trunk["mystery.weight"] = torch.zeros(3)
    extra = tmp_path / "extra.pth"
    torch.save(trunk, extra)
    with pytest.raises(CheckpointError, match=r"unexpected \['mystery\.weight'\]"):
        load_pretrained_backbone(build_segmentor(cfg).backbone, extra)


def test_pretrained_missing_a_trunk_key_fails_training(demo_assets, tmp_path, capsys):
    trunk = torch.load(demo_assets["weights"], weights_only=True)
    del trunk["blocks.1.attn.qkv.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(trunk, partial)
    args = train_args(demo_assets, tmp_path)
    args[args.index("--pretrained") + 1] = str(partial)
    assert main(args) == 2
    line = last_line(capsys)
    assert str(partial) in line and "blocks.1.attn.qkv.weight" in line, line


# ---------------------------------------------------------------- NaN


def test_a_nan_loss_stops_the_run_keeping_the_last_finite_checkpoint(demo_assets, tmp_path,
                                                                      capsys):
    # an absurd lr drives the weights to inf after one step: the loss of step 2 is NaN
    args = train_args(demo_assets, tmp_path, iters=6, options=(
        "default_hooks.checkpoint.interval=1", "optim_wrapper.optimizer.lr=1e38"))
    assert main(args) == 2
    line = last_line(capsys)
    assert "loss is nan at iteration 2" in line and "iter_1.pth" in line, line
    assert sorted(p.name for p in (tmp_path / "work").glob("iter_*.pth")) == ["iter_1.pth"]
    assert not (tmp_path / "final.pth").exists()


def test_testing_a_checkpoint_of_nans_is_refused(demo_assets, tmp_path, capsys):
    cfg = load_config("demo/linear_probing")
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in build_segmentor(cfg).state_dict().items()
             if not k.startswith("backbone.")}
    ckpt = tmp_path / "nan.pth"
    torch.save({"state_dict": state}, ckpt)
    out = tmp_path / "metrics.json"
    code = main(["test", "demo/linear_probing", str(ckpt), "--out", str(out), "--data-root",
                 str(demo_assets["data_root"]), "--pretrained", str(demo_assets["weights"])])
    line = last_line(capsys)
    assert code == 2 and str(ckpt) in line and "NaN or inf" in line, line
    assert not out.exists()


# ---------------------------------------------------------------- environment


def test_a_read_only_work_dir_fails_at_the_start(demo_assets, tmp_path, capsys):
    # /sys is read-only even for root (the tests may run as root, where chmod does not bind)
    args = train_args(demo_assets, tmp_path)
    args[args.index("--work-dir") + 1] = "/sys/internseg-test-work"
    assert main(args) == 2
    line = last_line(capsys)
    assert "work dir /sys/internseg-test-work: not writable" in line, line


def test_a_read_only_output_folder_fails_before_training(demo_assets, tmp_path, capsys):
    args = train_args(demo_assets, tmp_path)
    args[args.index("--final-checkpoint") + 1] = "/sys/internseg-test/final.pth"
    assert main(args) == 2
    assert "--final-checkpoint folder /sys/internseg-test: not writable" in last_line(capsys)
    assert not list((tmp_path / "work").glob("iter_*.pth")), "refused before training"


def test_ranks_without_cuda_on_a_ddp_config_are_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "demo/head_tuning", "--gpus", "2"]) == 2
    line = last_line(capsys)
    assert "demo/head_tuning" in line and "need CUDA GPUs" in line, line

