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


@dataclass(frozen=True)
class Dataset:
    """One dataset as the runs see it.

    mmseg_type: mmseg's dataset class (its class names and palette are used as they are).
    tree: the folder, under the prepared data root, that the dataloaders' ``data_root`` is.
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
    from .errors import InputError

    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def dataset_of_type(mmseg_type: str) -> Dataset:
    """The registered dataset a config's dataloader class is."""
    from .errors import InputError

    found = [d for d in DATASETS.values() if d.mmseg_type == mmseg_type]
    if not found:
        raise InputError(f"dataset class {mmseg_type!r} is not a registered dataset's "
                         f"({', '.join(d.mmseg_type for d in DATASETS.values())})")
    return found[0]


# The InternVL 1.0 rows and Table 15's first half: SceneParse150, labels 1..150 (0 = other).
register_dataset(Dataset(
    name="ade20k", title="ADE20K", mmseg_type="ADE20KDataset", num_classes=150,
    reduce_zero_label=True, tree="ADEChallengeData2016",
    train=("images/training", "annotations/training"),
    val=("images/validation", "annotations/validation"), train_count=20210, val_count=2000))

# Table 15's second half, as the fork ran it (COCOStuffDataset, 171 classes, train ids).
register_dataset(Dataset(
    name="coco_stuff164k", title="COCO-Stuff-164K", mmseg_type="COCOStuffDataset",
    num_classes=171, reduce_zero_label=False, tree="coco_stuff164k",
    train=("images/train2017", "annotations/train2017"),
    val=("images/val2017", "annotations/val2017"), train_count=118287, val_count=5000))
