"""No checkpoint runs code: every way a checkpoint enters the process refuses a pickle that
``torch.load(weights_only=True)`` cannot load, with one line naming the file (exit 2)."""

import builtins
import zipfile
from pathlib import Path

import pytest
import torch

import internseg.plugin  # noqa: F401  (registers models and hooks, as custom_imports does)
from internseg.cli import main
from internseg.engine.resilience import is_readable_checkpoint, latest_valid_checkpoint
from internseg.safe_load import (CheckpointError, UnsafeCheckpointError, safe_load,
                                 verify_checkpoint)



class Payload:
    """Unpickled by a full pickle load, this creates ``marker``: what an attacker's
    ``os.system`` would do, without harm."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def plant(path: Path, marker: Path) -> Path:
    """A file shaped like a Runner checkpoint, with the payload in its meta."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": {"iter": 5, "epoch": 0, "note": Payload(marker)},
                "state_dict": {"decode_head.conv_seg.weight": torch.zeros(150, 96, 1, 1)}},
               path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    return plant(tmp_path / "evil.pth", marker), marker


def test_the_payload_is_live_under_mmengines_own_fallback(evil):
    """Control: mmengine's loader, which our code must never reach, runs the payload."""
    from mmengine.runner.checkpoint import _safe_torch_load

    path, marker = evil
    _safe_torch_load(str(path), map_location="cpu")
    assert marker.exists()


def assert_refused(capsys, code: int, path: Path, marker: Path) -> str:
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert not marker.exists(), "the pickle's payload ran"
    line = err.strip().splitlines()[-1]
    assert str(path) in line and "refused" in line and "io.open" in line, line
    return line


def demo_args(demo_assets, tmp_path, experiment="linear_probing"):
    split = tmp_path / "split.txt"
    split.write_text("".join(f"ADE_train_{i:08d}\n" for i in range(1, 9)))
    return ["train", f"demo/{experiment}", "--work-dir", str(tmp_path / "work"),
            "--data-root", str(demo_assets["data_root"]), "--split", str(split),
            "--pretrained", str(demo_assets["weights"]), "--threads", "2",
            "--cfg-options", "train_cfg.max_iters=2"]


@pytest.mark.parametrize("option", ["--load-from", "--resume-from"])
def test_train_refuses_a_planted_checkpoint(demo_assets, tmp_path, evil, capsys, option):
    path, marker = evil
    code = main([*demo_args(demo_assets, tmp_path), option, str(path)])
    assert_refused(capsys, code, path, marker)


@pytest.mark.parametrize("option", ["--load-from", "--resume-from", "--pretrained"])
def test_a_checkpoint_by_address_is_refused_with_what_to_do(demo_assets, tmp_path, capsys,
                                                             option):
    args = demo_args(demo_assets, tmp_path)
    url = "https://example.invalid/iter_4.pth"
    if option == "--pretrained":
        args[args.index(option) + 1] = url
    else:
        args += [option, url]
    assert main(args) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{option} {url}: only local checkpoint files are loaded; fetch it with " \
           "`internseg fetch`" in line, line
    assert not (tmp_path / "work").exists()


def test_auto_resume_refuses_a_planted_checkpoint_rather_than_skip_it(demo_assets, tmp_path,
                                                                       capsys):
    marker = tmp_path / "PWNED"
    # a real run first, so that the work dir is this run's (same identity) and is resumed
    assert main([*demo_args(demo_assets, tmp_path), "--auto-resume"]) == 0
    path = plant(tmp_path / "work" / "iter_4.pth", marker)
    capsys.readouterr()
    code = main([*demo_args(demo_assets, tmp_path), "--auto-resume"])
    line = assert_refused(capsys, code, path, marker)
    # every retry of the job stops here: the line says what clears it
    assert f"move {path} out of {path.parent} (or delete it)" in line, line


def test_a_planted_checkpoint_in_a_work_dir_of_no_known_run_is_moved_aside_unread(
        demo_assets, tmp_path):
    marker = tmp_path / "PWNED"
    (tmp_path / "work").mkdir()
    plant(tmp_path / "work" / "iter_4.pth", marker)
    assert main([*demo_args(demo_assets, tmp_path), "--auto-resume"]) == 0
    assert not marker.exists()
    (moved,) = tmp_path.glob("work.superseded-*")
    assert (moved / "iter_4.pth").is_file()


def test_test_refuses_a_planted_checkpoint(demo_assets, tmp_path, evil, capsys):
    path, marker = evil
    code = main(["test", "demo/linear_probing", str(path), "--out", str(tmp_path / "m.json"),
                 "--data-root", str(demo_assets["data_root"]),
                 "--pretrained", str(demo_assets["weights"]), "--threads", "2"])
    assert_refused(capsys, code, path, marker)
    assert not (tmp_path / "m.json").exists()


