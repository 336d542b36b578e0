"""The datasets a run trains and evaluates on, one registered variant each.

A config's dataloaders name mmseg's dataset class (``ADE20KDataset``); a run on another
registered dataset is the same config moved to it (:func:`internseg.config.move_to_dataset`):
the dataset class, its folders and label handling, and the heads' class count change, nothing
else, as the fork's ADE20K and COCO-Stuff configs differ only in their dataset base and
``num_classes``. Each dataset is prepared into a tree and a manifest that the later steps
trust, as its entry says, by one lifecycle for every dataset (:mod:`internseg.preparation`):
its source files checked, extracted safely, their raw label maps converted where the entry
has a conversion (:mod:`internseg.conversion`), validated, a manifest written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .io import read_json, read_text


# What a source zip holds, and so where its members go: the tree itself (its one top folder
# is the tree), split folders of images (into the tree's image folder), or split folders of
# raw label maps (converted into the tree's label folder by the entry's conversion).
HOLDS = ("tree", "images", "raw_labels")


@dataclass(frozen=True)
class Source:
    """One file a dataset is prepared from: its name, where it is downloaded from, its
    published pins (None: none published; such a file is held to the digest it had when it
    first prepared), and what it holds (:data:`HOLDS`; ``splits``: the split folders at its
    top, for ``images`` and ``raw_labels``)."""

    name: str
    url: str
    size: int | None = None
    sha1: str | None = None
    sha256: str | None = None
    holds: str = "tree"
    splits: tuple[str, ...] = ()

    def __post_init__(self):
        if self.holds not in HOLDS:
            raise ValueError(f"source {self.name}: holds {self.holds!r}, not one of {HOLDS}")
        if (self.holds == "tree") == bool(self.splits):
            raise ValueError(f"source {self.name}: split folders are named for images and "
                             "raw_labels only, and must be")

    @property
    def algorithm(self) -> str:
        """The digest it is checked with: its published one's, else sha256."""
        return "sha1" if self.sha1 else "sha256"

    @property
    def published(self) -> bool:
        return bool(self.sha1 or self.sha256)


@dataclass(frozen=True)
class Conversion:
    """Raw label maps (single-channel PNGs, ``<split>/<stem><raw_suffix>`` in a ``raw_labels``
    source) to the tree's label maps by a value mapping; a raw value outside ``mapping`` is
    refused, not passed through."""

    mapping: dict[int, int]
    raw_suffix: str = ".png"


@dataclass(frozen=True)
class Layout:
    """Where a prepared tree keeps its pairs: ``<images>/<split>/<stem><image_suffix>`` beside
    ``<labels>/<split>/<stem><label_suffix>``, for each split folder (``train``, ``val``)."""

    images: str
    labels: str
    image_suffix: str
    label_suffix: str
    train: str
    val: str

    def split_folder(self, key: str) -> str:
        return self.train if key == "train" else self.val

    def splits(self) -> tuple[tuple[str, str], ...]:
        """(folder name, manifest key) of each split."""
        return ((self.train, "train"), (self.val, "val"))


