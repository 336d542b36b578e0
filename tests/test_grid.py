"""The Table 15 grid as the fork ran it: each (trunk, regime, dataset) cell resolves to the
settings of the fork's ablation config, checked against the recorded facts (ablation_448,
experiments, coco_stuff164k), not against our own modules."""

import re

import pytest
import yaml

from conftest import FACTS
from internseg.config import backbone_architecture, dataset_of
from internseg.registry import Run, experiments, resolve_run, table15_runs
from internseg.trunks import TRUNKS

FACTS_DATA = yaml.safe_load(FACTS.read_text())
ABLATION = FACTS_DATA["ablation_448"]
COCO = FACTS_DATA["coco_stuff164k"]
TRUNK_OF_ROW = {row: next(t.name for t in TRUNKS.values() if t.file == facts["file"])
                for row, facts in FACTS_DATA["trunks"].items()}
REGIMES = ("linear_probing", "head_tuning", "full_tuning")
CELLS = [(row, regime, dataset) for row in FACTS_DATA["table15"]["rows"]
         for regime in REGIMES for dataset in ("ade20k", "coco_stuff164k")]


def expected(row: str, regime: str, dataset: str) -> dict:
    """The fork's settings for one cell, from the facts: the 224px trunk's are the InternVL
    1.0 configs (`experiments`), the 448px trunks' the ablation configs (`ablation_448`)."""
    if row == "224px":
        exp, common = FACTS_DATA["experiments"][regime], FACTS_DATA["experiments"]["common"]
        out = dict(depth=FACTS_DATA["backbone"]["depth"],
                   pretrain_size=FACTS_DATA["backbone"]["pretrain_size"],
                   out_indices=exp["out_indices"], drop_path=exp["drop_path"],
                   weight_decay=exp["weight_decay"], layer_decay=exp["layer_decay"],
                   warmup=exp["warmup"], iterations=exp["iters"], crop=common["crop"],
                   aux_in_index=exp.get("aux_in_index"))
    else:
        settings, backbone, common = ABLATION[regime], ABLATION["backbone"], ABLATION["common"]
        out = dict(depth=backbone["depth"], pretrain_size=backbone["pretrain_size"],
                   out_indices=settings["out_indices"], drop_path=settings["drop_path"],
                   weight_decay=settings["weight_decay"],
                   layer_decay=settings["layer_decay_rate"],
                   warmup=int(re.search(r"(\d+) iterations", common["warmup"])[1]),
                   iterations=common["iterations"], crop=backbone["img_size"],
                   aux_in_index=settings.get("aux_in_index"),
                   layer_decay_layers=settings.get("num_layers", backbone["depth"]))
        assert common["lr"] == FACTS_DATA["optimizer"]["lr"]
    slide = re.search(r"slide, crop (\d+), stride (\d+)", ABLATION["common"]["test"])
    out |= dict(slide=(int(slide[1]), int(slide[2])), lr=FACTS_DATA["optimizer"]["lr"])
    if dataset == "coco_stuff164k":
        out["num_classes"] = int(re.search(r"num_classes (\d+)", COCO["fork_pipeline"])[1])
    else:
        out["num_classes"] = int(re.search(r"(\d+) classes", FACTS_DATA["paper"]["dataset"])[1])
    return out


@pytest.mark.parametrize("row,regime,dataset", CELLS, ids=lambda v: str(v))
def test_each_cell_resolves_to_the_forks_config(row, regime, dataset):
    want = expected(row, regime, dataset)
    cfg = resolve_run("paper", Run(regime, TRUNK_OF_ROW[row], dataset), import_modules=False)
    backbone, optim = cfg.model.backbone, cfg.optim_wrapper
    arch = backbone_architecture(backbone)
    assert (arch["depth"], arch["pretrain_size"]) == (want["depth"], want["pretrain_size"])
    # the blocks the head reads: UperNet's taps, or the linear probe's block (44 everywhere)
    assert backbone.out_indices == want["out_indices"]
    # layer-wise decay runs over the trunk's blocks (45 on the 448px trunks)
    assert want.get("layer_decay_layers", arch["depth"]) == arch["depth"]
    assert backbone.drop_path_rate == want["drop_path"]
    assert optim.optimizer.weight_decay == want["weight_decay"]
    assert optim.paramwise_cfg.layer_decay_rate == want["layer_decay"]
    assert optim.optimizer.lr == want["lr"]
    warmup, poly = cfg.param_scheduler
    assert (warmup.end, poly.end) == (want["warmup"] + 1, want["iterations"] + 1)
    assert cfg.train_cfg.max_iters == want["iterations"]
    assert backbone.img_size == want["crop"] and cfg.model.data_preprocessor.size == (
        want["crop"], want["crop"])
    assert (cfg.model.test_cfg.crop_size, cfg.model.test_cfg.stride) == (
        (want["slide"][0],) * 2, (want["slide"][1],) * 2)
    # SETR_Resize: short side to the crop, long side uncapped, then a multiple of 14
    test = [s.type for s in cfg.test_dataloader.dataset.pipeline]
    assert "ShortSideResize" in test and "ResizeToMultiple" in test
    assert cfg.model.decode_head.num_classes == want["num_classes"]
    if "auxiliary_head" in cfg.model:
        assert cfg.model.auxiliary_head.num_classes == want["num_classes"]
        assert cfg.model.auxiliary_head.in_index == want["aux_in_index"]
    assert dataset_of(cfg).name == dataset
    assert backbone.freeze_trunk is (regime != "full_tuning")


