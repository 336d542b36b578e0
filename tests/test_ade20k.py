"""ADE20K's preparation through the shared lifecycle (``internseg prepare ade20k``,
:func:`internseg.preparation.prepare_dataset`) on synthetic zips in the real
ADEChallengeData2016 layout: pins, safe extraction, validation, the manifest, reruns, a tree
given as the source, trees left by 0.2.0, and downloads (``internseg download ade20k``).

The synthetic zips are not the official one: they are prepared with ``pinned=False`` (a
warning, nothing verified) or with their own sha1 as the pin; the default checks the entry's
published sha1 (a test shows a synthetic zip refused by it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_server import serving
from PIL import Image
from zips import write_zip

from internseg import archives, download, preparation
from internseg.archives import DatasetError
from internseg.datasets import DATASETS
from internseg.download import part_path
from internseg.errors import InputError
from internseg.io import hash_file, write_json
from internseg.preparation import prepare_dataset

ADE20K = DATASETS["ade20k"]
TOP = ADE20K.tree
NAME = ADE20K.sources[0].name  # ADEChallengeData2016.zip
MANIFEST = f"{TOP}.manifest.json"
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
    """Unpinned unless told otherwise: the synthetic zips are not the official one, whose
    published sha1 the default checks."""
    return prepare_dataset(ADE20K, source, data_root, progress=False,
                           **{"pinned": False, **COUNTS, **kwargs})


def pinned_to(path: Path) -> dict[str, str]:
    return {NAME: sha1(path)}


# ---------------------------------------------------------------- happy path


def test_good_zip_extracted_with_manifest(good_zip, data_root):
    result = prepare(good_zip, data_root, pins=pinned_to(good_zip))
    target = data_root / TOP
    assert result.action == "extracted"
    assert not target.is_symlink()
    assert listing(target / "images" / "training") == [
        f"ADE_train_{i:08d}.jpg" for i in range(1, 7)]
    assert len(listing(target / "annotations" / "validation")) == 2
    # only the tree and its manifest: the partial folder is gone, and a file with a
    # published digest leaves no recorded-digest file beside the tree
    assert listing(data_root) == [TOP, MANIFEST]
    # the tree's own record of the files it came from
    assert json.loads((target / preparation.SOURCE_RECORD).read_text()) == {
        NAME: sha1(good_zip)}

    manifest = json.loads((data_root / MANIFEST).read_text())
    assert manifest == result.manifest
    assert manifest["manifest_version"] == 2
    assert (manifest["dataset"], manifest["name"]) == ("ADE20K", "ade20k")
    assert manifest["valid"] is True
    assert manifest["root"] == str(target)
    assert manifest["source_kind"] == "files" and manifest["source"] is None
    assert manifest["sources"] == {NAME: dict(
        path=str(good_zip), size=good_zip.stat().st_size, algorithm="sha1",
        digest=sha1(good_zip), pinned=True)}
    assert (manifest["num_classes"], manifest["ignore_index"]) == (150, None)
    assert manifest["train_count"] == 6 and manifest["val_count"] == 2
    assert manifest["train_stems"] == [f"ADE_train_{i:08d}" for i in range(1, 7)]
    assert manifest["train_stems_sha256"] == hashlib.sha256(
        "\n".join(manifest["train_stems"]).encode()).hexdigest()
    assert manifest["val_stems_sha256"] == hashlib.sha256(
        "\n".join(f"ADE_val_{i:08d}" for i in range(1, 3)).encode()).hexdigest()
    assert manifest["bytes"]["train"] > 0 and manifest["bytes"]["val"] > 0
    assert manifest["extras"] == {"objectInfo150.txt": True, "sceneCategories.txt": True}
    assert manifest["conversion"] is None  # ADE20K's label maps are extracted as they are


def test_a_folder_holding_the_zip_is_a_source(good_zip, data_root):
    result = prepare(good_zip.parent, data_root, pins=pinned_to(good_zip))
    assert result.action == "extracted"
    assert result.manifest["source_kind"] == "files"
    assert result.manifest["sources"][NAME]["path"] == str(good_zip)


def test_custom_manifest_path(good_zip, data_root, tmp_path):
    out = tmp_path / "meta" / "ade.json"
    prepare(good_zip, data_root, manifest_path=out)
    assert json.loads(out.read_text())["valid"] is True
    assert not (data_root / MANIFEST).exists()


def test_second_run_is_a_no_op(good_zip, data_root, monkeypatch):
    first = prepare(good_zip, data_root, pins=pinned_to(good_zip))
    manifest = data_root / MANIFEST
    before = manifest.stat().st_mtime_ns

    def forbidden(*args, **kwargs):
        raise AssertionError("a rerun must not extract or validate again")

    monkeypatch.setattr(preparation, "_extract_all", forbidden)
    monkeypatch.setattr(preparation, "extract_members", forbidden)
    monkeypatch.setattr(preparation, "validate_tree", forbidden)
    # the zip is hashed again: the tree is tied to the files it came from
    hashed = []
    real_hash = preparation.hash_file
    monkeypatch.setattr(preparation, "hash_file", lambda path, *a, **k: (
        hashed.append(Path(path)) or real_hash(path, *a, **k)))
    second = prepare(good_zip, data_root, pins=pinned_to(good_zip))
    assert second.action == "up-to-date"
    assert second.manifest == first.manifest
    assert hashed == [good_zip]
    assert manifest.stat().st_mtime_ns == before


def test_the_published_sha1_is_checked_by_default(good_zip, data_root):
    """Without pins, the entry's published sha1 (the official zip's) applies: a synthetic zip
    is refused before anything is extracted."""
    with pytest.raises(DatasetError) as err:
        prepare(good_zip, data_root, pinned=True)
    assert str(err.value) == (f"{good_zip}: sha1 mismatch: expected {ADE20K.sources[0].sha1}, "
                              f"actual {sha1(good_zip)}")
    assert listing(data_root) == []


def test_unpinned_warns_and_records_the_zips(good_zip, data_root, caplog):
    with caplog.at_level(logging.WARNING, logger="internseg"):
        result = prepare(good_zip, data_root, pinned=False)
    assert f"{good_zip}: not pinned, not verified (sha1 {sha1(good_zip)})" in caplog.text
    assert result.manifest["sources"][NAME]["digest"] == sha1(good_zip)
    assert result.manifest["sources"][NAME]["pinned"] is False


def test_a_changed_zip_is_extracted_again(good_zip, data_root, tmp_path):
    prepare(good_zip, data_root)
    entries = dataset_entries()
    changed = f"{TOP}/images/training/ADE_train_00000003.jpg"
    entries[changed] = _encode(np.full((6, 8, 3), 7, dtype=np.uint8), "JPEG")
    write_zip(good_zip, entries)  # same path, new content
    result = prepare(good_zip, data_root)
    assert result.action == "re-extracted"
    assert result.manifest["sources"][NAME]["digest"] == sha1(good_zip)
    assert (data_root / TOP / changed.removeprefix(f"{TOP}/")).read_bytes() == entries[changed]
    assert listing(data_root) == [TOP, MANIFEST]  # the old tree is gone
    assert prepare(good_zip, data_root).action == "up-to-date"


def test_a_changed_zip_is_extracted_again_when_the_manifest_is_gone(good_zip, data_root):
    """The workflow deletes the manifest (its rule's output) before preparing: the tree's own
    record of its zip tells the change, not the manifest."""
    prepare(good_zip, data_root)
    (data_root / MANIFEST).unlink()
    same = prepare(good_zip, data_root)
    assert same.action == "validated-in-place"  # the same zip
    assert same.manifest["source_kind"] == "files"
    assert same.manifest["sources"][NAME]["digest"] == sha1(good_zip)
    (data_root / MANIFEST).unlink()
    entries = dataset_entries()
    changed = f"{TOP}/images/training/ADE_train_00000003.jpg"
    entries[changed] = _encode(np.full((6, 8, 3), 7, dtype=np.uint8), "JPEG")
    write_zip(good_zip, entries)
    result = prepare(good_zip, data_root)
    assert result.action == "re-extracted"
    assert (data_root / TOP / changed.removeprefix(f"{TOP}/")).read_bytes() == entries[changed]
    assert result.manifest["source_kind"] == "files"
    assert result.manifest["sources"][NAME]["digest"] == sha1(good_zip)


def test_a_wrong_sha1_is_checked_on_a_prepared_tree(good_zip, data_root):
    prepare(good_zip, data_root)
    with pytest.raises(DatasetError, match=f"{good_zip}: sha1 mismatch"):
        prepare(good_zip, data_root, pins={NAME: "1" * 40})


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


def test_hash_file_sha1_matches_hashlib(good_zip):
    assert hash_file(good_zip, "sha1", chunk=7, progress=False) == sha1(good_zip)


# ---------------------------------------------------------------- refusing bad archives


def test_sha1_mismatch_extracts_nothing(good_zip, data_root):
    wrong = "0" * 40
    with pytest.raises(DatasetError) as err:
        prepare(good_zip, data_root, pins={NAME: wrong})
    assert str(err.value) == (f"{good_zip}: sha1 mismatch: expected {wrong}, "
                              f"actual {sha1(good_zip)}")
    assert listing(data_root) == []


@pytest.mark.parametrize("given, reason", [
    ("abc", "must be 40 (sha1) or 64 (sha256) hex digits, got 'abc'"),
    ("z" * 40, "must be 40 hex digits"),
])
def test_malformed_pin_is_an_error(good_zip, data_root, given, reason):
    with pytest.raises(InputError, match=re.escape(f"pins: {NAME} {reason}")):
        prepare(good_zip, data_root, pins={NAME: given})
    assert listing(data_root) == []


def test_a_pin_for_another_file_is_an_error(good_zip, data_root):
    with pytest.raises(InputError,
                       match=f"pins: train2017.zip is not a file of ade20k \\({NAME}\\)"):
        prepare(good_zip, data_root, pins={"train2017.zip": "0" * 40})


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
        m.setattr(preparation, "discard", lambda path: None)
        with pytest.raises(RuntimeError):
            prepare(good_zip, data_root)
    leftovers = listing(data_root)
    assert len(leftovers) == 1 and leftovers[0].startswith(preparation.partial_prefix(ADE20K))
    assert any((data_root / leftovers[0]).rglob("*.jpg"))  # it really was half-written
    assert not (data_root / leftovers[0] / preparation.MARKER).exists()  # not finished
    assert not (data_root / TOP).exists()

    lines = []
    result = prepare(good_zip, data_root, report=lines.append)
    assert result.action == "extracted"
    assert any(line.startswith(f"removed {data_root / leftovers[0]}") for line in lines)
    assert listing(data_root) == [TOP, MANIFEST]


def test_a_run_killed_after_extraction_is_resumed(good_zip, data_root, monkeypatch):
    """Extraction finished (the marker holds the zip's digest), then the run died: the next
    run from the same zip takes the partial folder over instead of extracting again."""
    with monkeypatch.context() as m:
        m.setattr(preparation, "validate_tree",
                  lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
        with pytest.raises(RuntimeError, match="killed"):
            prepare(good_zip, data_root)
    leftovers = listing(data_root)
    assert len(leftovers) == 1 and leftovers[0].startswith(preparation.partial_prefix(ADE20K))
    assert json.loads((data_root / leftovers[0] / preparation.MARKER).read_text()) == {
        NAME: sha1(good_zip)}
    with monkeypatch.context() as m:
        m.setattr(archives, "_extract_entry", _failing_after(0, archives._extract_entry))
        result = prepare(good_zip, data_root)
    assert result.action == "resumed"
    assert listing(data_root) == [TOP, MANIFEST]
    assert result.manifest["train_count"] == N_TRAIN


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
        prepare_dataset(ADE20K, good_zip, data_root, pinned=False, progress=False,
                        val_count=N_VAL)
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
    # a folder is validated, not hashed: the default pins do not apply to it
    result = prepare(src / TOP, data_root, pinned=True)
    target = data_root / TOP
    assert result.action == "linked"
    assert target.is_symlink() and target.resolve() == (src / TOP).resolve()
    assert result.manifest["source_kind"] == "folder"
    assert result.manifest["source"] == str(src / TOP)
    assert result.manifest["sources"] == {}
    assert result.manifest["root"] == str(target)
    assert prepare(src, data_root).action == "up-to-date"  # parent folder accepted too
    assert listing(data_root) == [TOP, MANIFEST]


def test_extracted_folder_in_data_root_is_validated_in_place(good_zip, data_root):
    extracted(good_zip, data_root)
    result = prepare(data_root, data_root, pinned=True)
    assert result.action == "validated-in-place"
    assert result.manifest["source_kind"] == "folder"
    assert result.manifest["source"] == str(data_root / TOP)
    assert not (data_root / TOP).is_symlink()
    assert prepare(data_root / TOP, data_root).action == "up-to-date"


def test_broken_extracted_folder_is_an_error(tmp_path, data_root):
    src = extracted(write_zip(tmp_path / "bad.zip", broken_entries()), tmp_path / "src")
    with pytest.raises(DatasetError, match="label value 151"):
        prepare(src, data_root)
    assert listing(data_root) == []


def test_existing_target_without_manifest_is_validated_not_overwritten(good_zip, data_root):
    prepare(good_zip, data_root)
    (data_root / MANIFEST).unlink()
    marker = data_root / TOP / "mine.txt"
    marker.write_text("kept")
    result = prepare(good_zip, data_root)
    assert result.action == "validated-in-place"
    assert marker.read_text() == "kept"


def test_a_tree_made_by_hand_is_never_replaced_by_the_zip(good_zip, data_root, caplog):
    """A tree in place that no zip built (no source record, no manifest) is the user's:
    validated where it is, not extracted over."""
    extracted(good_zip, data_root)
    marker = data_root / TOP / "mine.txt"
    marker.write_text("kept")
    with caplog.at_level(logging.WARNING, logger="internseg"):
        result = prepare(good_zip, data_root)
    assert result.action == "validated-in-place"
    assert result.manifest["source_kind"] == "folder"
    assert marker.read_text() == "kept"
    assert f"{data_root / TOP} exists without a manifest of ours" in caplog.text


def test_tree_changed_after_manifest_is_noticed(good_zip, data_root):
    prepare(good_zip, data_root)
    (data_root / TOP / "annotations" / "training" / "ADE_train_00000006.png").unlink()
    with pytest.raises(DatasetError, match="ADE_train_00000006.jpg: no label map"):
        prepare(good_zip, data_root)


# ---------------------------------------------------------------- trees left by 0.2.0


def as_left_by_0_2_0(good_zip: Path, data_root: Path, *, with_manifest: bool) -> None:
    """Make the tree prepared from ``good_zip`` look as 0.2.0 left it: its old source record
    ({"source_sha1": ...}) in place of the new one, and a version-1 manifest or none."""
    target = data_root / TOP
    (target / preparation.SOURCE_RECORD).unlink()
    write_json(target / preparation.OLD_SOURCE_RECORD,
               {"source": str(good_zip), "source_sha1": sha1(good_zip)})
    (data_root / MANIFEST).unlink()
    if with_manifest:
        write_json(data_root / MANIFEST, {
            "manifest_version": 1, "dataset": "ADE20K", "valid": True,
            "root": str(target), "source": str(good_zip), "source_kind": "zip",
            "source_sha1": sha1(good_zip), "train_count": N_TRAIN, "val_count": N_VAL})


@pytest.mark.parametrize("with_manifest", [False, True], ids=["no-manifest", "v1-manifest"])
def test_a_tree_extracted_by_0_2_0_stays_the_zips(good_zip, data_root, monkeypatch,
                                                  with_manifest):
    prepare(good_zip, data_root, pins=pinned_to(good_zip))
    as_left_by_0_2_0(good_zip, data_root, with_manifest=with_manifest)
    image = data_root / TOP / "images" / "training" / "ADE_train_00000001.jpg"
    inode = image.stat().st_ino

    def forbidden(*args, **kwargs):
        raise AssertionError("a tree extracted from this very zip must not be extracted again")

    with monkeypatch.context() as m:
        m.setattr(preparation, "_extract_all", forbidden)
        result = prepare(good_zip, data_root, pins=pinned_to(good_zip))
    assert result.action == "validated-in-place"
    assert image.stat().st_ino == inode
    # the zip's tree, not one made by hand
    assert result.manifest["manifest_version"] == 2
    assert result.manifest["source_kind"] == "files" and result.manifest["source"] is None
    assert result.manifest["sources"][NAME]["digest"] == sha1(good_zip)
    assert json.loads((data_root / MANIFEST).read_text()) == result.manifest
    assert prepare(good_zip, data_root, pins=pinned_to(good_zip)).action == "up-to-date"


def test_a_different_zip_rebuilds_a_tree_extracted_by_0_2_0(good_zip, data_root):
    prepare(good_zip, data_root)
    as_left_by_0_2_0(good_zip, data_root, with_manifest=False)
    entries = dataset_entries()
    changed = f"{TOP}/images/training/ADE_train_00000003.jpg"
    entries[changed] = _encode(np.full((6, 8, 3), 7, dtype=np.uint8), "JPEG")
    write_zip(good_zip, entries)
    result = prepare(good_zip, data_root)
    target = data_root / TOP
    assert result.action == "re-extracted"
    assert (target / changed.removeprefix(f"{TOP}/")).read_bytes() == entries[changed]
    assert not (target / preparation.OLD_SOURCE_RECORD).exists()
    assert json.loads((target / preparation.SOURCE_RECORD).read_text()) == {
        NAME: sha1(good_zip)}
    assert result.manifest["sources"][NAME]["digest"] == sha1(good_zip)
    assert listing(data_root) == [TOP, MANIFEST]


# ---------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    from internseg.cli import main

    return main(argv)


def test_cli_success(good_zip, data_root, capsys):
    rc = run_cli(["prepare", "ade20k", "--source", str(good_zip), "--data-root",
                  str(data_root), "--pin", f"{NAME}={sha1(good_zip).upper()}",
                  "--train-count", "6", "--val-count", "2", "--workers", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "extracted" in out and "files/s" in out
    manifest = json.loads((data_root / MANIFEST).read_text())
    assert manifest["sources"][NAME]["pinned"] is True


def test_cli_unpinned_warns_and_prepares(good_zip, data_root, capsys):
    rc = run_cli(["prepare", "ade20k", "--source", str(good_zip), "--data-root",
                  str(data_root), "--unpinned", "--train-count", "6", "--val-count", "2",
                  "--no-progress"])
    assert rc == 0
    assert json.loads((data_root / MANIFEST).read_text())["sources"][NAME]["pinned"] is False


def test_cli_checks_the_published_sha1_by_default(good_zip, data_root, capsys):
    rc = run_cli(["prepare", "ade20k", "--source", str(good_zip), "--data-root",
                  str(data_root), "--train-count", "6", "--val-count", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (f"internseg prepare: error: {good_zip}: sha1 mismatch: expected "
                   f"{ADE20K.sources[0].sha1}, actual {sha1(good_zip)}\n")


def test_cli_data_error_returns_2_naming_the_file(tmp_path, data_root, capsys):
    bad = write_zip(tmp_path / "bad.zip", broken_entries())
    manifest = tmp_path / "m.json"
    rc = run_cli(["prepare", "ade20k", "--source", str(bad), "--data-root", str(data_root),
                  "--unpinned", "--train-count", "6", "--val-count", "2",
                  "--manifest", str(manifest), "--max-errors", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("internseg prepare: error:")
    assert "ADE_train_00000002.jpg: no label map" in err and "... and 4 more" in err
    assert "Traceback" not in err
    assert not manifest.exists()


def test_cli_missing_source(tmp_path, data_root, capsys):
    rc = run_cli(["prepare", "ade20k", "--source", str(tmp_path / NAME),
                  "--data-root", str(data_root)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{tmp_path / NAME}: not found; place {NAME} there" in err and "--download" in err
    rc = run_cli(["prepare", "ade20k", "--source", str(tmp_path / "nope"),
                  "--data-root", str(data_root)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path / 'nope'}: source not found" in err


def test_cli_malformed_pin_is_one_line(good_zip, data_root, capsys):
    rc = run_cli(["prepare", "ade20k", "--source", str(good_zip), "--data-root",
                  str(data_root), "--pin", sha1(good_zip)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f"internseg prepare: error: --pin '{sha1(good_zip)}': expected FILE=HEX\n"


def test_cli_mirror_needs_download(tmp_path, data_root, capsys):
    rc = run_cli(["prepare", "ade20k", "--source", str(tmp_path / NAME),
                  "--data-root", str(data_root), "--mirror", "http://127.0.0.1:1"])
    assert rc == 2
    assert "--mirror is only used with --download" in capsys.readouterr().err


def test_unpinned_and_download_contradict(tmp_path, data_root):
    with pytest.raises(InputError, match="unpinned .* and download .* contradict"):
        prepare(tmp_path / NAME, data_root, pinned=False, download=True)
    assert listing(data_root) == []


# ---------------------------------------------------------------- download


@pytest.fixture
def mirror(good_zip):
    """The synthetic zip served over HTTP with Range support (tests/http_server.py), at every
    path: ``base`` is the folder URL given as ``mirror``."""
    with serving(good_zip.read_bytes()) as srv:
        srv.base = srv.url("").rstrip("/")
        yield srv


def published_as(good_zip: Path):
    """ADE20K as if its entry published the synthetic zip's sha1 and size."""
    source = dataclasses.replace(ADE20K.sources[0], sha1=sha1(good_zip),
                                 size=good_zip.stat().st_size)
    return dataclasses.replace(ADE20K, sources=(source,))


def fetched(tmp_path, mirror, dataset=ADE20K, **kwargs):
    dest = tmp_path / "downloads" / NAME
    lines = []
    data_root = tmp_path / "fetched-data"
    result = prepare_dataset(dataset, dest, data_root, download=True, mirror=mirror.base,
                             report=lines.append, progress=False, **{**COUNTS, **kwargs})
    return dest, result, lines


def test_download_resumes_dropped_connections_with_range(tmp_path, good_zip, mirror):
    size = good_zip.stat().st_size
    mirror.cut = size // 2 + 1  # every response stops half way
    # checked against the entry's published size and sha1 (the default pins)
    dest, result, lines = fetched(tmp_path, mirror, dataset=published_as(good_zip))
    assert result.action == "extracted"
    assert result.manifest["sources"][NAME] == dict(
        path=str(dest), size=size, algorithm="sha1", digest=sha1(good_zip), pinned=True)
    assert dest.read_bytes() == good_zip.read_bytes() and not part_path(dest).exists()
    assert mirror.ranges == [None, f"bytes={size // 2 + 1}-"]
    assert any(line.startswith(f"downloading {mirror.url(NAME)} -> {dest}") for line in lines)


def test_download_resumes_a_killed_runs_part(tmp_path, good_zip, mirror):
    dest = tmp_path / "downloads" / NAME
    dest.parent.mkdir()
    part_path(dest).write_bytes(good_zip.read_bytes()[:1000])
    _, result, lines = fetched(tmp_path, mirror, pins=pinned_to(good_zip))
    assert result.action == "extracted"
    assert mirror.ranges == ["bytes=1000-"]
    assert any("resuming" in line and "1000" in line for line in lines)


def test_download_into_a_sources_folder(tmp_path, good_zip, mirror):
    folder = tmp_path / "resources"
    result = prepare_dataset(ADE20K, folder, tmp_path / "d", download=True, mirror=mirror.base,
                             pins=pinned_to(good_zip), progress=False, **COUNTS)
    assert result.action == "extracted"
    assert (folder / NAME).read_bytes() == good_zip.read_bytes()


def test_a_downloaded_different_file_is_refused_naming_both_checksums(tmp_path, good_zip,
                                                                      mirror):
    wrong = "0" * 40
    with pytest.raises(InputError) as err:
        fetched(tmp_path, mirror, pins={NAME: wrong})
    message = str(err.value)
    assert message.startswith(f"{NAME}: sha1 mismatch: ")
    assert f"expected {wrong}, actual {sha1(good_zip)}" in message
    assert not (tmp_path / "downloads" / NAME).exists()
    assert not part_path(tmp_path / "downloads" / NAME).exists()
    assert not (tmp_path / "fetched-data" / TOP).exists()


def test_a_server_with_another_size_is_refused_before_downloading(tmp_path, good_zip, mirror):
    """A published size (ADE20K publishes none; here an entry that does) is checked against
    what the server announces before a byte is kept."""
    source = dataclasses.replace(ADE20K.sources[0], sha1=sha1(good_zip), size=123)
    sized = dataclasses.replace(ADE20K, sources=(source,))
    with pytest.raises(InputError, match=f"serves {good_zip.stat().st_size} bytes, "
                                           "expected 123"):
        fetched(tmp_path, mirror, dataset=sized)
    assert mirror.ranges == [None]
    assert not part_path(tmp_path / "downloads" / NAME).exists()


def test_an_unreachable_url_names_the_manual_route(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download.time, "sleep", lambda seconds: None)
    dest = tmp_path / NAME
    rc = run_cli(["prepare", "ade20k", "--source", str(dest), "--data-root", str(tmp_path / "d"),
                  "--download", "--mirror", "http://127.0.0.1:1/", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith("internseg prepare: error: ")
    assert "connection refused by 127.0.0.1:1" in err
    assert err.endswith(f"or download {NAME} yourself (another address: --mirror, in the "
                        f"workflow data.ade20k.mirror) and place it at {dest}")


def test_module_import_is_light():
    import subprocess
    import sys

    code = ("import sys, internseg.preparation, internseg.splits; "
            "print(sorted({'numpy', 'PIL', 'tqdm', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "[]"


def test_official_address_and_sha1_are_the_recorded_ones(reference):
    source = ADE20K.sources[0]
    assert source.name == reference["ade20k"]["archive"]
    assert (source.url, source.sha1) == (reference["ade20k"]["url"], reference["ade20k"]["sha1"])
    assert source.size is None  # none is published
    assert (ADE20K.train_count, ADE20K.val_count) == (reference["ade20k"]["train_images"],
                                                      reference["ade20k"]["val_images"])
    # the default pin is that sha1
    assert preparation.resolve_pins(ADE20K)[NAME] == preparation.Pin(
        "sha1", reference["ade20k"]["sha1"], None, False)


def test_the_presets_settings_become_the_commands_options():
    import yaml

    from internseg.cli import build_parser, pins_of

    presets = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())["presets"]
    demo = preparation.workflow_settings(ADE20K, "demo", presets["demo"])
    assert preparation.source_files(ADE20K, demo) == [f"resources/demo/{NAME}"]
    assert preparation.download_args(ADE20K, demo) == ["ade20k", "--unpinned"]
    assert preparation.prepare_args(ADE20K, demo) == [
        "ade20k", "--train-count", "96", "--val-count", "16", "--unpinned"]
    paper = preparation.workflow_settings(ADE20K, "paper", presets["paper"])
    assert preparation.source_files(ADE20K, paper) == [f"resources/paper/{NAME}"]
    # the published sha1 applies by default: nothing to pass
    assert preparation.download_args(ADE20K, paper) == ["ade20k"]
    assert preparation.prepare_args(ADE20K, paper) == [
        "ade20k", "--train-count", str(ADE20K.train_count), "--val-count",
        str(ADE20K.val_count)]
    given = dict(paper, mirror="http://mirror.example/ade", pins={NAME: "a" * 40})
    args = build_parser().parse_args(["download", *preparation.download_args(ADE20K, given),
                                      "--out", f"z/{NAME}"])
    assert (args.dataset, pins_of(args), args.mirror, args.unpinned) == (
        "ade20k", {NAME: "a" * 40}, "http://mirror.example/ade", False)
    args = build_parser().parse_args(["prepare", *preparation.prepare_args(ADE20K, given),
                                      "--source", "z", "--data-root", "d"])
    # the workflow's preparation never downloads (its download jobs do): no mirror for it
    assert (args.dataset, pins_of(args), args.mirror) == ("ade20k", {NAME: "a" * 40}, None)
    with pytest.raises(InputError, match="contradict"):
        preparation.prepare_args(ADE20K, dict(demo, download=True))


def test_download_command_resumes_checks_and_leaves_a_placed_zip_alone(tmp_path, good_zip,
                                                                        mirror, capsys):
    out = tmp_path / "dl" / NAME
    out.parent.mkdir()
    part_path(out).write_bytes(good_zip.read_bytes()[:500])
    argv = ["download", "ade20k", "--out", str(out), "--mirror", mirror.base, "--no-progress",
            "--pin"]
    assert run_cli([*argv, f"{NAME}={sha1(good_zip)}"]) == 0
    assert out.read_bytes() == good_zip.read_bytes() and mirror.ranges == ["bytes=500-"]
    assert run_cli([*argv, f"{NAME}={sha1(good_zip)}"]) == 0  # there already: nothing fetched
    assert mirror.ranges == ["bytes=500-"]
    assert "already there" in capsys.readouterr().out
    out.unlink()
    assert run_cli([*argv, f"{NAME}={'0' * 40}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("internseg download: error: ")
    assert f"sha1 mismatch: expected {'0' * 40}, actual {sha1(good_zip)}" in err
    assert not out.exists()


def test_download_command_checks_the_published_sha1_by_default(tmp_path, good_zip, mirror,
                                                               capsys):
    out = tmp_path / "dl" / NAME
    assert run_cli(["download", "ade20k", "--out", str(out), "--mirror", mirror.base,
                    "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (f"sha1 mismatch: expected {ADE20K.sources[0].sha1}, actual {sha1(good_zip)}"
            in err)
    assert not out.exists()


def test_download_command_names_the_file_by_out_or_file(tmp_path, good_zip, mirror, capsys):
    out = tmp_path / "dl" / "ade.zip"
    pin = ["--pin", f"{NAME}={sha1(good_zip)}", "--mirror", mirror.base, "--no-progress"]
    assert run_cli(["download", "ade20k", "--out", str(out), *pin]) == 2
    assert (f"internseg download: error: --out {out}: not a file of ade20k ({NAME}; --file "
            "says which)") in capsys.readouterr().err
    assert not out.exists() and mirror.ranges == []
    assert run_cli(["download", "ade20k", "--out", str(out), "--file", NAME, *pin]) == 0
    assert out.read_bytes() == good_zip.read_bytes()
    assert mirror.ranges == [None]
    assert any(mirror.url(NAME) in line for line in capsys.readouterr().out.splitlines())
