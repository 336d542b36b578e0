"""A dataset is one registered entry: what the code elsewhere reads of it agrees with it."""

from __future__ import annotations

import inspect
import json
import re
import zipfile

import numpy as np
import pytest

from internseg.datasets import DATASETS


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_layout_suffixes_are_what_its_mmseg_class_reads(name):
    # a moved config names no suffix: the class's defaults must find the prepared files
    import mmseg.datasets

    dataset = DATASETS[name]
    defaults = inspect.signature(getattr(mmseg.datasets, dataset.mmseg_type).__init__).parameters
    assert defaults["img_suffix"].default == dataset.layout.image_suffix
    assert defaults["seg_map_suffix"].default == dataset.layout.label_suffix


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_label_rule_takes_its_ids_and_refuses_the_next(name):
    dataset = DATASETS[name]
    low, high = dataset.label_ids
    allowed = [low, high] + ([dataset.ignore_index] if dataset.ignore_index is not None else [])
    assert dataset.label_values_problem(np.array(allowed, dtype=np.uint8)) is None
    problem = dataset.label_values_problem(np.array([high + 1, high + 1], dtype=np.uint8))
    assert problem.startswith(f"label value {high + 1} outside {low}..{high}")
    assert problem.endswith("(2 pixels)")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_entry_names_its_sources_and_split_folders(name):
    dataset = DATASETS[name]
    assert dataset.sources and all(s.url.startswith("http") for s in dataset.sources)
    prefix = dataset.data_prefix("val")
    assert prefix == dict(img_path=f"{dataset.layout.images}/{dataset.layout.val}",
                          seg_map_path=f"{dataset.layout.labels}/{dataset.layout.val}")
    assert len(dataset.val_image) == 2 and min(dataset.val_image) > 0


# ---------------------------------------------------------------- an entry without a config block


@pytest.fixture
def street(monkeypatch):
    """A dataset registered for this test only (the registry is restored after it)."""
    from internseg.datasets import Dataset, Layout, Source, register_dataset

    monkeypatch.setattr("internseg.datasets.DATASETS", dict(DATASETS))
    return register_dataset(Dataset(
        name="street", title="Street", mmseg_type="CityscapesDataset", num_classes=19,
        label_ids=(0, 18), ignore_index=255, reduce_zero_label=False, tree="street",
        data_root="resources/street/street",
        layout=Layout("leftImg8bit", "gtFine", "_leftImg8bit.png", "_gtFine_labelTrainIds.png",
                      "train", "val"),
        train_count=10, val_count=2, val_image=(64, 128),
        sources=(Source("street.zip", "http://example.invalid/street.zip", sha1="a" * 40),)))


def test_an_entry_without_a_config_block_takes_its_settings_from_the_entry(street):
    from internseg.preparation import (download_args, prepare_args, source_files,
                                       workflow_settings)

    settings = workflow_settings(street, "paper", {"data": {"ade20k": {}}})
    assert settings == dict(sources="resources/paper", download=False, mirror=None,
                            pinned=True, pins={}, train_count=10, val_count=2)
    assert source_files(street, settings) == ["resources/paper/street.zip"]
    assert prepare_args(street, settings) == ["street", "--train-count", "10",
                                              "--val-count", "2"]
    assert download_args(street, settings) == ["street"]
    # a block names only what differs; null keeps the entry's
    given = {"data": {"street": {"sources": "elsewhere", "val_count": None, "pinned": False,
                                 "pins": {"street.zip": "b" * 64}}}}
    settings = workflow_settings(street, "paper", given)
    assert (settings["sources"], settings["val_count"]) == ("elsewhere", 2)
    assert prepare_args(street, settings)[-3:] == ["--unpinned", "--pin",
                                                   f"street.zip={'b' * 64}"]


def test_its_settings_are_refused_by_their_keys(street):
    from internseg.errors import InputError
    from internseg.preparation import prepare_args, unknown_data_settings, workflow_settings

    assert unknown_data_settings("paper", {"data": {"street": {}}}, {"street"}) is None
    assert unknown_data_settings("paper", {"data": {"streets": {}}}, {"street", "ade20k"}) == (
        "presets.paper.data.streets: not a registered dataset (ade20k, street)")
    settings = workflow_settings(street, "paper", {"data": {"street": {"pins": {"x.zip": "a"}}}})
    with pytest.raises(InputError, match=r"^pins: x.zip is not a file of street \(street.zip\)"):
        prepare_args(street, settings)
    settings = workflow_settings(street, "paper", {"data": {"street": {
        "download": True, "pinned": False}}})
    with pytest.raises(InputError, match="contradict each other"):
        prepare_args(street, settings)