def test_pretrained_trunk_refuses_a_planted_file(demo_assets, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    trunk = torch.load(demo_assets["weights"], weights_only=True)
    trunk["note"] = Payload(marker)  # the released format: a flat dict of tensors
    path = tmp_path / "intern_vit_6b_224px.pth"
    torch.save(trunk, path)
    args = demo_args(demo_assets, tmp_path)
    args[args.index("--pretrained") + 1] = str(path)
    assert_refused(capsys, main(args), path, marker)


def test_mmengines_loader_schemes_are_all_ours(evil):
    """What the Runner's load_from/resume, init_cfg=Pretrained and the strategies call."""
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

    path, marker = evil
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        _load_checkpoint(str(path), map_location="cpu")
    with pytest.raises(CheckpointError, match="only local checkpoint files"):
        CheckpointLoader.load_checkpoint("https://example.invalid/x.pth")
    assert not marker.exists()
    assert all(loader.__module__ == "internseg.safe_load"
               for loader in CheckpointLoader._schemes.values())


def test_sharded_strategy_resume_refuses_a_planted_checkpoint(evil):
    from internseg.engine.sharding import ShardedTrunkStrategy

    path, marker = evil
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        ShardedTrunkStrategy(work_dir=str(path.parent / "work")).load_checkpoint(str(path))
    assert not marker.exists()


def test_runner_checkpoints_need_no_allowed_globals(demo_assets, tmp_path):
    """What the Runner writes (optimizer, schedulers, message hub) loads weights-only."""
    args = demo_args(demo_assets, tmp_path)
    args[-1] = "train_cfg.max_iters=1"
    assert main([*args, "--cfg-options", "default_hooks.checkpoint.interval=1"]) == 0
    saved = tmp_path / "work" / "iter_1.pth"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(saved)) == []
    hub = torch.load(saved, weights_only=True)["message_hub"]
    assert hub["log_scalars"]["train/loss"]["log_history"].dtype == torch.float64


# ---------------------------------------------------------------- damaged checkpoints


def flip_tensor_byte(path: Path) -> None:
    """Damage tensor data and leave the zip directory intact (a bad disk block)."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if "/data/" in i.filename and i.file_size > 8)
    data = bytearray(path.read_bytes())
    # local header: 30 bytes + name + extra field, whose lengths sit at offsets 26 and 28
    start = info.header_offset
    name_len = int.from_bytes(data[start + 26:start + 28], "little")
    extra_len = int.from_bytes(data[start + 28:start + 30], "little")
    at = start + 30 + name_len + extra_len + 4
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damage_inside_an_intact_zip_falls_back_to_an_older_checkpoint(tmp_path, caplog):
    for it in (2, 4):
        torch.save({"state_dict": {"w": torch.arange(16.0) + it}}, tmp_path / f"iter_{it}.pth")
    flip_tensor_byte(tmp_path / "iter_4.pth")
    with zipfile.ZipFile(tmp_path / "iter_4.pth") as zf:
        assert any(n.endswith("data.pkl") for n in zf.namelist())  # the old check passed
    assert not is_readable_checkpoint(tmp_path / "iter_4.pth")
    assert latest_valid_checkpoint(tmp_path) == tmp_path / "iter_2.pth"
    assert "iter_4.pth" in caplog.text and "CRC" in caplog.text


def test_a_checkpoint_with_duplicate_zip_entries_is_unreadable(tmp_path):
    """Which copy a reader takes is up to the reader: neither is trusted."""
    path = tmp_path / "iter_4.pth"
    torch.save({"state_dict": {"w": torch.zeros(4)}}, path)
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if "/data/" in n)
    with zipfile.ZipFile(path, "a") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr(name, torch.ones(4).numpy().tobytes())
    with pytest.raises(CheckpointError, match=f"{path}: duplicate entries"):
        verify_checkpoint(path)


def test_a_planted_checkpoint_is_not_skipped_by_auto_resume(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "iter_2.pth")
    plant(tmp_path / "iter_4.pth", tmp_path / "PWNED")
    with pytest.raises(UnsafeCheckpointError, match="iter_4.pth"):
        latest_valid_checkpoint(tmp_path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_unreadable_checkpoints_are_one_line_errors(demo_assets, tmp_path, capsys, damage):
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2],
                      "random": torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy()
                      .tobytes(), "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint"):
        safe_load(path)
    code = main([*demo_args(demo_assets, tmp_path), "--load-from", str(path)])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and str(path) in line and "not a readable checkpoint" in line, line


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_plain_pickle_is_refused_without_advice_to_load_it_unsafely(tmp_path, capsys,
                                                                       protocol):
    """Not torch.save's zip: a bare pickle (pickle.dump) holding the payload."""
    import pickle

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": Payload(marker)}, protocol=protocol))
    with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint") as err:
        safe_load(path)
    assert not marker.exists(), "the pickle's payload ran"
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value), err.value


