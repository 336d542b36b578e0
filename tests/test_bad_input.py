"""Bad input and faults on the demo: one line naming the culprit (exit 2), never a silent
acceptance; anything unexpected keeps its traceback."""

import errno
import io
import logging
import os
from pathlib import Path

import pytest
import torch

import internseg.plugin  # noqa: F401  (registers models and hooks, as custom_imports does)
from internseg.cli import main
from internseg.config import load_config
from internseg.models.pretrained import to_released_layout
from internseg.engine.segmentor import build_segmentor
from internseg.errors import InputError
from internseg.io import write_json
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
    # the lr at the poly decay's end (0) for 155 of 160 iterations
    ("param_scheduler.1.end=5", "the schedule ends at iteration 5 of train_cfg.max_iters=160"),
    # recorded in the dumped config, read by nothing: the pipelines hold copies of the value
    ("crop_size=(448,448)", "crop_size=(448, 448): a variable of the config file"),
    ("data_root=elsewhere", "it would be recorded and change nothing; set --data-root"),
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


@pytest.mark.parametrize("options,named", [
    (["--ema-momentum", "0.5"], "demo/full_tuning: --ema-momentum on a sharded trunk: "
                                "mmengine's EMAHook keeps a whole copy of the model on every rank"),
    (["--data-root", "/nowhere"], "--data-root /nowhere: no such folder"),
])
def test_what_every_rank_would_refuse_is_said_before_they_start(monkeypatch, capsys, tmp_path,
                                                                options, named):
    """Each rank printed its line, then torchrun its ChildFailedError traceback."""
    import internseg.cli

    monkeypatch.setattr(internseg.cli.os, "execvp", lambda *command: pytest.fail(
        f"the ranks were started: {command}"))
    assert main(["train", "demo/full_tuning", "--gpus", "2", "--work-dir", str(tmp_path / "w"),
                 *options]) == 2
    assert named in last_line(capsys)



# ---------------------------------------------------------------- checked where they enter


