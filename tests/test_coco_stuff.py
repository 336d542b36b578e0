"""COCO-Stuff-164K's preparation through the shared lifecycle (internseg.preparation's
prepare_dataset, internseg.conversion's raw-map conversion, `internseg prepare
coco_stuff164k`), on synthetic zips in the real COCO-Stuff-164K names and layout.

Expected facts (the mapping, the unused raw ids, counts, pins) are parsed from
tests/facts/experiments.yaml, never taken from the module under test.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from zips import write_zip

from internseg import conversion, preparation
from internseg.archives import HOLDER_RECORD
from internseg.datasets import COCO_UNUSED_RAW_IDS, DATASETS
from internseg.demo import write_demo_coco_stuff
from internseg.errors import InputError
from internseg.locks import LockHeld, exclusive
from internseg.preparation import prepare_dataset

E = re.escape
N_TRAIN, N_VAL = 8, 4
COCO = DATASETS["coco_stuff164k"]
MAPS_ZIP = next(s.name for s in COCO.sources if s.holds == "raw_labels")
TOP = COCO.tree
MANIFEST = f"{TOP}.manifest.json"
RECORD = f"{MAPS_ZIP}.sha256"


# ---------------------------------------------------------------- facts


@pytest.fixture(scope="module")
def facts(reference):
    return reference["coco_stuff164k"]


def facts_mapping(facts) -> dict[int, int]:
    """The raw -> train id mapping written as ranges, e.g. '12-24 -> 11-23, 66 -> 60'."""
    text = facts["raw_to_train_id"]
    mapping = {}
    for raw, train in re.findall(r"(\d+(?:-\d+)?) -> (\d+(?:-\d+)?)", text.split("(")[0]):
        r0, r1 = (int(v) for v in (raw.split("-") * 2)[:2])
        t0, t1 = (int(v) for v in (train.split("-") * 2)[:2])
        assert r1 - r0 == t1 - t0, (raw, train)
        mapping.update(zip(range(r0, r1 + 1), range(t0, t1 + 1)))
    assert len(mapping) == int(re.search(r"\((\d+) entries", text)[1])
    return mapping


def facts_unused(facts) -> list[int]:
    found = re.search(r"Raw ([\d, ]+) are COCO thing ids", facts["raw_maps"])
    return [int(v) for v in found[1].split(",")]


def apply_facts(mapping: dict[int, int], raw: np.ndarray) -> np.ndarray:
    table = np.full(256, -1, dtype=np.int32)
    for r, t in mapping.items():
        table[r] = t
    out = table[raw]
    assert (out >= 0).all(), "the demo used a raw value outside the recorded mapping"
    return out.astype(np.uint8)


def test_mapping_is_the_recorded_one(facts):
    from mmseg.datasets import COCOStuffDataset

    expected = facts_mapping(facts)
    assert COCO.convert.mapping == expected
    assert COCO.convert.raw_suffix == ".png"
    train_ids = sorted(t for r, t in expected.items() if r != 255)
    assert train_ids == list(range(COCO.num_classes))  # each train id exactly once
    assert expected[255] == COCO.ignore_index == 255
    assert COCO.label_ids == (0, COCO.num_classes - 1)
    assert len(COCOStuffDataset.METAINFO["classes"]) == COCO.num_classes
    # the ids the facts call unused are exactly the raw 0..181 the mapping leaves out
    assert sorted(set(range(182)) - expected.keys()) == facts_unused(facts)
    assert list(COCO_UNUSED_RAW_IDS) == facts_unused(facts)


def test_pins_and_counts_are_the_recorded_ones(facts):
    files = {name: v for name, v in facts["files"].items() if name.endswith(".zip")}
    assert [s.name for s in COCO.sources] == list(files)
    for name, recorded in files.items():
        source = COCO.source(name)
        assert source.url == recorded["url"]
        assert source.sha256 == recorded.get("sha256")
        assert source.sha1 in (None, recorded.get("sha1"))
        assert source.size == (recorded["size"] if "sha256" in recorded else None)
    # the facts' layout: each image zip holds its split, the maps zip both splits
    assert [(s.holds, s.splits) for s in COCO.sources] == [
        ("images", ("train2017",)), ("images", ("val2017",)),
        ("raw_labels", ("train2017", "val2017"))]
    # what prepare_dataset expects when no count is given, and what the workflow passes
    counts = facts["layout"]["counts"]
    assert (COCO.train_count, COCO.val_count) == (counts["train"], counts["val"])
    settings = preparation.workflow_settings(COCO, "paper", {})
    assert (settings["train_count"], settings["val_count"]) == (counts["train"], counts["val"])


# ---------------------------------------------------------------- conversion of one map


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(w: int, h: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def convert(tmp_path: Path, raw: np.ndarray) -> tuple[str | None, Path]:
    (tmp_path / "raw.png").write_bytes(png(raw))
    (tmp_path / "image.jpg").write_bytes(jpeg(raw.shape[1], raw.shape[0]))
    out = tmp_path / "out.png"
    problem = conversion.convert_map(tmp_path / "raw.png", out, tmp_path / "image.jpg",
                                     "train2017/000000000009.png",
                                     conversion.lookup_table(COCO.convert))
    return problem, out


def test_every_recorded_raw_value_converts_to_its_train_id(tmp_path, facts):
    mapping = facts_mapping(facts)
    raw = np.array(sorted(mapping), dtype=np.uint8).reshape(4, 43)
    problem, out = convert(tmp_path, raw)
    assert problem is None
    np.testing.assert_array_equal(np.asarray(Image.open(out)), apply_facts(mapping, raw))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("value", [*range(11), 200])  # indexes into the facts' unused ids
def test_raw_values_outside_the_mapping_are_refused(tmp_path, facts, value):
    bad = facts_unused(facts)[value] if value < 11 else value
    raw = np.full((6, 8), 156, dtype=np.uint8)
    raw[2, 3] = bad
    problem, out = convert(tmp_path, raw)
    assert problem == (f"train2017/000000000009.png: raw values {bad} are not in the "
                       "dataset's mapping (1 pixels)")
    assert not out.exists()


# ---------------------------------------------------------------- synthetic zips


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    return write_demo_coco_stuff(tmp_path_factory.mktemp("coco"), n_train=N_TRAIN,
                                 n_val=N_VAL, seed=0)


@pytest.fixture
def sources(tmp_path, demo) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    for name, path in demo.items():
        shutil.copyfile(path, folder / name)
    return folder


def rewrite(folder: Path, name: str, change, symlinks=None) -> None:
    """Rewrite one zip of ``folder`` with ``change(entries)`` applied."""
    entries = read_entries(folder / name)
    change(entries)
    write_zip(folder / name, entries, symlinks)


def read_entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def stems(folder: Path, split: str) -> list[str]:
    return sorted(n[len(split) + 1:-4] for n in read_entries(folder / f"{split}.zip")
                  if n.endswith(".jpg"))


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def prepare(sources, data_root, **kwargs):
    kwargs = {"pinned": False, "train_count": N_TRAIN, "val_count": N_VAL, "workers": 1,
              "progress": False, **kwargs}  # synthetic zips: the published pins do not apply
    return prepare_dataset(COCO, sources, data_root, **kwargs)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def refused(sources, data_root, match: str, **kwargs) -> str:
    """Prepare, expecting one line naming the culprit; nothing may be left in data_root."""
    with pytest.raises(InputError) as err:
        prepare(sources, data_root, **kwargs)
    message = str(err.value)
    assert "\n" not in message, message
    assert re.search(match, message), message
    assert [n for n in listing(data_root) if n != RECORD] == []
    return message


# ---------------------------------------------------------------- end to end


def test_demo_zips_prepared_end_to_end(tmp_path, facts, monkeypatch):
    demo = write_demo_coco_stuff(tmp_path / "src", n_train=48, n_val=12, seed=1)
    data_root = tmp_path / "data"
    lines = []
    result = prepare(demo["train2017.zip"].parent, data_root, workers=2, train_count=48,
                     val_count=12, report=lines.append)
    target = data_root / TOP
    assert result.action == "extracted"
    assert listing(data_root) == [TOP, MANIFEST, RECORD]
    manifest = json.loads((data_root / MANIFEST).read_text())
    assert manifest == result.manifest
    assert manifest["manifest_version"] == 2
    assert manifest["dataset"] == "COCO-Stuff-164K" and manifest["valid"] is True
    assert manifest["name"] == "coco_stuff164k"
    assert manifest["root"] == str(target)
    assert (manifest["source_kind"], manifest["source"]) == ("files", None)
    assert manifest["num_classes"] == len(facts_mapping(facts)) - 1
    assert manifest["ignore_index"] == 255 and manifest["extras"] == {}
    assert manifest["sources"].keys() == demo.keys()
    for name, path in demo.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert manifest["sources"][name] == {"path": str(path), "size": path.stat().st_size,
                                             "algorithm": "sha256", "digest": digest,
                                             "pinned": False}
    assert (data_root / RECORD).read_text().split()[0] == manifest["sources"][MAPS_ZIP]["digest"]
    assert manifest["train_stems"] == stems(demo["train2017.zip"].parent, "train2017")
    assert manifest["train_count"] == 48 and manifest["val_count"] == 12
    assert manifest["train_stems_sha256"] == hashlib.sha256(
        "\n".join(manifest["train_stems"]).encode()).hexdigest()
    assert manifest["val_stems_sha256"] == hashlib.sha256(
        "\n".join(stems(demo["train2017.zip"].parent, "val2017")).encode()).hexdigest()
    assert manifest["bytes"]["train"] > 0 and manifest["bytes"]["val"] > 0
    figures = manifest["conversion"]
    assert figures["images"] == 60 and figures["workers"] == 2
    assert figures["images_per_s"] > 0 and figures["seconds"] > 0
    assert figures["already_converted"] == 0
    assert any(line.startswith("converted 60 maps") and "images/s" in line for line in lines)

    # every pixel of every converted map is the facts' mapping of the raw map
    mapping = facts_mapping(facts)
    raw_maps = read_entries(demo[MAPS_ZIP])
    used = set()
    for split in ("train2017", "val2017"):
        images = read_entries(demo[f"{split}.zip"])
        for name, data in raw_maps.items():
            if not (name.startswith(f"{split}/") and name.endswith(".png")):
                continue
            stem = name[len(split) + 1:-4]
            raw = np.asarray(Image.open(io.BytesIO(data)))
            used |= set(np.unique(raw).tolist())
            converted = target / "annotations" / split / f"{stem}_labelTrainIds.png"
            np.testing.assert_array_equal(np.asarray(Image.open(converted)),
                                          apply_facts(mapping, raw))
            image = target / "images" / split / f"{stem}.jpg"
            assert image.read_bytes() == images[f"{split}/{stem}.jpg"]
    assert 255 in used and used.isdisjoint(facts_unused(facts))
    assert len(used) >= 6 and max(used - {255}) > 90  # things and stuff

    def forbidden(*args, **kwargs):
        raise AssertionError("a rerun must not extract, convert or validate again")

    for module, name in ((preparation, "_extract_all"), (conversion, "convert_maps"),
                         (preparation, "validate_tree")):
        monkeypatch.setattr(module, name, forbidden)
    before = (data_root / MANIFEST).stat().st_mtime_ns
    again = prepare(demo["train2017.zip"].parent, data_root, train_count=48, val_count=12)
    assert again.action == "up-to-date" and again.manifest == manifest
    assert (data_root / MANIFEST).stat().st_mtime_ns == before


def test_demo_uses_classes_of_both_kinds():
    from internseg.demo import coco_demo_looks

    backgrounds, objects = coco_demo_looks()
    from mmseg.datasets import COCOStuffDataset

    classes = COCOStuffDataset.METAINFO["classes"]
    for look in backgrounds + objects:
        assert classes[COCO.convert.mapping[look.label]] == look.name


def test_demo_zips_are_reproducible(tmp_path, demo):
    again = write_demo_coco_stuff(tmp_path, n_train=N_TRAIN, n_val=N_VAL, seed=0)
    for name, path in demo.items():
        assert again[name].read_bytes() == path.read_bytes()
    names = list(read_entries(demo[MAPS_ZIP]))
    assert all(re.fullmatch(r"(train2017|val2017)/(\d{12}\.png)?", n) for n in names)


def test_demo_refuses_images_too_small_for_its_shapes(tmp_path):
    with pytest.raises(InputError, match=r"demo image sides \(8, 12\)"):
        write_demo_coco_stuff(tmp_path, size=(8, 12))
    assert listing(tmp_path) == []


def test_sources_by_name_and_a_custom_manifest(sources, data_root, tmp_path):
    out = tmp_path / "meta" / "coco.json"
    by_name = {s.name: sources / s.name for s in COCO.sources}
    result = prepare(by_name, data_root, manifest_path=out)
    assert json.loads(out.read_text()) == result.manifest
    assert listing(data_root) == [TOP, RECORD]


# ---------------------------------------------------------------- refused sources


def test_wrong_sha256_pin(sources, data_root):
    wrong = "0" * 64
    actual = hashlib.sha256((sources / "train2017.zip").read_bytes()).hexdigest()
    refused(sources, data_root, f"^{E(str(sources / 'train2017.zip'))}: sha256 mismatch: "
            f"expected {wrong}, actual {actual}$",
            pins={"train2017.zip": wrong})


def test_wrong_sha1_pin(sources, data_root):
    """A pin of 40 hex digits is a sha1, and the file is checked with it."""
    wrong = "0" * 40
    actual = hashlib.sha1((sources / MAPS_ZIP).read_bytes()).hexdigest()
    refused(sources, data_root, f"^{E(str(sources / MAPS_ZIP))}: sha1 mismatch: "
            f"expected {wrong}, actual {actual}$", pins={MAPS_ZIP: wrong.upper()})


def test_wrong_size_pin(sources, data_root, facts):
    """Pinned, each image zip is held to its published size: a pin given for the first frees
    it of its published size and digest, the second is refused by its size."""
    size = (sources / "val2017.zip").stat().st_size
    train = hashlib.sha256((sources / "train2017.zip").read_bytes()).hexdigest()
    refused(sources, data_root, f"^{E(str(sources / 'val2017.zip'))}: size {size} bytes, "
            f"expected {facts['files']['val2017.zip']['size']} ",
            pinned=True, pins={"train2017.zip": train})


def test_a_pin_for_a_file_of_another_dataset(sources, data_root):
    refused(sources, data_root, f"^pins: ADEChallengeData2016.zip is not a file of "
            f"coco_stuff164k \\(train2017.zip, val2017.zip, {E(MAPS_ZIP)}\\)$",
            pins={"ADEChallengeData2016.zip": "0" * 40})


def test_truncated_zip(sources, data_root):
    whole = (sources / MAPS_ZIP).read_bytes()
    (sources / MAPS_ZIP).write_bytes(whole[: len(whole) // 2])
    refused(sources, data_root, f"^{E(str(sources / MAPS_ZIP))}: not a readable zip archive")


def test_corrupt_entry(sources, data_root):
    name = f"train2017/{stems(sources, 'train2017')[2]}.jpg"
    data = bytearray((sources / "train2017.zip").read_bytes())
    entry = read_entries(sources / "train2017.zip")[name]
    at = bytes(data).find(entry) + len(entry) // 2
    data[at] ^= 0xFF
    (sources / "train2017.zip").write_bytes(bytes(data))
    refused(sources, data_root,
            f"^{E(str(sources / 'train2017.zip'))}: entry '{name}' is corrupt \\(Bad CRC-32")


@pytest.mark.parametrize("entry, symlink, reason", [
    ("../evil", False, "has a '..' component"),
    ("train2017/../../evil", False, "has a '..' component"),
    ("/abs/evil", False, "has an absolute path"),
    ("train2017/link.jpg", True, "is a symbolic link"),
])
def test_entries_escaping_their_folder(sources, data_root, tmp_path, entry, symlink, reason):
    def add(entries):
        if not symlink:
            entries[entry] = b"x"

    rewrite(sources, "val2017.zip", add, symlinks={entry: "/etc/passwd"} if symlink else None)
    refused(sources, data_root,
            f"^{E(str(sources / 'val2017.zip'))}: refusing to extract: entry {E(repr(entry))} "
            f"{E(reason)}$")
    assert not any(p.name in ("evil", "link.jpg") for p in tmp_path.rglob("*"))


def test_missing_zips_without_download(tmp_path, data_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, data_root, f"^{E(str(empty / 'train2017.zip'))}, .*{E(MAPS_ZIP)}: not "
            f"found; place train2017.zip and val2017.zip and {E(MAPS_ZIP)} there "
            r"\(docs/datasets.md\) or pass --download$")


def test_a_missing_source_folder(tmp_path, data_root):
    refused(tmp_path / "nowhere", data_root, f"^{E(str(tmp_path / 'nowhere'))}: source not found$")


def test_one_zip_given_for_three(sources, data_root):
    refused(sources / "train2017.zip", data_root,
            f"^--source {E(str(sources / 'train2017.zip'))}: coco_stuff164k is prepared from "
            f"train2017.zip, val2017.zip, {E(MAPS_ZIP)}: give the folder holding them$")


def test_target_without_our_manifest_is_validated_in_place_not_replaced(
        sources, data_root, tmp_path, monkeypatch, caplog):
    """A tree at the target that no manifest or record of ours vouches for is the user's:
    validated where it is (manifest source_kind "folder"), never replaced, and a warning
    names it; a broken one is refused, naming it."""
    made = tmp_path / "elsewhere"
    prepare(sources, made)
    shutil.copytree(made / TOP, data_root / TOP)
    (data_root / TOP / ".internseg-sources.json").unlink()  # nothing says it is ours
    (data_root / TOP / "mine.txt").write_text("kept")
    before = sorted(str(p.relative_to(data_root)) for p in (data_root / TOP).rglob("*"))
    monkeypatch.setattr(preparation, "_extract_all",
                        lambda *a, **k: pytest.fail("a tree of the user's was replaced"))
    target = data_root / TOP
    with caplog.at_level("WARNING", logger="internseg"):
        result = prepare(sources, data_root)
    assert result.action == "validated-in-place"
    assert any(str(target) in r.getMessage() and "without a manifest of ours" in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING"), caplog.text
    manifest = json.loads((data_root / MANIFEST).read_text())
    assert manifest == result.manifest
    assert (manifest["source_kind"], manifest["source"]) == ("folder", str(target))
    assert manifest["sources"] == {} and manifest["conversion"] is None
    assert manifest["root"] == str(target) and manifest["valid"] is True
    assert (manifest["train_count"], manifest["val_count"]) == (N_TRAIN, N_VAL)
    assert manifest["train_stems"] == stems(sources, "train2017")
    assert (target / "mine.txt").read_text() == "kept"
    assert sorted(str(p.relative_to(data_root)) for p in target.rglob("*")) == before
    assert prepare(sources, data_root).action == "up-to-date"

    # broken (a label map gone): refused, naming the tree, which stays as it was
    (data_root / MANIFEST).unlink()
    gone = stems(sources, "val2017")[1]
    (target / "annotations" / "val2017" / f"{gone}_labelTrainIds.png").unlink()
    with pytest.raises(InputError) as err:
        prepare(sources, data_root)
    message = str(err.value)
    assert message.startswith(f"{target}: COCO-Stuff-164K validation failed"), message
    assert f"val2017/{gone}" in message
    assert message.endswith(f"remove {target} to build it again from its files"), message
    assert (target / "mine.txt").read_text() == "kept"
    assert not (data_root / MANIFEST).exists()


def test_an_empty_folder_at_the_target_is_refused_not_replaced(sources, data_root):
    (data_root / TOP).mkdir()
    (data_root / TOP / "mine.txt").write_text("kept")
    with pytest.raises(InputError, match=f"^{E(str(data_root / TOP))}: .*validation failed"):
        prepare(sources, data_root)
    assert listing(data_root / TOP) == ["mine.txt"]
    assert (data_root / TOP / "mine.txt").read_text() == "kept"


def test_not_enough_disk(sources, data_root, monkeypatch):
    monkeypatch.setattr(preparation.shutil, "disk_usage",
                        lambda path: types.SimpleNamespace(free=2000))
    refused(sources, data_root, f"^{E(str(data_root))}: 0.0 MB free, preparing COCO-Stuff-164K "
            r"needs about 0\.[1-9] MB$")
    monkeypatch.undo()
    assert prepare(sources, data_root).action == "extracted"  # the check is not always false


# ---------------------------------------------------------------- refused contents


def test_a_map_missing_for_an_image(sources, data_root):
    stem = stems(sources, "train2017")[3]
    rewrite(sources, MAPS_ZIP, lambda e: e.pop(f"train2017/{stem}.png"))
    refused(sources, data_root, f"^{E(str(sources))}: the zips do not pair up: train2017.zip: "
            f"train2017/{stem}.jpg has no map train2017/{stem}.png in {E(MAPS_ZIP)}$")


def test_one_missing_partner_is_named(sources, data_root):
    # counts match the zips' (7), so the only problem left is the missing partner
    stem = stems(sources, "val2017")[0]
    rewrite(sources, MAPS_ZIP, lambda e: e.pop(f"val2017/{stem}.png"))
    rewrite(sources, MAPS_ZIP, lambda e: e.update({"val2017/000000999999.png": png(
        np.full((6, 8), 156, dtype=np.uint8))}))
    with pytest.raises(InputError) as err:
        prepare(sources, data_root)
    message = str(err.value)
    assert f"val2017.zip: val2017/{stem}.jpg has no map val2017/{stem}.png in {MAPS_ZIP}" \
        in message
    assert (f"{MAPS_ZIP}: val2017/000000999999.png has no image val2017/000000999999.jpg "
            "in val2017.zip") in message
    assert "expected" not in message  # the counts were right
    assert listing(data_root) == []


def test_an_image_missing_for_a_map(sources, data_root):
    stem = stems(sources, "val2017")[1]
    rewrite(sources, "val2017.zip", lambda e: e.pop(f"val2017/{stem}.jpg"))
    # the count is set to the images left: the missing image is the only problem
    refused(sources, data_root, f"^{E(str(sources))}: the zips do not pair up: {E(MAPS_ZIP)}: "
            f"val2017/{stem}.png has no image val2017/{stem}.jpg in val2017.zip$",
            val_count=N_VAL - 1)


def test_a_map_of_another_size(sources, data_root):
    stem = stems(sources, "train2017")[0]
    rewrite(sources, MAPS_ZIP, lambda e: e.update(
        {f"train2017/{stem}.png": png(np.full((5, 7), 156, dtype=np.uint8))}))
    refused(sources, data_root, rf"^{E(MAPS_ZIP)}: maps refused: train2017/{stem}.png: size 7x5 "
            rf"differs from its image {stem}.jpg \(\d+x\d+\)$")


def map_like(sources: Path, split: str, stem: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(read_entries(sources / MAPS_ZIP)[f"{split}/{stem}.png"])))


def test_raw_values_11_and_200(sources, data_root):
    stem = stems(sources, "train2017")[5]
    raw = map_like(sources, "train2017", stem)
    raw[0, :3] = 11
    raw[1, :2] = 200
    rewrite(sources, MAPS_ZIP, lambda e: e.update({f"train2017/{stem}.png": png(raw)}))
    refused(sources, data_root, rf"^{E(MAPS_ZIP)}: maps refused: train2017/{stem}.png: raw values "
            r"11, 200 are not in the dataset's mapping \(5 pixels\)$")


def test_an_rgb_map(sources, data_root):
    stem = stems(sources, "val2017")[2]
    raw = map_like(sources, "val2017", stem)
    rewrite(sources, MAPS_ZIP, lambda e: e.update(
        {f"val2017/{stem}.png": png(np.stack([raw] * 3, axis=-1))}))
    refused(sources, data_root, f"^{E(MAPS_ZIP)}: maps refused: val2017/{stem}.png: must be "
            "single-channel 8-bit \\(PIL mode 'L'\\), found mode 'RGB'$")


def test_a_count_short_of_the_expected(sources, data_root):
    refused(sources, data_root, f"^{E(str(sources))}: the zips do not pair up: train2017.zip: "
            "8 images in train2017/, expected 9$", train_count=N_TRAIN + 1)


def test_a_half_jpeg_fails_validation(sources, data_root):
    stem = stems(sources, "val2017")[3]
    whole = jpeg(80, 64)
    raw = np.full((64, 80), 156, dtype=np.uint8)
    rewrite(sources, "val2017.zip", lambda e: e.update({f"val2017/{stem}.jpg":
                                                        whole[: len(whole) // 2]}))
    rewrite(sources, MAPS_ZIP, lambda e: e.update({f"val2017/{stem}.png": png(raw)}))
    refused(sources, data_root, f"COCO-Stuff-164K validation failed: images/val2017/{stem}.jpg: "
            "unreadable image")


def test_problems_are_listed_and_capped(sources, data_root):
    def break_maps(entries):
        for stem in stems(sources, "train2017")[:4]:
            raw = map_like(sources, "train2017", stem)
            raw[0, 0] = 11
            entries[f"train2017/{stem}.png"] = png(raw)

    rewrite(sources, MAPS_ZIP, break_maps)
    with pytest.raises(InputError) as err:
        prepare(sources, data_root, workers=2, max_errors=3)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{MAPS_ZIP}: maps refused (4 problems):"
    first = stems(sources, "train2017")[:3]
    assert lines[1:4] == [f"  - train2017/{stem}.png: raw values 11 are not in the dataset's "
                          "mapping (1 pixels)" for stem in first]
    assert lines[4:] == ["  ... and 1 more"]
    assert listing(data_root) == []


# ---------------------------------------------------------------- changed sources


def test_a_changed_zip_is_extracted_again(sources, data_root, monkeypatch):
    prepare(sources, data_root)
    stem = stems(sources, "train2017")[4]
    new = jpeg(*Image.open(io.BytesIO(read_entries(sources / "train2017.zip")[
        f"train2017/{stem}.jpg"])).size, seed=7)
    rewrite(sources, "train2017.zip", lambda e: e.update({f"train2017/{stem}.jpg": new}))
    calls = []
    real = preparation._extract_all
    monkeypatch.setattr(preparation, "_extract_all", lambda *a, **k: (calls.append(1),
                                                                       real(*a, **k)))
    result = prepare(sources, data_root)
    assert result.action == "re-extracted" and calls == [1]
    assert (data_root / TOP / "images" / "train2017" / f"{stem}.jpg").read_bytes() == new
    assert result.manifest["sources"]["train2017.zip"]["digest"] == hashlib.sha256(
        (sources / "train2017.zip").read_bytes()).hexdigest()
    assert listing(data_root) == [TOP, MANIFEST, RECORD]  # the old tree is gone
    assert prepare(sources, data_root).action == "up-to-date"


def test_a_changed_zip_is_extracted_again_when_the_manifest_is_gone(sources, data_root):
    """The workflow deletes the manifest (its rule's output) before preparing: the tree's
    record of its zips vouches for it (without it, it would be taken for a tree of the
    user's, validated where it is and never built again from other zips)."""
    prepare(sources, data_root)
    (data_root / MANIFEST).unlink()
    again = prepare(sources, data_root)
    assert again.action == "validated-in-place" and (data_root / MANIFEST).is_file()
    (data_root / MANIFEST).unlink()
    stem = stems(sources, "train2017")[4]
    new = jpeg(*Image.open(io.BytesIO(read_entries(sources / "train2017.zip")[
        f"train2017/{stem}.jpg"])).size, seed=7)
    rewrite(sources, "train2017.zip", lambda e: e.update({f"train2017/{stem}.jpg": new}))
    assert prepare(sources, data_root).action == "re-extracted"
    assert (data_root / TOP / "images" / "train2017" / f"{stem}.jpg").read_bytes() == new


def test_another_maps_zip_than_the_recorded_one(sources, data_root, facts):
    prepare(sources, data_root)
    first = (data_root / RECORD).read_text().split()[0]
    stem = stems(sources, "val2017")[0]
    raw = map_like(sources, "val2017", stem)
    raw[0, 0] = 0 if raw[0, 0] != 0 else 156
    rewrite(sources, MAPS_ZIP, lambda e: e.update({f"val2017/{stem}.png": png(raw)}))
    new = hashlib.sha256((sources / MAPS_ZIP).read_bytes()).hexdigest()
    with pytest.raises(InputError) as err:
        prepare(sources, data_root)
    message = (f"{sources / MAPS_ZIP}: sha256 {new} differs from {first}, recorded in "
               f"{data_root / RECORD} when it was first used; pass --pin {MAPS_ZIP}={new} "
               "to accept this file (in the workflow: data.coco_stuff164k.pins in "
               "config.yaml's preset)")
    assert str(err.value) == message
    result = prepare(sources, data_root, pins={MAPS_ZIP: new})
    assert result.action == "re-extracted"
    assert (data_root / RECORD).read_text().split()[0] == new
    converted = np.asarray(Image.open(
        data_root / TOP / "annotations" / "val2017" / f"{stem}_labelTrainIds.png"))
    assert converted[0, 0] == facts_mapping(facts)[int(raw[0, 0])]
    # accepted: the file the tree now holds is the one a run without the pin is held to
    assert prepare(sources, data_root).action == "up-to-date"


def test_a_deleted_record_is_written_again_from_the_tree(sources, data_root):
    first = prepare(sources, data_root)
    (data_root / RECORD).unlink()
    assert prepare(sources, data_root).action == "up-to-date"
    digest = first.manifest["sources"][MAPS_ZIP]["digest"]
    assert (data_root / RECORD).read_text() == f"{digest}  {MAPS_ZIP}\n"
    rewrite(sources, MAPS_ZIP, lambda e: e.pop("val2017/"))
    with pytest.raises(InputError, match=f"differs from {digest}"):
        prepare(sources, data_root)


# ---------------------------------------------------------------- interrupted conversion


class Killed(BaseException):
    """Stands in for SIGKILL: nothing below it gets to clean up."""


def kill_conversion_after(monkeypatch, k: int) -> list[str]:
    """Make the k+1-th map conversion die half-way through writing its PNG."""
    done = []
    real = conversion.convert_map

    def dying(raw, out, image, name, table):
        if len(done) == k:
            out.with_name(f".{out.name}.4242.tmp").write_bytes(png(np.zeros((4, 4), np.uint8))[:20])
            raise Killed
        done.append(name)
        return real(raw, out, image, name, table)

    monkeypatch.setattr(conversion, "convert_map", dying)
    return done


KILL_DURING_CONVERSION = """
import os, signal, sys
from pathlib import Path
from PIL import Image
from internseg.datasets import DATASETS
from internseg.preparation import prepare_dataset

save, written = Image.Image.save, []

def save_then_die(self, fp, *args, **kwargs):
    # the 6th PNG is killed half-written, wherever the converter writes it
    save(self, fp, *args, **kwargs)
    written.append(fp)
    if len(written) == 6:
        data = Path(fp).read_bytes()
        Path(fp).write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

Image.Image.save = save_then_die
prepare_dataset(DATASETS["coco_stuff164k"], sys.argv[1], sys.argv[2], pinned=False,
                train_count=8, val_count=4, workers=1, progress=False)
"""


def core_env() -> dict[str, str]:
    """The environment of a subprocess that imports the package under test."""
    core = str(Path(preparation.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([core, os.environ.get("PYTHONPATH", "")])}


def test_a_killed_conversion_resumes_with_the_rest(sources, data_root, monkeypatch, facts):
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_CONVERSION, str(sources),
                             str(data_root)], env=core_env(), capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    # the killed holder's record of the lock stays until the next run takes the lock
    (partial,) = [name for name in listing(data_root) if name != HOLDER_RECORD]
    assert partial.startswith(preparation.partial_prefix(COCO))
    assert not (data_root / TOP).exists() and not (data_root / MANIFEST).exists()
    finished = sorted((data_root / partial / TOP / "annotations").rglob("*_labelTrainIds.png"))
    assert len(finished) == 5  # the half-written 6th is not among them

    second, lines = [], []
    real = conversion.convert_map
    monkeypatch.setattr(conversion, "convert_map",
                        lambda raw, out, image, name, table: (second.append(name),
                                                              real(raw, out, image, name,
                                                                   table))[1])
    monkeypatch.setattr(preparation, "_extract_all",
                        lambda *a, **k: pytest.fail("re-extracted"))
    result = prepare(sources, data_root, report=lines.append)
    assert result.action == "resumed"
    first = [f"{p.parent.name}/{p.name.removesuffix('_labelTrainIds.png')}.png" for p in finished]
    assert sorted(first + second) == sorted(
        f"{split}/{s}.png" for split in ("train2017", "val2017") for s in stems(sources, split))
    assert "resuming the conversion: 5 maps already converted, 7 to go" in lines
    assert result.manifest["conversion"]["images"] == 7
    assert result.manifest["conversion"]["already_converted"] == 5
    assert listing(data_root) == [TOP, MANIFEST, RECORD]
    annotations = data_root / TOP / "annotations"
    assert not [p for p in annotations.rglob(".*")]  # the half PNG was not kept
    mapping = facts_mapping(facts)
    for split in ("train2017", "val2017"):
        for stem in stems(sources, split):
            np.testing.assert_array_equal(
                np.asarray(Image.open(annotations / split / f"{stem}_labelTrainIds.png")),
                apply_facts(mapping, map_like(sources, split, stem)))


SLOW_CONVERSION = """
import sys, time
from internseg import conversion
from internseg.datasets import DATASETS
from internseg.preparation import prepare_dataset

convert_map = conversion.convert_map

def slow(*args):  # what the workers run: they are forked with the module as patched here
    time.sleep(1)
    return convert_map(*args)

conversion.convert_map = slow
prepare_dataset(DATASETS["coco_stuff164k"], sys.argv[1], sys.argv[2], pinned=False,
                train_count=8, val_count=4, workers=2, progress=False)
"""


def children(pid: int) -> list[int]:
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


def ended(pid: int) -> bool:
    """Gone, or a zombie (an orphan that the container's init does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_conversion_workers_die_with_their_killed_parent_and_the_rerun_resumes(sources,
                                                                               data_root):
    """An out-of-memory kill takes the main process alone: its workers shared the data
    root's lock and, left running, held it until someone found them, while the rerun waited
    without a word."""
    main = subprocess.Popen([sys.executable, "-c", SLOW_CONVERSION, str(sources),
                             str(data_root)], env=core_env())
    workers = []
    try:
        deadline = time.monotonic() + 60
        pattern = f"{preparation.partial_prefix(COCO)}*/{TOP}/annotations/*/*_labelTrainIds.png"
        while not list(data_root.glob(pattern)):  # converting
            assert main.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        workers = children(main.pid)
        assert len(workers) == 2
        main.kill()  # SIGKILL, to the main process only
        main.wait()
        deadline = time.monotonic() + 5
        while not all(ended(pid) for pid in workers):
            assert time.monotonic() < deadline, "the workers outlived their parent"
            time.sleep(0.05)
    finally:
        main.kill()
        for pid in workers:
            if not ended(pid):
                os.kill(pid, signal.SIGKILL)
    lines = []
    result = prepare(sources, data_root, report=lines.append)
    assert result.action == "resumed", lines
    assert 0 < result.manifest["conversion"]["already_converted"] < N_TRAIN + N_VAL
    assert not [line for line in lines if line.startswith("waiting")]
    assert listing(data_root) == [TOP, MANIFEST, RECORD]


HOLD_THE_DATA_ROOT = """
import sys, time
from pathlib import Path
from internseg.archives import locked

with locked(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_wait_for_the_data_root_says_at_once_which_process_it_waits_for(sources, data_root):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_DATA_ROOT, str(data_root)],
                              stdout=subprocess.PIPE, text=True, env=core_env())
    lines, done = [], {}
    waiter = threading.Thread(target=lambda: done.update(
        result=prepare(sources, data_root, report=lines.append)))
    try:
        assert holder.stdout.readline() == "held\n"
        waiter.start()
        deadline = time.monotonic() + 5
        while not lines:
            assert time.monotonic() < deadline, "a silent wait"
            time.sleep(0.05)
        python = Path(sys.executable).name
        assert lines == [f"waiting for data root {data_root}: it is in use by `{python} -c "
                         f"{data_root}` (pid {holder.pid} on {socket.gethostname()})"]
        assert waiter.is_alive() and not (data_root / TOP).exists()
    finally:
        holder.kill()
        holder.wait()
    waiter.join(timeout=120)
    assert done["result"].action == "extracted"
    assert lines[1].startswith(f"data root {data_root}: lock taken after ")
    assert listing(data_root) == [TOP, MANIFEST, RECORD]  # the killed holder's record too


ORPHAN_HOLDS_THE_DATA_ROOT = """
import os, sys, time
from pathlib import Path
from internseg.archives import locked

with locked(Path(sys.argv[1])):
    child = os.fork()
    if child == 0:  # shares the lock, outlives its parent
        time.sleep(120)
        os._exit(0)
    print(child, flush=True)
    os._exit(0)  # as if killed: the lock is not released, the record stays
"""


def test_a_lock_left_to_the_child_of_a_killed_holder_says_the_holder_is_gone(data_root):
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_HOLDS_THE_DATA_ROOT, str(data_root)],
                              stdout=subprocess.PIPE, text=True, env=core_env())
    child = int(parent.stdout.readline())
    try:
        assert parent.wait() == 0
        with pytest.raises(LockHeld) as refused:
            with exclusive(data_root, what="it", record=data_root / HOLDER_RECORD, wait=False):
                pass
    finally:
        os.kill(child, signal.SIGKILL)
    assert f"(pid {parent.pid} on {socket.gethostname()}), which is no longer running: a " \
           "process it started still holds the lock; stop it" in str(refused.value)