@dataclass(frozen=True)
class Dataset:
    """One dataset: everything the code knows of it.

    mmseg_type: mmseg's dataset class (its class names and palette are used as they are).
    num_classes: the classes the heads predict.
    label_ids: the inclusive range of values a prepared label map may hold, and ignore_index a
      value outside it that is ignored too (255), or None.
    reduce_zero_label: label 0 is "other" and ignored (ADE20K), else labels are train ids.
    tree: the folder, under the prepared data root, that the dataloaders' ``data_root`` is.
    data_root: where a config written for it reads the tree when no ``--data-root`` is given
      (mmseg's ``data/`` layout under ``resources/``); a config moved here reads it too.
    layout: the prepared tree's folders and suffixes (:class:`Layout`); the suffixes are the
      ones ``mmseg_type`` reads by default, so a moved config names none (a test checks).
    train_count / val_count: the official split sizes (a preset may expect fewer: the demo).
    val_image: (height, width) assumed for a validation image, for the plan's pricing.
    sources: the files it is prepared from, with their pins, download URLs and what each
      holds: one zip holding the tree, or zips of split folders of images and raw maps.
    convert: how raw maps become the tree's label maps (:class:`Conversion`), or None: the
      label maps are extracted as they are.
    extras: files beside the pairs that the tree should hold (a warning when one is missing).
    """

    name: str
    title: str
    mmseg_type: str
    num_classes: int
    label_ids: tuple[int, int]
    ignore_index: int | None
    reduce_zero_label: bool
    tree: str
    data_root: str
    layout: Layout
    train_count: int
    val_count: int
    val_image: tuple[int, int]
    sources: tuple[Source, ...]
    convert: Conversion | None = None
    extras: tuple[str, ...] = ()

    def __post_init__(self):
        holds = {s.holds for s in self.sources}
        whole = holds == {"tree"} and len(self.sources) == 1 and self.convert is None
        split = holds == {"images", "raw_labels"} and self.convert is not None
        if not (whole or split):
            raise ValueError(f"dataset {self.name}: sources must be one zip holding the tree, "
                             "or zips of images and raw label maps with a conversion")
        if split:
            for kind in ("images", "raw_labels"):
                held = sorted(f for s in self.sources if s.holds == kind for f in s.splits)
                if held != sorted(self.layout.split_folder(k) for k in ("train", "val")):
                    raise ValueError(f"dataset {self.name}: its {kind} sources hold {held}, "
                                     f"not its split folders")

    def data_prefix(self, split: str) -> dict:
        folder = self.layout.split_folder(split)
        return dict(img_path=f"{self.layout.images}/{folder}",
                    seg_map_path=f"{self.layout.labels}/{folder}")

    def source(self, name: str) -> Source:
        return next(s for s in self.sources if s.name == name)

    def label_values_problem(self, pixels) -> str | None:
        """The label rule: a prepared map holds ``label_ids`` and ``ignore_index`` only."""
        import numpy as np

        counts = np.bincount(pixels.ravel(), minlength=256)
        allowed = np.zeros(counts.size, dtype=bool)
        allowed[self.label_ids[0]:self.label_ids[1] + 1] = True
        if self.ignore_index is not None:
            allowed[self.ignore_index] = True
        bad = np.flatnonzero((counts > 0) & ~allowed)
        if not bad.size:
            return None
        also = "" if self.ignore_index is None else f" and {self.ignore_index}"
        return (f"label value{'s' if bad.size > 1 else ''} {', '.join(map(str, bad))} outside "
                f"{self.label_ids[0]}..{self.label_ids[1]}{also} ({int(counts[bad].sum())} "
                "pixels)")


DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> Dataset:
    if dataset.name in DATASETS:
        raise ValueError(f"dataset {dataset.name!r} is registered twice")
    DATASETS[dataset.name] = dataset
    return dataset


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def dataset_of_type(mmseg_type: str) -> Dataset:
    """The registered dataset a config's dataloader class is."""
    found = [d for d in DATASETS.values() if d.mmseg_type == mmseg_type]
    if not found:
        raise InputError(f"dataset class {mmseg_type!r} is not a registered dataset's "
                         f"({', '.join(d.mmseg_type for d in DATASETS.values())})")
    return found[0]


# The InternVL 1.0 rows and Table 15's first half: SceneParse150, labels 1..150 (0 = other).
# The validation images are about 512 x 683 (mostly 4:3 landscape, short side around 512):
# an assumption for the plan, not a measurement.
register_dataset(Dataset(
    name="ade20k", title="ADE20K", mmseg_type="ADE20KDataset", num_classes=150,
    label_ids=(0, 150), ignore_index=None, reduce_zero_label=True,
    tree="ADEChallengeData2016", data_root="resources/ade/ADEChallengeData2016",
    layout=Layout("images", "annotations", ".jpg", ".png", "training", "validation"),
    train_count=20210, val_count=2000, val_image=(512, 683),
    # The MIT Scene Parsing benchmark's own address; unreachable at times, hence a mirror
    # (`--mirror`) and the zip placed by hand stay possible. No size is published.
    sources=(Source("ADEChallengeData2016.zip",
                    "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
                    sha1="219e1696abb36c8ba3a3afe7fb2f4b4606a897c7"),),
    extras=("objectInfo150.txt", "sceneCategories.txt")))

