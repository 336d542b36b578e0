"""The datasets a run trains and evaluates on, one registered variant each.

A config's dataloaders name mmseg's dataset class (``ADE20KDataset``); a run on another
registered dataset is the same config moved to it (:func:`internseg.config.move_to_dataset`):
the dataset class, its folders and label handling, and the heads' class count change, nothing
else, as the fork's ADE20K and COCO-Stuff configs differ only in their dataset base and
``num_classes``. Each dataset is prepared by its own command into a tree and a manifest that
the later steps trust (:mod:`internseg.ade20k`, :mod:`internseg.coco_stuff`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .io import read_json, read_text


@dataclass(frozen=True)
class Dataset:
    """One dataset as the runs see it.

    mmseg_type: mmseg's dataset class (its class names and palette are used as they are).
    tree: the folder, under the prepared data root, that the dataloaders' ``data_root`` is.
    data_root: where a config written for it reads the tree when no ``--data-root`` is given
      (mmseg's ``data/`` layout under ``resources/``); a config moved here reads it too.
    train / val: the (images, annotations) folders of each split inside ``tree``.
    train_count / val_count: the official split sizes (a preset may expect fewer: the demo).
    reduce_zero_label: label 0 is "other" and ignored (ADE20K), else labels are train ids.
    """

    name: str
    title: str
    mmseg_type: str
    num_classes: int
    reduce_zero_label: bool
    tree: str
    data_root: str
    train: tuple[str, str]
    val: tuple[str, str]
    train_count: int
    val_count: int

    def data_prefix(self, split: str) -> dict:
        images, annotations = self.train if split == "train" else self.val
        return dict(img_path=images, seg_map_path=annotations)


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
register_dataset(Dataset(
    name="ade20k", title="ADE20K", mmseg_type="ADE20KDataset", num_classes=150,
    reduce_zero_label=True, tree="ADEChallengeData2016",
    data_root="resources/ade/ADEChallengeData2016",
    train=("images/training", "annotations/training"),
    val=("images/validation", "annotations/validation"), train_count=20210, val_count=2000))

# Table 15's second half, as the fork ran it (COCOStuffDataset, 171 classes, train ids).
register_dataset(Dataset(
    name="coco_stuff164k", title="COCO-Stuff-164K", mmseg_type="COCOStuffDataset",
    num_classes=171, reduce_zero_label=False, tree="coco_stuff164k",
    data_root="resources/coco_stuff164k",
    train=("images/train2017", "annotations/train2017"),
    val=("images/val2017", "annotations/val2017"), train_count=118287, val_count=5000))


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
                             f"prepared {dataset.type} tree (internseg prepare-*)")


def manifest_beside(data_root) -> dict | None:
    """The valid manifest that ``prepare-*`` wrote for the tree at ``data_root``, if it sits
    beside the tree (the workflow's ``manifest.json``, or prepare's default name)."""
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