def test_a_presets_data_settings_are_resolved_and_refused_by_their_config_keys(street):
    from internseg.errors import InputError
    from internseg.preparation import preset_data_settings

    registered = {"street": street}
    resolved = preset_data_settings("paper", {"data": {"street": {"val_count": 1}}}, registered)
    assert (resolved["street"]["val_count"], resolved["street"]["sources"]) == (
        1, "resources/paper")
    with pytest.raises(InputError, match=r"^presets.paper.data.streets: not a registered"):
        preset_data_settings("paper", {"data": {"streets": {}}}, registered)
    with pytest.raises(InputError, match=r"^presets.paper.data.street: pinned: false .* "
                                         r"contradict each other"):
        preset_data_settings("paper", {"data": {"street": {"download": True, "pinned": False}}},
                             registered)


def test_its_missing_zip_is_one_line_naming_where_its_entry_puts_it(street, monkeypatch,
                                                                      tmp_path):
    from internseg.data_sources import missing_data

    monkeypatch.chdir(tmp_path)
    line = missing_data("paper", {}, {"street"})
    assert line == ("config.yaml: street.zip not found in resources/paper/: place it there "
                    "(presets.paper.data.street.sources), or set "
                    "presets.paper.data.street.download: true to download it")
    (tmp_path / "resources/paper").mkdir(parents=True)
    (tmp_path / "resources/paper/street.zip").write_bytes(b"")
    assert missing_data("paper", {}, {"street"}) is None


def test_its_commands_come_from_the_registry(street):
    from internseg.cli import build_parser

    args = build_parser().parse_args(["prepare", "street", "--source", "s.zip",
                                      "--data-root", "d"])
    assert (args.dataset, args.train_count, args.val_count) == ("street", None, None)
    args = build_parser().parse_args(["download", "street", "--out", "s.zip"])
    assert args.dataset == "street"


@pytest.mark.parametrize("sources, convert, problem", [
    ((), None, "sources must be one zip holding the tree"),
    (("tree", "tree"), None, "sources must be one zip holding the tree"),
    (("images",), "mapping", "sources must be one zip holding the tree"),
    (("tree",), "mapping", "sources must be one zip holding the tree"),
    (("images", "raw_labels:train"), "mapping", "its raw_labels sources hold ['train'], not"),
])
def test_an_entry_whose_sources_cannot_make_its_tree_is_refused(sources, convert, problem):
    from internseg.datasets import Conversion, Dataset, Layout, Source

    def source(n, spec):
        holds, _, splits = spec.partition(":")
        if holds == "tree":
            return Source(f"{n}.zip", "http://example.invalid/")
        return Source(f"{n}.zip", "http://example.invalid/", holds=holds,
                      splits=tuple(splits.split(",")) if splits else ("train", "val"))

    with pytest.raises(ValueError, match=re.escape(problem)):
        Dataset(name="x", title="X", mmseg_type="CityscapesDataset", num_classes=2,
                label_ids=(0, 1), ignore_index=255, reduce_zero_label=False, tree="x",
                data_root="resources/x", layout=Layout("i", "l", ".png", ".png", "train", "val"),
                train_count=1, val_count=1, val_image=(8, 8),
                sources=tuple(source(n, spec) for n, spec in enumerate(sources)),
                convert=Conversion({0: 0}) if convert else None)


def test_the_plan_prices_its_validation_with_its_image_size(street):
    from internseg.plan import assumed_val_images

    assert assumed_val_images()["street"] == (64, 128)
    assert assumed_val_images()["ade20k"] == DATASETS["ade20k"].val_image


# ---------------------------------------------------------------- a dataset with a conversion


def png(array) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def aerial(monkeypatch):
    """Images and raw maps in zips of their own, raw values 10/20/30 (255 ignored) to train
    ids 0..2, suffixes of its own: what COCO-Stuff's entry says, for another dataset."""
    from internseg.datasets import Conversion, Dataset, Layout, Source, register_dataset

    monkeypatch.setattr("internseg.datasets.DATASETS", dict(DATASETS))
    return register_dataset(Dataset(
        name="aerial", title="Aerial", mmseg_type="CityscapesDataset", num_classes=3,
        label_ids=(0, 2), ignore_index=255, reduce_zero_label=False, tree="aerial",
        data_root="resources/aerial/aerial",
        layout=Layout("img", "ann", "_rgb.png", "_ids.png", "fit", "check"),
        train_count=3, val_count=2, val_image=(16, 16),
        sources=(Source("fit.zip", "http://example.invalid/fit.zip", holds="images",
                        splits=("fit",)),
                 Source("check.zip", "http://example.invalid/check.zip", holds="images",
                        splits=("check",)),
                 Source("maps.zip", "http://example.invalid/maps.zip", holds="raw_labels",
                        splits=("fit", "check"))),
        convert=Conversion({10: 0, 20: 1, 30: 2, 255: 255}, raw_suffix=".tif.png")))