def test_a_prepared_read_only_data_root_is_checked_without_a_holder_record(
        sources, data_root, monkeypatch):
    prepare(sources, data_root)
    write_text = Path.write_text

    def read_only(path, *args, **kwargs):
        if path.parent == data_root:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    assert prepare(sources, data_root).action == "up-to-date"
    assert listing(data_root) == [TOP, MANIFEST, RECORD]


def test_a_killed_conversion_from_other_zips_starts_over(sources, data_root, monkeypatch):
    with monkeypatch.context() as m:
        kill_conversion_after(m, 3)
        with pytest.raises(Killed):
            prepare(sources, data_root)
    (old_partial,) = listing(data_root)
    stem = stems(sources, "val2017")[0]
    rewrite(sources, "val2017.zip", lambda e: e.update({f"val2017/{stem}.jpg": jpeg(
        *Image.open(io.BytesIO(e[f"val2017/{stem}.jpg"])).size, seed=3)}))
    lines = []
    result = prepare(sources, data_root, report=lines.append)
    assert result.action == "extracted"
    assert f"removed {data_root / old_partial}, left by an interrupted run" in lines
    assert result.manifest["conversion"]["already_converted"] == 0
    assert listing(data_root) == [TOP, MANIFEST, RECORD]


def test_a_killed_extraction_is_removed_by_the_next_run(sources, data_root, monkeypatch):
    from internseg import archives

    calls = []
    real = archives._extract_entry

    def dying(*args):
        if len(calls) == 6:
            raise Killed
        calls.append(1)
        return real(*args)

    with monkeypatch.context() as m:
        m.setattr(archives, "_extract_entry", dying)
        m.setattr(preparation, "discard", lambda path: None)  # a kill cleans nothing up
        with pytest.raises(Killed):
            prepare(sources, data_root)
    (partial,) = listing(data_root)
    assert not (data_root / partial / preparation.MARKER).exists()
    assert prepare(sources, data_root).action == "extracted"
    assert listing(data_root) == [TOP, MANIFEST, RECORD]