# Table 15's second half, as the fork ran it (COCOStuffDataset, 171 classes, train ids; raw
# maps converted with the recorded 182 -> 171 mapping). Validation images are about 480 x 640.
# Sizes and sha256s as tensorflow-datasets records them; the maps zip has none published.
_COCO = "http://images.cocodataset.org/zips/"
# COCO thing ids that were never annotated (raw value = labels.txt id - 1): the 182 raw
# classes minus these 11 are the 171 train ids, in order; 255 stays ignored.
COCO_UNUSED_RAW_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
register_dataset(Dataset(
    name="coco_stuff164k", title="COCO-Stuff-164K", mmseg_type="COCOStuffDataset",
    num_classes=171, label_ids=(0, 170), ignore_index=255, reduce_zero_label=False,
    tree="coco_stuff164k", data_root="resources/coco_stuff164k",
    layout=Layout("images", "annotations", ".jpg", "_labelTrainIds.png", "train2017",
                  "val2017"),
    train_count=118287, val_count=5000, val_image=(480, 640),
    sources=(
        Source("train2017.zip", _COCO + "train2017.zip", 19336861798,
               sha256="69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929",
               holds="images", splits=("train2017",)),
        Source("val2017.zip", _COCO + "val2017.zip", 815585330,
               sha256="4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
               holds="images", splits=("val2017",)),
        Source("stuffthingmaps_trainval2017.zip", "http://calvin.inf.ed.ac.uk/wp-content/"
               "uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip",
               holds="raw_labels", splits=("train2017", "val2017"))),
    convert=Conversion({
        **{raw: train for train, raw in
           enumerate(r for r in range(182) if r not in COCO_UNUSED_RAW_IDS)},
        255: 255})))


# ---------------------------------------------------------------- a prepared tree, as given

MANIFEST_NAMES = ("manifest.json", "{tree}.manifest.json")  # the workflow's, prepare's default


def check_data_root(cfg, loaders: tuple[str, ...], given: bool) -> None:
    """The folders the ``loaders`` read exist, before anything is built: a missing or
    unprepared data root is one line naming it and the folder it lacks, not an error from
    deep inside the Runner once the model is built (minutes for 6B)."""
    for name in loaders:
        dataset = cfg[name].dataset
        root = Path(dataset.data_root)
        what = "--data-root" if given else f"{name}.dataset.data_root (no --data-root given)"
        if not root.is_dir():
            raise InputError(f"{what} {root}: no such folder")
        missing = [p for p in dataset.data_prefix.values() if not (root / p).is_dir()]
        if missing:
            raise InputError(f"{what} {root}: no {' or '.join(missing)} folder: not a "
                             f"prepared {dataset.type} tree (internseg prepare)")


def manifest_beside(data_root) -> dict | None:
    """The valid manifest that ``internseg prepare`` wrote for the tree at ``data_root``, if it
    sits beside the tree (the workflow's ``manifest.json``, or prepare's default name)."""
    root = Path(data_root)
    for name in MANIFEST_NAMES:
        path = root.parent / name.format(tree=root.name)
        if path.is_file():
            manifest = read_json(path, "dataset manifest")
            if manifest.get("valid") is True and (
                    Path(str(manifest.get("root"))).resolve() == root.resolve()):
                return manifest | {"path": str(path)}
    return None


def check_split_images(split, dataset) -> None:
    """Every stem of a split file is a training image of the tree, before iteration 1 (mmseg
    would fail on the first batch that holds a missing one, hours in): checked against the
    tree's manifest when it sits beside the tree, else against the image folder."""
    root = Path(dataset.data_root)
    manifest = manifest_beside(root)
    if manifest is not None and isinstance(manifest.get("train_stems"), list):
        known, source = set(manifest["train_stems"]), f"its manifest {manifest['path']}"
    else:
        folder = root / dataset.data_prefix["img_path"]
        known, source = {p.stem for p in folder.iterdir()}, str(folder)
    lines = read_text(split, "split").splitlines()
    if not lines:
        raise InputError(f"--split {split}: empty; it names no training image")
    bad = [(n, line) for n, line in enumerate(lines, 1) if line.strip() not in known]
    if bad:
        shown = ", ".join(f"line {n} {line.strip()!r}" for n, line in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise InputError(f"--split {split}: {len(bad)} of {len(lines)} lines are not training "
                         f"images of {root} (per {source}): {shown}{more}")