def write_aerial(folder, raw_values=(10, 20, 30, 255)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(folder / "maps.zip", "w") as maps:
        for split, count in (("fit", 3), ("check", 2)):
            with zipfile.ZipFile(folder / f"{split}.zip", "w") as images:
                for n in range(count):
                    raw = rng.choice(raw_values, size=(16, 16)).astype(np.uint8)
                    images.writestr(f"{split}/t{n}_rgb.png",
                                    png(np.stack([raw] * 3, -1)))
                    maps.writestr(f"{split}/t{n}.tif.png", png(raw))
    return folder


def test_a_dataset_with_a_conversion_is_one_entry_through_the_shared_lifecycle(aerial,
                                                                                tmp_path):
    from PIL import Image

    from internseg.errors import InputError
    from internseg.preparation import prepare_dataset

    sources = write_aerial(tmp_path / "src")
    result = prepare_dataset(aerial, sources, tmp_path / "data", workers=1, progress=False)
    assert result.action == "extracted"
    tree = tmp_path / "data/aerial"
    with zipfile.ZipFile(sources / "maps.zip") as zf:
        raw = np.asarray(Image.open(zf.open("fit/t1.tif.png")))
    converted = np.asarray(Image.open(tree / "ann/fit/t1_ids.png"))
    expected = np.select([raw == 10, raw == 20, raw == 30], [0, 1, 2], 255)
    assert (converted == expected).all()
    assert sorted(p.name for p in (tree / "img/check").iterdir()) == ["t0_rgb.png",
                                                                     "t1_rgb.png"]
    manifest = result.manifest
    assert (manifest["train_count"], manifest["val_count"]) == (3, 2)
    assert manifest["conversion"]["images"] == 5
    # no digest is published: the maps zip (each file) is held to its first preparation's
    assert sorted(p.name for p in (tmp_path / "data").glob("*.sha256")) == [
        "check.zip.sha256", "fit.zip.sha256", "maps.zip.sha256"]
    again = prepare_dataset(aerial, sources, tmp_path / "data", workers=1, progress=False)
    assert again.action == "up-to-date"
    # a raw value outside its mapping is refused, naming the map
    write_aerial(tmp_path / "bad", raw_values=(10, 40))
    with pytest.raises(InputError, match=r"raw values 40 are not in the dataset's mapping"):
        prepare_dataset(aerial, tmp_path / "bad", tmp_path / "data2", workers=1,
                        progress=False)


def test_the_data_digest_a_run_is_tied_to_is_its_content_not_its_manifest(aerial, tmp_path):
    """A run's identity takes the prepared data's digest: the same files prepared again
    elsewhere (other paths, other conversion timings) keep it; other training pairs or files
    change it."""
    import shutil

    from internseg.engine.identity import dataset_digest
    from internseg.preparation import data_sha256, prepare_dataset

    sources = write_aerial(tmp_path / "src")
    first = prepare_dataset(aerial, sources, tmp_path / "one", workers=1, progress=False)
    shutil.copytree(sources, tmp_path / "moved")
    second = prepare_dataset(aerial, tmp_path / "moved", tmp_path / "two", workers=2,
                             progress=False)
    assert first.manifest != second.manifest  # paths and timings differ
    assert data_sha256(first.manifest) == data_sha256(second.manifest)
    assert dataset_digest(tmp_path / "two/aerial.manifest.json") == data_sha256(first.manifest)
    fewer = dict(first.manifest, train_stems_sha256="0" * 64)
    assert data_sha256(fewer) != data_sha256(first.manifest)
    other = json.loads(json.dumps(first.manifest))
    other["sources"]["maps.zip"]["digest"] = "1" * 64
    assert data_sha256(other) != data_sha256(first.manifest)


@pytest.mark.parametrize("edit, problem", [
    (dict(sources=["maps.zip"]), "sources is not a mapping of file names to their digests"),
    (dict(bytes=3), "bytes is not a mapping of splits to byte counts"),
    (dict(source_kind="zip"), "source_kind 'zip' is neither 'files' nor 'folder'"),
])
def test_a_manifest_edited_by_hand_is_one_line_for_a_run_and_prepared_again(
        aerial, tmp_path, edit, problem):
    from internseg.engine.identity import dataset_digest
    from internseg.errors import InputError
    from internseg.preparation import prepare_dataset

    sources = write_aerial(tmp_path / "src")
    manifest = tmp_path / "data/aerial.manifest.json"
    prepare_dataset(aerial, sources, tmp_path / "data", workers=1, progress=False)
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | edit))
    with pytest.raises(InputError) as err:
        dataset_digest(manifest)
    assert str(err.value) == (f"{manifest}: {problem}; prepare the dataset again "
                              "(internseg prepare) to write it anew")
    # the preparation does not trust it: the tree, built from these files, is validated again
    again = prepare_dataset(aerial, sources, tmp_path / "data", workers=1, progress=False)
    assert again.action == "validated-in-place"
    dataset_digest(manifest)


