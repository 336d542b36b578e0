"""prepare-ade20k on synthetic archives in the real ADEChallengeData2016 layout."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_server import serving
from PIL import Image

from internseg import archives, download, preparation
from internseg.archives import DatasetError
from internseg.datasets import DATASETS
from internseg.preparation import prepare_extracted
from internseg.download import part_path
from internseg.errors import InputError

ADE20K = DATASETS["ade20k"]
TOP = ADE20K.tree
N_TRAIN, N_VAL = 6, 2
COUNTS = dict(train_count=N_TRAIN, val_count=N_VAL)


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def image_bytes(w: int = 8, h: int = 6) -> bytes:
    rng = np.random.default_rng(w * 100 + h)
    return _encode(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "JPEG")


def label_bytes(w: int = 8, h: int = 6, top: int = 150) -> bytes:
    label = (np.arange(w * h, dtype=np.int64).reshape(h, w) % 151).astype(np.uint8)
    label[0, 0] = top
    return _encode(label, "PNG")


def dataset_entries(n_train: int = N_TRAIN, n_val: int = N_VAL) -> dict[str, bytes]:
    entries = {f"{TOP}/objectInfo150.txt": b"Idx\tRatio\tTrain\tVal\tName\n",
               f"{TOP}/sceneCategories.txt": b""}
    for folder, tag, count in (("training", "train", n_train), ("validation", "val", n_val)):
        for i in range(1, count + 1):
            stem = f"ADE_{tag}_{i:08d}"
            entries[f"{TOP}/images/{folder}/{stem}.jpg"] = image_bytes()
            entries[f"{TOP}/annotations/{folder}/{stem}.png"] = label_bytes()
    return entries


def write_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, link_target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix, so external_attr carries the file type
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, link_target)
    return path


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def good_zip(tmp_path) -> Path:
    return write_zip(tmp_path / "ADEChallengeData2016.zip", dataset_entries())


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def prepare(source, data_root, **kwargs):
    return prepare_extracted(ADE20K, source, data_root, progress=False, **{**COUNTS, **kwargs})


# ---------------------------------------------------------------- happy path


def test_good_zip_extracted_with_manifest(good_zip, data_root):
    result = prepare(good_zip, data_root, sha1=sha1(good_zip))
    target = data_root / TOP
    assert result.action == "extracted"
    assert not target.is_symlink()
    assert listing(target / "images" / "training") == [
        f"ADE_train_{i:08d}.jpg" for i in range(1, 7)]
    assert len(listing(target / "annotations" / "validation")) == 2
    # only the tree and its manifest: the partial folder is gone
    assert listing(data_root) == [TOP, f"{TOP}.manifest.json"]

    manifest = json.loads((data_root / f"{TOP}.manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["valid"] is True
    assert manifest["root"] == str(target)
    assert manifest["source"] == str(good_zip)
    assert manifest["source_kind"] == "zip"
    assert manifest["source_sha1"] == sha1(good_zip)
    assert manifest["train_count"] == 6 and manifest["val_count"] == 2
    assert manifest["train_stems"] == [f"ADE_train_{i:08d}" for i in range(1, 7)]
    assert manifest["train_stems_sha256"] == hashlib.sha256(
        "\n".join(manifest["train_stems"]).encode()).hexdigest()
    assert manifest["bytes"]["train"] > 0 and manifest["bytes"]["val"] > 0
    assert manifest["extras"] == {"objectInfo150.txt": True, "sceneCategories.txt": True}


def test_custom_manifest_path(good_zip, data_root, tmp_path):
    out = tmp_path / "meta" / "ade.json"
    prepare(good_zip, data_root, manifest_path=out)
    assert json.loads(out.read_text())["valid"] is True


def test_second_run_is_a_no_op(good_zip, data_root, monkeypatch):
    first = prepare(good_zip, data_root, sha1=sha1(good_zip))
    manifest = data_root / f"{TOP}.manifest.json"
    before = manifest.stat().st_mtime_ns

    def forbidden(*args, **kwargs):
        raise AssertionError("a rerun must not extract or validate again")

    monkeypatch.setattr(preparation, "extract_zip", forbidden)
    monkeypatch.setattr(preparation, "validate_tree", forbidden)
    # the zip is hashed again: the tree is tied to the archive it came from
    second = prepare(good_zip, data_root, sha1=sha1(good_zip))
    assert second.action == "up-to-date"
    assert second.manifest == first.manifest
    assert manifest.stat().st_mtime_ns == before


def test_no_sha1_warns_and_records_the_zips(good_zip, data_root, caplog):
    with caplog.at_level(logging.WARNING, logger="internseg"):
        result = prepare(good_zip, data_root)
    assert "not verified" in caplog.text
    assert result.manifest["source_sha1"] == sha1(good_zip)


def test_a_changed_zip_is_extracted_again(good_zip, data_root, tmp_path):
    prepare(good_zip, data_root)
    entries = dataset_entries()
    changed = f"{TOP}/images/training/ADE_train_00000003.jpg"
    entries[changed] = _encode(np.full((6, 8, 3), 7, dtype=np.uint8), "JPEG")
    write_zip(good_zip, entries)  # same path, new content
    result = prepare(good_zip, data_root)
    assert result.action == "re-extracted"
    assert result.manifest["source_sha1"] == sha1(good_zip)
    assert (data_root / TOP / changed.removeprefix(f"{TOP}/")).read_bytes() == entries[changed]
    assert listing(data_root) == [TOP, f"{TOP}.manifest.json"]  # the old tree is gone
    assert prepare(good_zip, data_root).action == "up-to-date"


def test_a_changed_zip_is_extracted_again_when_the_manifest_is_gone(good_zip, data_root):
    """The workflow deletes the manifest (its rule's output) before preparing: the tree's own
    record of its zip tells the change, not the manifest."""
    prepare(good_zip, data_root)
    (data_root / f"{TOP}.manifest.json").unlink()
    assert prepare(good_zip, data_root).action == "validated-in-place"  # the same zip
    (data_root / f"{TOP}.manifest.json").unlink()
    entries = dataset_entries()
    changed = f"{TOP}/images/training/ADE_train_00000003.jpg"
    entries[changed] = _encode(np.full((6, 8, 3), 7, dtype=np.uint8), "JPEG")
    write_zip(good_zip, entries)
    result = prepare(good_zip, data_root)
    assert result.action == "re-extracted"
    assert (data_root / TOP / changed.removeprefix(f"{TOP}/")).read_bytes() == entries[changed]
    assert result.manifest["source_kind"] == "zip"


def test_a_wrong_sha1_is_checked_on_a_prepared_tree(good_zip, data_root):
    prepare(good_zip, data_root)
    with pytest.raises(DatasetError, match=f"{good_zip}: SHA-1 mismatch"):
        prepare(good_zip, data_root, sha1="1" * 40)


def test_a_half_jpeg_fails_validation(tmp_path, data_root):
    entries = dataset_entries()
    cut = f"{TOP}/images/validation/ADE_val_00000002.jpg"
    # big enough that the first half holds the whole header: only decoding finds the cut
    whole = image_bytes(w=64, h=48)
    entries[cut] = whole[: len(whole) // 2]
    entries[cut.replace("images", "annotations").replace(".jpg", ".png")] = label_bytes(64, 48)
    archive = write_zip(tmp_path / "cut.zip", entries)
    with pytest.raises(DatasetError, match="ADE_val_00000002.jpg: unreadable image"):
        prepare(archive, data_root)


def test_validation_reports_throughput(good_zip, data_root):
    lines = []
    prepare(good_zip, data_root, report=lines.append)
    assert any(line.startswith("validated 16 files") and "files/s" in line for line in lines)


def test_duplicate_zip_entries_are_refused(tmp_path, data_root):
    archive = write_zip(tmp_path / "dup.zip", dataset_entries())
    name = f"{TOP}/images/training/ADE_train_00000001.jpg"
    with zipfile.ZipFile(archive, "a") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr(name, image_bytes())
    with pytest.raises(DatasetError, match=f"(?s)duplicate entries.*{name}"):
        prepare(archive, data_root)
    assert listing(data_root) == []


def test_sha1_file_matches_hashlib(good_zip):
    assert preparation.sha1_file(good_zip, chunk=7) == sha1(good_zip)


# ---------------------------------------------------------------- refusing bad archives


def test_sha1_mismatch_extracts_nothing(good_zip, data_root):
    wrong = "0" * 40
    with pytest.raises(DatasetError) as err:
        prepare(good_zip, data_root, sha1=wrong)
    message = str(err.value)
    assert str(good_zip) in message and wrong in message and sha1(good_zip) in message
    assert listing(data_root) == []


def test_malformed_expected_sha1_is_an_error(good_zip, data_root):
    with pytest.raises(InputError, match="expected SHA-1 must be 40 hex"):
        prepare(good_zip, data_root, sha1="abc")


@pytest.mark.parametrize("name, reason", [
    ("../evil", "'..'"),
    (f"{TOP}/../../evil", "'..'"),
    ("/abs/evil", "absolute"),
    ("C:/evil", "drive letter"),
    ("..\\evil", "'..'"),
])
def test_unsafe_entry_reason(name, reason):
    assert reason in archives.unsafe_entry_reason(zipfile.ZipInfo(name))


def test_safe_entry_has_no_reason():
    assert archives.unsafe_entry_reason(zipfile.ZipInfo(f"{TOP}/images/training/a..b.jpg")) is None


def test_unsafe_entries_refused_and_nothing_written(tmp_path, data_root):
    entries = dataset_entries()
    entries["../evil"] = b"x"
    entries["/abs/evil"] = b"x"
    bad = write_zip(tmp_path / "bad.zip", entries, symlinks={f"{TOP}/link": "/etc/passwd"})
    with pytest.raises(DatasetError) as err:
        prepare(bad, data_root)
    message = str(err.value)
    assert "'../evil'" in message and "'..' component" in message
    assert "'/abs/evil'" in message and "absolute path" in message
    assert f"'{TOP}/link'" in message and "symbolic link" in message
    assert listing(data_root) == []
    assert not any(p.name == "evil" for p in tmp_path.rglob("*"))
    assert not Path("/abs/evil").exists()


def test_not_a_zip_is_a_clear_error(tmp_path, data_root):
    fake = tmp_path / "ADEChallengeData2016.zip"
    fake.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable zip"):
        prepare(fake, data_root)
    assert listing(data_root) == []


def test_zip_without_top_folder(tmp_path, data_root):
    other = write_zip(tmp_path / "other.zip", {"something/else.txt": b"x"})
    with pytest.raises(DatasetError, match=f"no {TOP}/ folder"):
        prepare(other, data_root)
    assert listing(data_root) == []


# ---------------------------------------------------------------- interrupted extraction


def _failing_after(k: int, real):
    calls = {"n": 0}

    def extract(*args, **kwargs):
        if calls["n"] == k:
            raise RuntimeError("simulated interruption")
        calls["n"] += 1
        return real(*args, **kwargs)

    return extract


def test_failed_extraction_leaves_nothing_and_rerun_succeeds(good_zip, data_root, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(archives, "_extract_entry", _failing_after(5, archives._extract_entry))
        with pytest.raises(RuntimeError, match="simulated"):
            prepare(good_zip, data_root)
    assert listing(data_root) == []
    assert prepare(good_zip, data_root).action == "extracted"


def test_killed_extraction_partial_is_removed_by_next_run(good_zip, data_root, monkeypatch):
    # A hard kill gets no chance to clean up: stop cleanup as well as extraction.
    with monkeypatch.context() as m:
        m.setattr(archives, "_extract_entry", _failing_after(5, archives._extract_entry))
        m.setattr(preparation, "_discard", lambda path: None)
        with pytest.raises(RuntimeError):
            prepare(good_zip, data_root)
    leftovers = listing(data_root)
    assert len(leftovers) == 1 and leftovers[0].startswith(preparation.partial_prefix(ADE20K))
    assert any((data_root / leftovers[0]).rglob("*.jpg"))  # it really was half-written
    assert not (data_root / TOP).exists()

    result = prepare(good_zip, data_root)
    assert result.action == "extracted"
    assert listing(data_root) == [TOP, f"{TOP}.manifest.json"]


# ---------------------------------------------------------------- validation


def broken_entries() -> dict[str, bytes]:
    entries = dataset_entries()
    del entries[f"{TOP}/annotations/training/ADE_train_00000002.png"]       # missing label
    entries[f"{TOP}/annotations/training/ADE_train_00000003.png"] = label_bytes(w=9)  # size
    entries[f"{TOP}/annotations/training/ADE_train_00000004.png"] = label_bytes(top=151)
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    entries[f"{TOP}/annotations/training/ADE_train_00000005.png"] = _encode(rgb, "PNG")
    entries[f"{TOP}/annotations/validation/ADE_val_00000003.png"] = label_bytes()  # orphan
    return entries


def test_all_validation_problems_in_one_error(tmp_path, data_root):
    bad = write_zip(tmp_path / "bad.zip", broken_entries())
    with pytest.raises(DatasetError) as err:
        prepare(bad, data_root)
    message = str(err.value)
    assert "7 problems" in message
    assert "training: found 6 images and 5 label maps, expected 6" in message
    assert "validation: found 2 images and 3 label maps, expected 2" in message
    assert "images/training/ADE_train_00000002.jpg: no label map" in message
    assert "ADE_train_00000003.png: size 9x6 differs from its image" in message
    assert "ADE_train_00000004.png: label value 151 outside 0..150 (1 pixels)" in message
    assert "ADE_train_00000005.png: label map must be single-channel 8-bit" in message
    assert "annotations/validation/ADE_val_00000003.png: no image" in message
    assert listing(data_root) == []  # nothing renamed into place, partial removed


def test_wrong_count_is_an_error(good_zip, data_root):
    with pytest.raises(DatasetError, match="found 6 images and 6 label maps, expected 20210"):
        prepare_extracted(ADE20K, good_zip, data_root, progress=False, val_count=N_VAL)
    assert listing(data_root) == []


def test_problem_list_is_capped(tmp_path, data_root):
    bad = write_zip(tmp_path / "bad.zip", broken_entries())
    with pytest.raises(DatasetError) as err:
        prepare(bad, data_root, max_errors=2)
    lines = str(err.value).splitlines()
    assert len(lines) == 4 and lines[-1] == "  ... and 5 more"


def test_format_problems():
    text = archives.format_problems("hdr", ["a", "b", "c"], max_errors=5)
    assert text == "hdr (3 problems):\n  - a\n  - b\n  - c"


def test_validate_tree_reports_throughput(good_zip, tmp_path):
    with zipfile.ZipFile(good_zip) as zf:
        zf.extractall(tmp_path / "src")
    lines = []
    facts = preparation.validate_tree(tmp_path / "src" / TOP, dataset=ADE20K,
                                      progress=False, report=lines.append,
                                      workers=2, **COUNTS)
    assert facts.train_stems[0] == "ADE_train_00000001"
    assert any("files/s" in line and "MB/s" in line for line in lines)


# ---------------------------------------------------------------- extracted folder as source


def extracted(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest


def test_extracted_folder_elsewhere_is_linked(good_zip, data_root, tmp_path):
    src = extracted(good_zip, tmp_path / "elsewhere")
    result = prepare(src / TOP, data_root)
    target = data_root / TOP
    assert result.action == "linked"
    assert target.is_symlink() and target.resolve() == (src / TOP).resolve()
    assert result.manifest["source_kind"] == "folder"
    assert result.manifest["source"] == str(src / TOP)
    assert result.manifest["root"] == str(target)
    assert prepare(src, data_root).action == "up-to-date"  # parent folder accepted too
    assert listing(data_root) == [TOP, f"{TOP}.manifest.json"]


def test_extracted_folder_in_data_root_is_validated_in_place(good_zip, data_root):
    extracted(good_zip, data_root)
    result = prepare(data_root, data_root)
    assert result.action == "validated-in-place"
    assert not (data_root / TOP).is_symlink()
    assert prepare(data_root / TOP, data_root).action == "up-to-date"


def test_broken_extracted_folder_is_an_error(tmp_path, data_root):
    src = extracted(write_zip(tmp_path / "bad.zip", broken_entries()), tmp_path / "src")
    with pytest.raises(DatasetError, match="label value 151"):
        prepare(src, data_root)
    assert listing(data_root) == []


def test_existing_target_without_manifest_is_validated_not_overwritten(good_zip, data_root):
    prepare(good_zip, data_root)
    (data_root / f"{TOP}.manifest.json").unlink()
    marker = data_root / TOP / "mine.txt"
    marker.write_text("kept")
    result = prepare(good_zip, data_root)
    assert result.action == "validated-in-place"
    assert marker.read_text() == "kept"


def test_tree_changed_after_manifest_is_noticed(good_zip, data_root):
    prepare(good_zip, data_root)
    (data_root / TOP / "annotations" / "training" / "ADE_train_00000006.png").unlink()
    with pytest.raises(DatasetError, match="ADE_train_00000006.jpg: no label map"):
        prepare(good_zip, data_root)




# ---------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    from internseg.cli import main

    return main(argv)


def test_cli_success(good_zip, data_root, capsys):
    rc = run_cli(["prepare-ade20k", "--source", str(good_zip), "--data-root", str(data_root),
                  "--sha1", sha1(good_zip).upper(), "--train-count", "6", "--val-count", "2",
                  "--workers", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "extracted" in out and "files/s" in out
    assert (data_root / f"{TOP}.manifest.json").is_file()


def test_cli_data_error_returns_2_naming_the_file(tmp_path, data_root, capsys):
    bad = write_zip(tmp_path / "bad.zip", broken_entries())
    manifest = tmp_path / "m.json"
    rc = run_cli(["prepare-ade20k", "--source", str(bad), "--data-root", str(data_root),
                  "--train-count", "6", "--val-count", "2", "--manifest", str(manifest),
                  "--max-errors", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("internseg prepare-ade20k: error:")
    assert "ADE_train_00000002.jpg: no label map" in err and "... and 4 more" in err
    assert "Traceback" not in err
    assert not manifest.exists()


def test_cli_missing_source(tmp_path, data_root, capsys):
    rc = run_cli(["prepare-ade20k", "--source", str(tmp_path / "nope.zip"),
                  "--data-root", str(data_root)])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.zip: source not found; place ADEChallengeData2016.zip" in err
    assert "--download" in err


def test_cli_url_needs_download(tmp_path, data_root, capsys):
    rc = run_cli(["prepare-ade20k", "--source", str(tmp_path / "nope.zip"),
                  "--data-root", str(data_root), "--url", "http://127.0.0.1:1/x.zip"])
    assert rc == 2
    assert "--url and --size are only used with --download" in capsys.readouterr().err


# ---------------------------------------------------------------- download


@pytest.fixture
def mirror(good_zip):
    """The synthetic zip served over HTTP with Range support (tests/http_server.py)."""
    with serving(good_zip.read_bytes()) as srv:
        yield srv


def fetched(tmp_path, mirror, **kwargs):
    dest = tmp_path / "downloads" / "ADEChallengeData2016.zip"
    lines = []
    data_root = tmp_path / "fetched-data"
    result = prepare(dest, data_root, download=True, url=mirror.url(), report=lines.append,
                     **kwargs)
    return dest, result, lines


def test_download_resumes_dropped_connections_with_range(tmp_path, good_zip, mirror):
    size = good_zip.stat().st_size
    mirror.cut = size // 2 + 1  # every response stops half way
    dest, result, lines = fetched(tmp_path, mirror, sha1=sha1(good_zip), size=size)
    assert result.action == "extracted"
    assert result.manifest["source_sha1"] == sha1(good_zip)
    assert dest.read_bytes() == good_zip.read_bytes() and not part_path(dest).exists()
    assert mirror.ranges == [None, f"bytes={size // 2 + 1}-"]
    assert any(line.startswith(f"downloading {mirror.url()}") for line in lines)


def test_download_resumes_a_killed_runs_part(tmp_path, good_zip, mirror):
    dest = tmp_path / "downloads" / "ADEChallengeData2016.zip"
    dest.parent.mkdir()
    part_path(dest).write_bytes(good_zip.read_bytes()[:1000])
    _, result, lines = fetched(tmp_path, mirror, sha1=sha1(good_zip))
    assert result.action == "extracted"
    assert mirror.ranges == ["bytes=1000-"]
    assert any("resuming" in line and "1000" in line for line in lines)


def test_a_downloaded_different_file_is_refused_naming_both_checksums(tmp_path, good_zip,
                                                                      mirror):
    wrong = "0" * 40
    with pytest.raises(InputError) as err:
        fetched(tmp_path, mirror, sha1=wrong)
    message = str(err.value)
    assert message.startswith("ADEChallengeData2016.zip: sha1 mismatch: ")
    assert f"expected {wrong}, actual {sha1(good_zip)}" in message
    assert not (tmp_path / "downloads" / "ADEChallengeData2016.zip").exists()
    assert not (tmp_path / "fetched-data" / TOP).exists()


def test_a_server_with_another_size_is_refused_before_downloading(tmp_path, good_zip, mirror):
    with pytest.raises(InputError, match=f"serves {good_zip.stat().st_size} bytes, "
                                           "expected 123"):
        fetched(tmp_path, mirror, size=123)
    assert mirror.ranges == [None]


def test_an_unreachable_url_names_the_manual_route(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download.time, "sleep", lambda seconds: None)
    dest = tmp_path / "ADEChallengeData2016.zip"
    rc = run_cli(["prepare-ade20k", "--source", str(dest), "--data-root", str(tmp_path / "d"),
                  "--download", "--url", "http://127.0.0.1:1/ADEChallengeData2016.zip",
                  "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "connection refused by 127.0.0.1:1" in err
    assert err.endswith(f"or download ADEChallengeData2016.zip yourself (another address: "
                        f"--url, in the workflow presets.<preset>.ade20k.url) and place it at "
                        f"{dest}")


def test_module_import_is_light():
    import subprocess
    import sys

    code = ("import sys, internseg.preparation, internseg.splits; "
            "print(sorted({'numpy', 'PIL', 'tqdm', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "[]"


def test_official_address_and_sha1_are_the_recorded_ones(reference):
    assert (ADE20K.sources[0].url, ADE20K.sources[0].sha1) == (reference["ade20k"]["url"],
                                                           reference["ade20k"]["sha1"])


def test_the_presets_settings_become_the_download_commands_options():
    import yaml

    from internseg.cli import build_parser

    presets = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())["presets"]
    assert preparation.download_args(presets["demo"]["ade20k"]) == []
    paper = presets["paper"]["ade20k"]
    assert preparation.download_args(paper) == ["--sha1", ADE20K.sources[0].sha1]
    given = dict(paper, url="http://mirror.example/ADE.zip", size=5)
    args = build_parser().parse_args(["download-ade20k", "--out", "z.zip",
                                      *preparation.download_args(given)])
    assert (args.sha1, args.url, args.size) == (ADE20K.sources[0].sha1,
                                                "http://mirror.example/ADE.zip", 5)


def test_download_command_resumes_checks_and_leaves_a_placed_zip_alone(tmp_path, good_zip,
                                                                        mirror, capsys):
    out = tmp_path / "dl" / "ADEChallengeData2016.zip"
    out.parent.mkdir()
    part_path(out).write_bytes(good_zip.read_bytes()[:500])
    argv = ["download-ade20k", "--out", str(out), "--url", mirror.url(), "--sha1",
            sha1(good_zip), "--no-progress"]
    assert run_cli(argv) == 0
    assert out.read_bytes() == good_zip.read_bytes() and mirror.ranges == ["bytes=500-"]
    assert run_cli(argv) == 0  # there already: nothing fetched
    assert mirror.ranges == ["bytes=500-"]
    assert "already there" in capsys.readouterr().out
    out.unlink()
    assert run_cli([*argv[:-2], "0" * 40, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"sha1 mismatch: expected {'0' * 40}, actual {sha1(good_zip)}" in err
    assert not out.exists()