# ---------------------------------------------------------------- sharded checkpoint folders


def folder_checkpoint(path: Path, state=None) -> Path:
    """A checkpoint folder as a sharded run writes it (here by one process): DCP's
    .metadata and data file, and extra.pth."""
    import torch.distributed.checkpoint as dcp

    from internseg.io import save_torch

    dcp.save(state or {"model": {"w": torch.arange(6.0)}}, checkpoint_id=str(path))
    save_torch(path / "extra.pth", {"meta": {"iter": 4}})
    return path


def plant_metadata(folder: Path, marker: Path) -> Path:
    """torch's FileSystemReader unpickles .metadata with pickle.load: a payload there runs."""
    import pickle

    with open(folder / ".metadata", "wb") as f:
        pickle.dump(Payload(marker), f)
    return folder


def test_the_metadata_payload_is_live_under_torchs_own_reader(tmp_path):
    """Control: torch 2.13's FileSystemReader, which our code must never use, runs it."""
    from torch.distributed.checkpoint import FileSystemReader

    marker = tmp_path / "PWNED"
    folder = plant_metadata(folder_checkpoint(tmp_path / "iter_4.pth"), marker)
    FileSystemReader(str(folder)).read_metadata()
    assert marker.exists()


def test_a_checkpoint_folder_with_a_payload_in_its_metadata_is_refused(tmp_path):
    from internseg.safe_load import safe_dcp_load

    marker = tmp_path / "PWNED"
    folder = plant_metadata(folder_checkpoint(tmp_path / "work" / "iter_4.pth"), marker)
    with pytest.raises(UnsafeCheckpointError, match=r"refused: io\.open is not a "
                                                    r"checkpoint metadata type"):
        verify_checkpoint(folder)
    with pytest.raises(UnsafeCheckpointError, match="io.open"):
        safe_dcp_load({"model": {"w": torch.zeros(6)}}, folder)
    # auto-resume stops at it rather than skipping it for an older checkpoint
    with pytest.raises(UnsafeCheckpointError, match=f"move {folder} out of"):
        latest_valid_checkpoint(folder.parent)
    assert not marker.exists(), "the metadata's payload ran"


def test_train_refuses_a_planted_checkpoint_folder_in_one_line(demo_assets, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    folder = plant_metadata(folder_checkpoint(tmp_path / "iter_4.pth"), marker)
    code = main([*demo_args(demo_assets, tmp_path), "--resume-from", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    line = err.strip().splitlines()[-1]
    assert str(folder) in line and "refused" in line and "io.open" in line, line


def test_a_checkpoint_folder_holding_a_pickled_object_is_refused(tmp_path):
    """torch's load planner unpickles a non-tensor entry of the data files with
    weights_only=False; our folders hold tensors only, so any other entry is refused before
    anything is read."""
    import torch.distributed.checkpoint as dcp

    from internseg.safe_load import safe_dcp_load

    marker = tmp_path / "PWNED"
    folder = folder_checkpoint(tmp_path / "iter_4.pth",
                               {"model": {"w": torch.zeros(2)}, "note": Payload(marker)})
    with pytest.raises(UnsafeCheckpointError, match=r"\['note'\] are not tensors"):
        verify_checkpoint(folder)
    with pytest.raises(UnsafeCheckpointError, match="not tensors"):
        safe_dcp_load({"model": {"w": torch.zeros(2)}, "note": None}, folder)
    assert not marker.exists()
    # control: torch's own load runs it
    dcp.load({"model": {"w": torch.zeros(2)}, "note": None}, checkpoint_id=str(folder))
    assert marker.exists()


def test_a_checkpoint_folder_pointing_outside_itself_is_refused(tmp_path):
    import pickle

    from internseg.safe_load import read_dcp_metadata

    folder = folder_checkpoint(tmp_path / "iter_4.pth")
    metadata = read_dcp_metadata(folder / ".metadata")
    for info in metadata.storage_data.values():
        info.relative_path = "../../secrets"
    with open(folder / ".metadata", "wb") as f:
        pickle.dump(metadata, f)
    with pytest.raises(UnsafeCheckpointError, match="a data file outside the folder"):
        verify_checkpoint(folder)


def test_a_one_process_run_says_it_cannot_resume_a_checkpoint_folder(demo_assets, tmp_path,
                                                                      capsys):
    """A folder is read into shards; one process trains unsharded: refused in one line
    before the model is built, naming the way that works."""
    folder = folder_checkpoint(tmp_path / "iter_4.pth")
    code = main([*demo_args(demo_assets, tmp_path), "--resume-from", str(folder)])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and f"{folder}: a sharded run's checkpoint folder" in line, line
    assert "--gpus 2 or more" in line