# ---------------------------------------------------------------- a third dataset, end to end

THIRD = '''

# A third dataset, in one entry: its own layout and suffixes (CityscapesDataset's)
register_dataset(Dataset(
    name="street_tiny", title="Street scenes (synthetic)", mmseg_type="CityscapesDataset",
    num_classes=19, label_ids=(0, 18), ignore_index=255, reduce_zero_label=False,
    tree="street_tiny", data_root="resources/street_tiny/street_tiny",
    layout=Layout("leftImg8bit", "gtFine", "_leftImg8bit.png", "_gtFine_labelTrainIds.png",
                  "train", "val"),
    train_count=32, val_count=4, val_image=(96, 128),
    sources=(Source("street_tiny.zip", "http://example.invalid/street_tiny.zip"),)))
'''


def write_street_zip(path, train: int, val: int) -> None:
    """Synthetic pairs in the third dataset's layout: the label is a function of the colour,
    with an ignored band, so that the model has something to learn."""
    rng = np.random.default_rng(0)

    with zipfile.ZipFile(path, "w") as zf:
        for split, count in (("train", train), ("val", val)):
            for n in range(count):
                label = rng.integers(0, 19, size=(6, 8)).repeat(16, 0).repeat(16, 1)
                label[:4] = 255
                image = np.stack([label * 13 % 256, label * 7 % 256, label * 3 % 256], -1)
                stem = f"{split}/city_{n:06d}"
                zf.writestr(f"street_tiny/leftImg8bit/{stem}_leftImg8bit.png",
                            png(image.astype(np.uint8)))
                zf.writestr(f"street_tiny/gtFine/{stem}_gtFine_labelTrainIds.png",
                            png(label.astype(np.uint8)))


def test_a_third_dataset_is_one_entry_through_the_workflow(tmp_path):
    """docs/datasets.md: a dataset registered in one entry, in a copy of the repository,
    with no other file changed, runs from its zip through preparation, the few-shot split,
    training and evaluation to the table."""
    import csv

    import yaml
    from test_workflow import snakemake, workflow_copy

    wf = workflow_copy(tmp_path, with_package=True)
    with open(wf / "core/internseg/datasets.py", "a") as f:
        f.write(THIRD)
    # where its entry puts the zip (preparation.workflow_settings), and what to run on it
    (wf / "resources/demo").mkdir(parents=True)
    write_street_zip(wf / "resources/demo/street_tiny.zip", train=32, val=4)
    (wf / "street.yaml").write_text(yaml.safe_dump(
        {"run": ["fewshot_1of16"], "presets": {"demo": {"datasets": ["street_tiny"]}}}))
    result = snakemake(wf, "--cores", "2", "all", "--configfile", "street.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout + result.stderr
    assert "rule prepare_street_tiny:" in out
    manifest = json.loads((wf / "resources/demo/street_tiny/manifest.json").read_text())
    assert (manifest["valid"], manifest["dataset"]) == (True, "Street scenes (synthetic)")
    assert (manifest["train_count"], manifest["val_count"]) == (32, 4)
    tree = wf / "resources/demo/street_tiny/street_tiny"
    assert len(list((tree / "gtFine/val").glob("*_gtFine_labelTrainIds.png"))) == 4
    with open(wf / "results/demo/table.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    row = rows["street_tiny/intern_vit_tiny_demo/fewshot_1of16"]
    assert 0 < float(row["our_mIoU"]) <= 100
