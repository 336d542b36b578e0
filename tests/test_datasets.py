"""A dataset is one registered entry: what the code elsewhere reads of it agrees with it."""

from __future__ import annotations

import inspect

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