def only_line(capsys) -> str:
    """The error output, which must be one line and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line or "Traceback" in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def prepared_tree(demo_assets, tmp_path, **manifest):
    """The demo tree with a manifest beside it, as the workflow lays them out."""
    data = tmp_path / "data"
    data.mkdir()
    tree = data / "ADEChallengeData2016"
    tree.symlink_to(demo_assets["data_root"])
    stems = sorted(p.stem for p in (tree / "images" / "training").iterdir())
    write_json(data / "manifest.json", {"valid": True, "root": str(tree), "train_stems": stems,
                                        "train_count": len(stems), "val_count": 4, **manifest})
    return tree


@pytest.mark.parametrize("tree", ["missing", "empty"])
def test_a_data_root_without_the_datasets_folders_fails_before_anything_is_built(
        demo_assets, tmp_path, capsys, tree):
    root = tmp_path / "data"
    if tree == "empty":
        root.mkdir()
    args = train_args(demo_assets, tmp_path)
    args[args.index("--data-root") + 1] = str(root)
    assert main(args) == 2
    line = only_line(capsys)
    assert f"--data-root {root}: no " in line, line
    assert "no such folder" in line if tree == "missing" else "images/training" in line
    assert not (tmp_path / "work").exists(), "refused before the work dir was touched"
    out = tmp_path / "metrics.json"
    assert main(["test", "demo/linear_probing", str(demo_assets["weights"]), "--out", str(out),
                 "--data-root", str(root)]) == 2
    assert f"--data-root {root}: no " in only_line(capsys)


@pytest.mark.parametrize("beside", [False, True])
def test_a_split_naming_an_image_the_dataset_lacks_fails_before_iteration_1(
        demo_assets, tmp_path, capsys, beside):
    args = train_args(demo_assets, tmp_path)
    if beside:  # the manifest is the reference: its train_stems leave image 24 out
        tree = prepared_tree(demo_assets, tmp_path, train_stems=[
            f"ADE_train_{i:08d}" for i in range(1, 24)])
        args[args.index("--data-root") + 1] = str(tree)
    split = tmp_path / "split.txt"
    split.write_text("ADE_train_00000001\nADE_train_00000099\nADE_train_00000024\n")
    assert main(args) == 2
    line = only_line(capsys)
    assert f"--split {split}:" in line and "line 2 'ADE_train_00000099'" in line, line
    assert ("line 3 'ADE_train_00000024'" in line) == beside, line
    assert ("manifest.json" in line) == beside, line
    assert not (tmp_path / "work").exists()


def test_an_output_that_is_a_directory_is_refused_before_the_work(demo_assets, tmp_path,
                                                                   capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["test", "demo/linear_probing", str(demo_assets["weights"]), "--out",
                 str(folder), "--data-root", str(demo_assets["data_root"])]) == 2
    assert f"--out {folder}: is a directory" in only_line(capsys)
    args = train_args(demo_assets, tmp_path)
    args[args.index("--final-checkpoint") + 1] = str(folder)
    assert main(args) == 2
    assert f"--final-checkpoint {folder}: is a directory" in only_line(capsys)
    assert not (tmp_path / "work").exists()


def test_a_cfg_option_without_a_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "demo/head_tuning", "--cfg-options", "train_cfg.max_iters"])
    assert stop.value.code == 2
    assert "--cfg-options: 'train_cfg.max_iters' is not KEY=VALUE" in only_line(capsys)


@pytest.mark.parametrize("option,named", [
    ("model.backbone.deform_num_heads=5",
     "model.backbone.deform_num_heads: 5 heads do not divide the deformable attention's "
     "value width 24"),
    ("model.backbone.interaction_indexes=[[0,1]]",
     "model.backbone.interaction_indexes: [[0, 1]]: must be four ascending"),
    ("model.backbone.interaction_indexes=[[0,9]]",
     "model.backbone.interaction_indexes: blocks [9] outside trunk"),
])
def test_adapter_options_that_do_not_fit_the_trunk_name_the_key(capsys, option, named):
    """Known only when the model builds (but for blocks the trunk lacks, checked with the
    config): inspect builds it, on the meta device."""
    assert main(["inspect", "demo/adapter_tuning", "--cfg-options", option]) == 2
    line = only_line(capsys)
    assert "demo/adapter_tuning" in line and named in line, line


def test_training_names_the_key_a_model_cannot_be_built_with(demo_assets, tmp_path, capsys):
    args = train_args(demo_assets, tmp_path, experiment="adapter_tuning",
                      options=("model.backbone.deform_num_heads=5",))
    assert main(args) == 2
    assert "demo/adapter_tuning: model.backbone.deform_num_heads: 5 heads" in only_line(capsys)


def released_head(tmp_path, change) -> Path:
    """A head-only file in the released layout (resamplers as backbone.upN), changed."""
    state = to_released_layout(build_segmentor(load_config("demo/head_tuning")).state_dict(),
                               with_trunk=False)
    change(state)
    path = tmp_path / "released.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("change,named", [
    (lambda s: s.update({"decode_head.conv_seg.weight": torch.zeros(150, 8, 1, 1)}),
     "decode_head.conv_seg.weight: shape (150, 8, 1, 1), the model's (150, 32, 1, 1)"),
    (lambda s: s.update({"backbone.up1.0.weight": torch.zeros(3, 3, 2, 2)}),
     "neck.up1.0.weight (backbone.up1.0.weight in the file): shape (3, 3, 2, 2)"),
    (lambda s: s.update({"decode_head.conv_seg.weight": torch.zeros(150, 32, 1, 1,
                                                                      dtype=torch.int8)}),
     "decode_head.conv_seg.weight: torch.int8, the model holds torch.float32"),
    (lambda s: s.update({"decode_head.conv_seg.bias": torch.zeros(150, dtype=torch.complex64)}),
     "decode_head.conv_seg.bias: torch.complex64"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_naming_file_and_key(
        demo_assets, tmp_path, capsys, change, named):
    path = released_head(tmp_path, change)
    out = tmp_path / "metrics.json"
    assert main(["test", "demo/head_tuning", str(path), "--out", str(out), "--data-root",
                 str(demo_assets["data_root"]), "--pretrained", str(demo_assets["weights"])]) == 2
    line = only_line(capsys)
    assert f"{path} does not fit the config: " in line and named in line, line
    assert not out.exists()


def test_a_pretrained_trunk_of_int8_codes_is_refused(demo_assets, tmp_path):
    trunk = torch.load(demo_assets["weights"], weights_only=True)
    trunk["blocks.0.attn.qkv.weight"] = trunk["blocks.0.attn.qkv.weight"].to(torch.int8)
    path = tmp_path / "int8.pth"
    torch.save(trunk, path)
    model = build_segmentor(load_config("demo/linear_probing")).backbone
    with pytest.raises(CheckpointError, match=r"int8\.pth does not fit the config: blocks\.0\."
                                              r"attn\.qkv\.weight: torch\.int8, the model holds"):
        load_pretrained_backbone(model, path)


def test_a_pretrained_file_a_full_checkpoint_never_opens_is_said(demo_assets, tmp_path,
                                                                  caplog):
    """A trained-trunk checkpoint holds its trunk: --pretrained is not read; say so."""
    full = tmp_path / "full.pth"
    torch.save({"state_dict": build_segmentor(load_config("demo/fewshot_1of16")).state_dict()},
               full)
    assert main(["test", "demo/fewshot_1of16", str(full), "--out", str(tmp_path / "m.json"),
                 "--data-root", str(demo_assets["data_root"]), "--pretrained", "/nowhere.pth",
                 "--threads", "2"]) == 0
    said = f"--pretrained /nowhere.pth: not used: {full} holds the trunk's weights"
    assert any(said in r.message and r.levelname == "WARNING" for r in caplog.records)


def test_evaluating_fewer_images_than_the_manifest_lists_is_refused(demo_assets, tmp_path,
                                                                     capsys):
    tree = prepared_tree(demo_assets, tmp_path, val_count=5)
    out = tmp_path / "metrics.json"
    head = released_head(tmp_path, lambda s: None)
    assert main(["test", "demo/head_tuning", str(head), "--out", str(out), "--data-root",
                 str(tree), "--pretrained", str(demo_assets["weights"])]) == 2
    line = only_line(capsys)
    assert f"{tree}: 4 validation images to evaluate" in line and "lists 5" in line, line
    assert not out.exists()


def test_evaluating_a_copy_of_the_tree_without_its_manifest_missing_an_image_is_refused(
        demo_assets, tmp_path, capsys, caplog):
    """A copy of the data root leaves its manifest behind: the count was never checked."""
    import shutil

    tree = tmp_path / "copy" / "ADEChallengeData2016"
    shutil.copytree(demo_assets["data_root"], tree)
    out = tmp_path / "metrics.json"
    head = released_head(tmp_path, lambda s: None)
    command = ["test", "demo/head_tuning", str(head), "--out", str(out), "--data-root",
               str(tree), "--pretrained", str(demo_assets["weights"])]
    assert main(command) == 0
    assert f"{tree}: no manifest beside the tree" in caplog.text
    out.unlink()
    next((tree / "images" / "validation").iterdir()).unlink()
    assert main(command) == 2
    line = only_line(capsys)
    assert (f"{tree}: 3 validation images to evaluate, but 4 label maps in "
            f"{tree / 'annotations' / 'validation'}") in line, line
    assert not out.exists()


def test_a_full_disk_while_checkpointing_names_the_checkpoint(demo_assets, tmp_path, capsys,
                                                               monkeypatch):
    """mmengine writes a checkpoint's bytes with a plain write, whose ENOSPC names no file."""
    from mmengine.fileio.backends.local_backend import LocalBackend

    def onto_a_full_disk(self, obj, filepath):
        with open("/dev/full", "wb") as f:
            f.write(obj)

    monkeypatch.setattr(LocalBackend, "put", onto_a_full_disk)
    args = train_args(demo_assets, tmp_path, options=("default_hooks.checkpoint.interval=1",))
    assert main(args) == 2
    line = only_line(capsys)
    assert f"{tmp_path / 'work' / 'iter_1.pth'}: no space left on the device" in line, line
    assert not [p.name for p in (tmp_path / "work").iterdir() if ".tmp." in p.name]