# ---------------------------------------------------------------- download


@pytest.fixture
def mirror(demo):
    handler = functools.partial(Quiet, directory=str(demo["train2017.zip"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_missing_zips_are_downloaded_and_checked(tmp_path, data_root, demo, mirror):
    folder = tmp_path / "downloads"
    pins = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in demo.items()}
    lines = []
    result = prepare(folder, data_root, pinned=True, pins=pins, download=True, mirror=mirror,
                     report=lines.append)
    assert result.action == "extracted"
    assert listing(folder) == sorted(demo)
    for name, path in demo.items():
        assert (folder / name).read_bytes() == path.read_bytes()
        assert f"downloading {mirror}{name} -> {folder / name}" in lines
    assert all(info["pinned"] and info["algorithm"] == "sha256"
               for info in result.manifest["sources"].values())


def test_a_download_with_the_wrong_digest_is_refused(tmp_path, data_root, demo, mirror):
    folder = tmp_path / "downloads"
    pins = {"train2017.zip": hashlib.sha256(demo["train2017.zip"].read_bytes()).hexdigest(),
            "val2017.zip": "1" * 64}
    refused(folder, data_root, "^val2017.zip: sha256 mismatch: expected 1{64}, actual "
            f"[0-9a-f]{{64}}; the downloaded file was deleted; or download val2017.zip "
            f"yourself .* and place it at "
            f"{E(str(folder / 'val2017.zip'))}$",
            pinned=True, pins=pins, download=True, mirror=mirror)
    assert "val2017.zip" not in listing(folder)


def test_a_download_of_unpinned_files_is_refused(tmp_path, data_root, mirror):
    """The official files fetched, none of their published digests checked: refused before
    anything is fetched."""
    folder = tmp_path / "downloads"
    refused(folder, data_root, "^unpinned .* and download .* contradict each other",
            download=True, mirror=mirror)
    assert not folder.exists()


# ---------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    from internseg.cli import main

    return main(argv)


def test_cli_success(sources, data_root, capsys):
    maps_sha = hashlib.sha256((sources / MAPS_ZIP).read_bytes()).hexdigest()
    rc = run_cli(["prepare", "coco_stuff164k", "--source", str(sources), "--data-root",
                  str(data_root), "--train-count", "8", "--val-count", "4", "--workers", "2",
                  "--unpinned", "--pin", f"{MAPS_ZIP}={maps_sha.upper()}", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "extracted; 8 training and 4 validation pairs" in out and "images/s" in out
    manifest = json.loads((data_root / MANIFEST).read_text())
    assert manifest["sources"][MAPS_ZIP]["pinned"] is True
    assert manifest["sources"][MAPS_ZIP]["digest"] == maps_sha
    assert manifest["sources"]["train2017.zip"]["pinned"] is False


@pytest.mark.parametrize("extra,named", [
    ([], r"train2017.zip: size \d+ bytes, expected 19336861798"),
    (["--mirror", "http://127.0.0.1:1/"], "--mirror is only used with --download"),
    (["--pin", f"{MAPS_ZIP}=abc"], r"^pins: stuffthingmaps_trainval2017\.zip must be 40 \(sha1\) "
                                   r"or 64 \(sha256\) hex digits, got 'abc'$"),
    (["--pin", MAPS_ZIP], f"--pin '{MAPS_ZIP}': expected FILE=HEX"),
    (["--pin", f"nosuch.zip={'0' * 64}"], r"pins: nosuch.zip is not a file of coco_stuff164k"),
    (["--unpinned", "--download"], "unpinned .* and download .* contradict each other"),
])
def test_cli_errors_are_one_line(sources, data_root, capsys, extra, named):
    rc = run_cli(["prepare", "coco_stuff164k", "--source", str(sources), "--data-root",
                  str(data_root), "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    prefix = "internseg prepare: error: "
    assert rc == 2 and len(err) == 1 and err[0].startswith(prefix), err
    assert re.search(named, err[0][len(prefix):]), err
    assert listing(data_root) == []


def test_module_import_is_light():
    code = ("import sys, internseg.preparation, internseg.conversion, internseg.datasets; "
            "print(sorted({'numpy', 'PIL', 'tqdm', 'torch', 'mmseg'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**core_env(), "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "[]"


def presets() -> dict:
    import yaml

    return yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())["presets"]


def settings_of(preset: str) -> dict:
    """The preset's resolved coco_stuff164k block, as the workflow reads it."""
    return preparation.workflow_settings(COCO, preset, presets()[preset])


def test_the_presets_settings_become_the_prepare_commands_options(facts):
    from internseg.cli import build_parser

    # the demo's synthetic zips are checked against no pin; the paper's against the official
    block = presets()["demo"]["data"]["coco_stuff164k"]
    assert preparation.prepare_args(COCO, settings_of("demo")) == [
        "coco_stuff164k", "--train-count", str(block["train_count"]),
        "--val-count", str(block["val_count"]), "--unpinned"]
    counts = facts["layout"]["counts"]
    paper = settings_of("paper")
    assert preparation.prepare_args(COCO, paper) == [
        "coco_stuff164k", "--train-count", str(counts["train"]),
        "--val-count", str(counts["val"])]
    url = "http://mirror.example/coco"
    given = dict(paper, download=True, mirror=url, pins={MAPS_ZIP: "ab" * 32})
    args = build_parser().parse_args(["prepare", *preparation.prepare_args(COCO, given),
                                      "--source", "zips", "--data-root", "data"])
    assert (args.dataset, args.train_count, args.val_count) == (
        "coco_stuff164k", counts["train"], counts["val"])
    assert (args.unpinned, args.pin) == (False, [f"{MAPS_ZIP}={'ab' * 32}"])
    # the workflow's preparation downloads nothing: each missing file is a download job
    assert (args.download, args.mirror) == (False, None)
    args = build_parser().parse_args(["download", *preparation.download_args(COCO, given),
                                      "--out", f"zips/{MAPS_ZIP}"])
    assert (args.dataset, args.unpinned, args.pin, args.mirror) == (
        "coco_stuff164k", False, [f"{MAPS_ZIP}={'ab' * 32}"], url)
    assert preparation.source_files(COCO, paper) == [
        f"{paper['sources']}/{name}" for name in facts["files"] if name.endswith(".zip")]
    # the official zips fetched, none of their digests checked
    with pytest.raises(InputError, match="pinned: false .* and download: true .* contradict"):
        preparation.prepare_args(COCO, dict(settings_of("demo"), download=True))


def test_the_prepare_command_of_a_preset_with_a_mirror_runs(sources, data_root, capsys):
    """A preset that downloads from a mirror: its files fetched by the download jobs, the
    preparation's command must run on them (it refused the mirror it never uses)."""
    pins = {name: hashlib.sha256((sources / name).read_bytes()).hexdigest()
            for name in listing(sources)}
    settings = dict(settings_of("paper"), download=True, mirror="http://127.0.0.1:1/",
                    pins=pins, train_count=N_TRAIN, val_count=N_VAL)
    rc = run_cli(["prepare", *preparation.prepare_args(COCO, settings), "--source",
                  str(sources), "--data-root", str(data_root), "--workers", "1",
                  "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((data_root / MANIFEST).read_text())["valid"] is True


def test_the_advice_for_a_changed_maps_zip_works_under_the_demo_settings(sources, data_root,
                                                                         capsys):
    """The demo's `pinned: false` gave --unpinned, which refused the pin of the maps zip
    that the refusal asks for, naming options the user never typed."""
    from internseg.cli import main

    demo = dict(settings_of("demo"), train_count=N_TRAIN, val_count=N_VAL)

    def prepare_as_the_rule_does(settings) -> int:
        return main(["prepare", *preparation.prepare_args(COCO, settings), "--source",
                     str(sources), "--data-root", str(data_root), "--workers", "1",
                     "--no-progress"])

    assert prepare_as_the_rule_does(demo) == 0
    rewrite(sources, MAPS_ZIP, lambda e: e.pop("val2017/"))
    new = hashlib.sha256((sources / MAPS_ZIP).read_bytes()).hexdigest()
    capsys.readouterr()
    assert prepare_as_the_rule_does(demo) == 2
    err = capsys.readouterr().err
    assert f"pass --pin {MAPS_ZIP}={new} to accept this file (in the workflow: " \
           "data.coco_stuff164k.pins in config.yaml's preset)" in err
    assert prepare_as_the_rule_does(dict(demo, pins={MAPS_ZIP: new})) == 0
    assert (data_root / RECORD).read_text().split()[0] == new
    # the image zips stay unpinned: a wrong maps digest is still refused
    assert prepare_as_the_rule_does(dict(demo, pins={MAPS_ZIP: "0" * 64})) == 2
    assert f"{sources / MAPS_ZIP}: sha256 mismatch" in capsys.readouterr().err