def test_coco_stuff_runs_on_the_forks_dataset_and_pipeline():
    cfg = resolve_run("paper", Run("head_tuning", "intern_vit_6b_448px_v2_5", "coco_stuff164k"),
                      import_modules=False)
    train, val = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert train.type == val.type == "COCOStuffDataset"
    assert "reduce_zero_label false" in COCO["dataset"] and train.reduce_zero_label is False
    # the train split is train2017 (mmseg 1.x's own base config trains on val2017: a pitfall)
    assert "annotations/{train2017,val2017}" in COCO["layout"]["prepared"]
    assert train.data_prefix == dict(img_path="images/train2017",
                                     seg_map_path="annotations/train2017")
    assert val.data_prefix == dict(img_path="images/val2017", seg_map_path="annotations/val2017")
    steps = {s.type: s for s in cfg.train_dataloader.dataset.pipeline}
    assert "img_scale (2016, 504) ratio 0.5-2.0" in COCO["fork_pipeline"]
    assert steps["RandomResize"].scale == (2016, 504)
    assert steps["RandomResize"].ratio_range == (0.5, 2.0)
    assert "RandomCrop 504 cat_max_ratio 0.75" in COCO["fork_pipeline"]
    assert steps["RandomCrop"].crop_size == (504, 504) and steps["RandomCrop"].cat_max_ratio == 0.75


def test_a_config_moved_to_a_dataset_reads_that_datasets_folder():
    """Without --data-root, a moved config must not read one dataset's class from the other's
    folder: every dataloader takes the dataset's own root, and moving back restores it."""
    from internseg.config import load_config, move_to_dataset
    from internseg.datasets import DATASETS

    written = load_config("paper/head_tuning", import_modules=False)
    ade = written.train_dataloader.dataset.data_root
    assert ade == DATASETS["ade20k"].data_root
    assert ade.endswith("/ADEChallengeData2016")
    moved = load_config("paper/head_tuning", dataset="coco_stuff164k", import_modules=False)
    roots = {moved[f"{split}_dataloader"].dataset.data_root for split in ("train", "val", "test")}
    assert roots == {"resources/coco_stuff164k"} and "ade" not in roots.pop()
    back = move_to_dataset(moved, DATASETS["ade20k"])
    assert {back[f"{split}_dataloader"].dataset.data_root
            for split in ("train", "val", "test")} == {ade}


def test_the_grid_is_every_trunk_and_dataset_of_table15():
    grid = table15_runs(experiments("paper"))
    assert len(grid) == len(CELLS) == 30
    assert {(r.trunk, r.experiment, r.dataset) for r in grid.values()} == {
        (TRUNK_OF_ROW[row], regime, dataset) for row, regime, dataset in CELLS}


def test_inspect_shows_a_cells_resolved_settings(capsys):
    import json

    from internseg.cli import main

    assert main(["inspect", "paper/linear_probing", "--trunk", "intern_vit_6b_448px_v1_0",
                 "--dataset", "coco_stuff164k", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    resolved = info["resolved"]
    assert (resolved["out_indices"], resolved["depth"], resolved["num_classes"]) == ([44], 45, 171)
    assert (resolved["iterations"], resolved["lr"]) == (80000, 4e-5)
    assert resolved["trunk"] == "intern_vit_6b_448px_v1_0" and resolved["pretrain_size"] == 448
    assert (resolved["dataset_class"], resolved["data_root"]) == ("COCOStuffDataset",
                                                                  "resources/coco_stuff164k")
    # a linear probe: the head's BN and 1x1 conv to 171 classes on 3200 channels
    assert info["trainable_params"] == 2 * 3200 + 3200 * 171 + 171