def test_a_broken_run_identity_is_named(demo_assets, tmp_path, capsys):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "run_identity.json").write_text('["not", "an", "identity"]')
    assert main(train_args(demo_assets, tmp_path)) == 2
    line = only_line(capsys)
    assert f"{tmp_path / 'work' / 'run_identity.json'}: run identity must be a JSON object" in line


class FillingDisk(io.FileIO):
    """A file on a disk that fills after ``room`` bytes: a write past them fails as the
    system's does, naming no file."""

    room = 4096

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def fill_the_disk_under_the_final_checkpoint(monkeypatch, demo_assets, tmp_path):
    import internseg.io as io_module

    # torch.save meets the full disk part-way and raises a RuntimeError over the OSError
    monkeypatch.setattr(io_module, "open", lambda path, mode="r", **kwargs: FillingDisk(
        path, "w") if "w" in mode else open(path, mode, **kwargs), raising=False)
    return main(train_args(demo_assets, tmp_path)), tmp_path / "final.pth"


def fill_the_disk_under_the_work_dir(monkeypatch, demo_assets, tmp_path):
    from mmengine.visualization.vis_backend import LocalVisBackend

    def full(self, *args, **kwargs):  # mmengine's scalars.json, written without its name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(LocalVisBackend, "add_scalars", full)
    return main(train_args(demo_assets, tmp_path)), tmp_path / "work"


def fill_the_disk_under_the_test_log(monkeypatch, demo_assets, tmp_path):
    # mmengine's log in test_work/ beside --out: logging printed a traceback per record
    monkeypatch.setattr(logging.FileHandler, "_open", lambda self: io.TextIOWrapper(
        FillingDisk(self.baseFilename, "a"), encoding=self.encoding))
    code = main(["test", "demo/head_tuning", str(released_head(tmp_path, lambda s: None)),
                 "--out", str(tmp_path / "metrics.json"), "--data-root",
                 str(demo_assets["data_root"]), "--pretrained", str(demo_assets["weights"])])
    logs = list((tmp_path / "test_work").glob("*/*.log"))
    assert not (tmp_path / "metrics.json").exists()
    return code, logs[0]


def fill_the_disk_while_converting_maps(monkeypatch, demo_assets, tmp_path):
    from PIL import Image

    from internseg.demo import write_demo_coco_stuff

    sources = tmp_path / "sources"
    write_demo_coco_stuff(sources, n_train=4, n_val=2)
    written = []

    def half_then_full(self, fp, *args, **kwargs):
        written.append(Path(fp))
        Path(fp).write_bytes(b"\x89PNG")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as PIL's close raises it

    monkeypatch.setattr(Image.Image, "save", half_then_full)
    code = main(["prepare", "coco_stuff164k", "--source", str(sources), "--data-root",
                 str(tmp_path / "data"), "--unpinned", "--train-count", "4", "--val-count", "2",
                 "--workers", "1", "--no-progress"])
    assert not written[0].exists()
    return code, written[0].with_name(written[0].name.split(".")[1] + ".png")


@pytest.mark.parametrize("fill", [fill_the_disk_under_the_final_checkpoint,
                                  fill_the_disk_under_the_work_dir,
                                  fill_the_disk_under_the_test_log,
                                  fill_the_disk_while_converting_maps])
def test_a_full_disk_names_the_file_being_written(demo_assets, tmp_path, capsys, monkeypatch,
                                                  fill):
    code, path = fill(monkeypatch, demo_assets, tmp_path)
    line = only_line(capsys)
    assert code == 2 and f"{path}: no space left on the device" in line, line
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name], "a half-written file"


@pytest.mark.parametrize("command", [["records", "--json"], ["records"], ["plan", "--json"],
                                     ["inspect", "demo/head_tuning", "--json"]])
def test_a_reader_that_closes_early_ends_the_output_quietly(command):
    """`internseg records | head -1`: the reader has what it wanted; no BrokenPipeError."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "core")}
    writer = subprocess.Popen([sys.executable, "-m", "internseg", *command], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer.stdout.close()  # before the first byte: what `head -1` does, only sooner
    err = writer.stderr.read().decode()
    assert writer.wait() == 141 and "Traceback" not in err and "Broken" not in err, err
