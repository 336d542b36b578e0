"""The registry: every experiment (a config file), every trunk and dataset (registered
variants) checked against the recorded facts of the original; runs and how a config moves to
another trunk or dataset."""

import re

import pytest
import torch
import yaml

from conftest import FACTS
from internseg.config import load_config
from internseg.errors import InputError
from internseg.records import hub_pins, records
from internseg.registry import experiments, load_experiment
from internseg.trunks import TRUNKS, Trunk, register_trunk

FACTS_DATA = yaml.safe_load(FACTS.read_text())
PAPER = experiments("paper")
REAL_TRUNKS = [t for t in TRUNKS.values() if not t.synthetic]


def test_every_experiment_of_the_facts_is_registered():
    recorded = set(FACTS_DATA["experiments"]) - {"common"}
    assert recorded <= set(PAPER)


def test_the_adapter_row_is_registered_as_recorded():
    exp = PAPER["adapter_tuning"]
    assert (exp.head, exp.trunk_mode, exp.fraction) == ("UPerHead", "frozen", 1)
    assert exp.setting == "adapter tuning"
    assert exp.trunk.file == "intern_vit_6b_224px.pth" and exp.dataset.name == "ade20k"


@pytest.mark.parametrize("name", sorted(set(FACTS_DATA["experiments"]) - {"common"}))
def test_experiment_matches_the_facts(name):
    exp = PAPER[name]
    ref = FACTS_DATA["experiments"][name]
    assert exp.fraction == ref["fraction"]
    assert exp.head == {"linear": "LinearHead", "upernet": "UPerHead"}[ref["head"]]
    assert exp.trunk_mode == ref["trunk"]
    assert exp.trunk.name == "intern_vit_6b_224px" and exp.dataset.name == "ade20k"


@pytest.mark.parametrize("trunk", REAL_TRUNKS, ids=lambda t: t.name)
def test_real_trunk_matches_the_facts(trunk):
    recorded = {t["file"]: t for t in FACTS_DATA["trunks"].values()}[trunk.file]
    # the file's blocks as recorded; a file with more than the fork's ablations use (V1-0's
    # 48) is built 45 deep, as there
    assert trunk.pretrain_size == recorded["pretrain_size"]
    assert (trunk.file_depth or trunk.depth) == recorded["depth"]
    if trunk.pretrain_size == 448:
        assert (trunk.depth, trunk.taps) == (45, (11, 22, 33, 44))
    # the whole variant as its own facts record it: width, heads, patch and block
    assert {key: getattr(trunk, key) for key in ("embed_dim", "num_heads", "patch_size")} | (
        trunk.block) == {key: recorded[key] for key in ("embed_dim", "num_heads", "patch_size",
                                                        *trunk.block)}
    pin = FACTS_DATA["hub"]["files"][trunk.file]
    assert (trunk.sha256, trunk.size) == (pin["sha256"], pin["size"])


@pytest.mark.parametrize("trunk", [t for t in TRUNKS.values() if t.synthetic],
                         ids=lambda t: t.name)
def test_synthetic_trunk_is_written_in_the_released_layout_and_loads(trunk, tmp_path):
    from internseg.demo import write_tiny_checkpoint
    from internseg.models import InternViT
    from internseg.models.pretrained import load_pretrained_backbone

    path = write_tiny_checkpoint(tmp_path / trunk.file, trunk=trunk.name)
    held = {int(k.split(".")[1]) for k in torch.load(path, weights_only=True) if k.startswith("blocks.")}
    assert len(held) == (trunk.file_depth or trunk.depth)
    model = InternViT(trunk=trunk.name, img_size=2 * trunk.patch_size * 4,
                        trunk_dtype="float32", out_indices=trunk.taps)
    assert (model.embed_dim, model.depth) == (trunk.embed_dim, trunk.depth)
    assert load_pretrained_backbone(model, path, trunk.pretrain_size) == ([], [])


def test_every_trunk_of_the_facts_is_registered():
    assert {t["file"] for t in FACTS_DATA["trunks"].values()} == {t.file for t in REAL_TRUNKS}


def test_a_file_with_more_blocks_loads_only_when_the_trunk_says_so(tmp_path):
    """V1-0's case on the tiny second demo trunk: its file holds 4 blocks, the trunk runs 3."""
    from internseg.demo import write_tiny_checkpoint
    from internseg.models import InternViT
    from internseg.models.pretrained import load_pretrained_backbone
    from internseg.safe_load import CheckpointError

    trunk = TRUNKS["intern_vit_tiny_demo_b"]
    assert trunk.file_depth == trunk.depth + 1
    path = write_tiny_checkpoint(tmp_path / trunk.file, trunk=trunk.name)
    undeclared = trunk.architecture | dict(pretrained_depth=None)
    model = InternViT(img_size=56, trunk_dtype="float32", out_indices=(2,), **undeclared)
    with pytest.raises(CheckpointError, match=r"unexpected \['blocks.3"):
        load_pretrained_backbone(model, path, trunk.pretrain_size)


def test_a_backbone_builds_its_trunk_by_name_and_refuses_a_contradiction():
    from internseg.models import InternViT

    with torch.device("meta"):
        model = InternViT(trunk="intern_vit_6b_448px_v1_0", out_indices=(44,))
        assert (model.depth, model.embed_dim, model.pretrained_depth) == (45, 3200, 48)
        # the adapter's case: the 14-patch file run at patch 16
        assert InternViT(trunk="intern_vit_6b_224px", patch_size=16, img_size=512,
                           out_indices=(47,)).patch_embed.proj.kernel_size == (16, 16)
        with pytest.raises(ValueError, match="has depth=45, the config says 48"):
            InternViT(trunk="intern_vit_6b_448px_v2_5", depth=48, out_indices=(44,))
    with pytest.raises(InputError, match="unknown trunk 'intern_vit_7b'"):
        InternViT(trunk="intern_vit_7b")


def test_hub_pins_cover_every_real_trunk_and_released_checkpoint():
    pins = hub_pins()
    assert {t.file for t in REAL_TRUNKS} <= set(pins)
    released = {r.released_checkpoint.file for r in records().values() if r.released_checkpoint}
    assert len(released) == 8 and released <= set(pins)
    assert all(len(p.sha256) == 64 for p in pins.values())


def test_a_trunk_is_registered_once_and_its_taps_fit_its_depth():
    with pytest.raises(ValueError, match="twice"):
        register_trunk(TRUNKS["intern_vit_6b_224px"])
    with pytest.raises(ValueError, match="taps"):
        Trunk(name="x", file="x.pth", embed_dim=8, depth=2, num_heads=2, pretrain_size=28,
              taps=(0, 2))


def test_an_unknown_trunk_or_dataset_names_the_registered_ones():
    with pytest.raises(InputError, match="intern_vit_6b_224px"):
        load_config("paper/fewshot_1of16", trunk="intern_vit_7b")
    with pytest.raises(InputError, match="ade20k, coco_stuff164k"):
        load_config("paper/fewshot_1of16", dataset="cityscapes")


def test_a_config_moved_to_a_trunk_of_another_width_follows_it_everywhere():
    cfg = load_config("paper/head_tuning", trunk="intern_vit_tiny_demo")
    assert cfg.model.backbone.trunk == "intern_vit_tiny_demo"
    assert cfg.model.backbone.out_indices == [0, 1, 2, 3]
    assert cfg.model.neck.embed_dim == 96
    assert cfg.model.decode_head.in_channels == [96] * 4
    assert cfg.model.auxiliary_head.in_channels == 96
    with pytest.raises(InputError, match=r"blocks \[4\] outside trunk intern_vit_tiny_demo"):
        load_config("paper/head_tuning", {"model.backbone.out_indices": [0, 1, 2, 4]},
                    trunk="intern_vit_tiny_demo")


# The fork's 448px ablation (facts: ablation_448): taps [11, 22, 33, 44] over 45 blocks, and
# linear probing on block 44, the same index as on the 224px trunk.
@pytest.mark.parametrize("experiment,blocks", [
    ("head_tuning", FACTS_DATA["ablation_448"]["head_tuning"]["out_indices"]),
    ("full_tuning", FACTS_DATA["ablation_448"]["full_tuning"]["out_indices"]),
    ("linear_probing", FACTS_DATA["ablation_448"]["linear_probing"]["out_indices"]),
    ("fewshot_1of16", [44]),  # not in the record: the last block stays the last
])
def test_a_config_moved_to_another_trunk_reads_the_blocks_of_the_same_role(experiment, blocks):
    from internseg.config import backbone_architecture

    cfg = load_config(f"paper/{experiment}", trunk="intern_vit_6b_448px_v2_5")
    assert cfg.model.backbone.out_indices == blocks
    arch = backbone_architecture(cfg.model.backbone)
    assert arch["pretrain_size"] == 448 and arch["depth"] == 45


def test_the_adapter_moved_to_a_448px_trunk_spans_its_45_blocks():
    ref = FACTS_DATA["adapter_tuning"]["adapter"]
    assert "interaction_indexes [[0,11],[12,23],[24,35],[36,47]]" in ref
    cfg = load_config("paper/adapter_tuning", trunk="intern_vit_6b_448px_v1_5")
    assert cfg.model.backbone.interaction_indexes == [[0, 11], [12, 22], [23, 33], [34, 44]]
    given = load_config("paper/adapter_tuning", {
        "model.backbone.interaction_indexes": [[0, 10], [11, 21], [22, 32], [33, 44]]},
        trunk="intern_vit_6b_448px_v1_5")
    assert given.model.backbone.interaction_indexes[0] == [0, 10]  # given options win
    with pytest.raises(InputError, match="interaction ranges"):
        load_config("paper/adapter_tuning", trunk="intern_vit_tiny_demo_b")


def test_a_block_without_counterpart_is_refused():
    big, tiny = TRUNKS["intern_vit_6b_224px"], TRUNKS["intern_vit_tiny_demo"]
    assert tiny.corresponding_block(23, big) == 1 and tiny.corresponding_block(47, big) == 3
    assert tiny.corresponding_block(2, big) == 2  # neither tap nor last: the same index
    with pytest.raises(ValueError, match="block 44 of intern_vit_6b_224px has no counterpart"):
        tiny.corresponding_block(44, big)


def test_moves_are_checked_before_any_job():
    from internseg.registry import check_moves, experiments, plan_runs

    demo = experiments("demo")
    runs = plan_runs(["adapter_tuning", "head_tuning"], demo,
                     ["intern_vit_tiny_demo", "intern_vit_tiny_demo_b"])
    with pytest.raises(InputError, match="adapter_tuning.py: --trunk intern_vit_tiny_demo_b"):
        check_moves("demo", runs, demo)
    check_moves("demo", plan_runs(["head_tuning"], demo, ["intern_vit_tiny_demo_b"],
                                  ["ade20k", "coco_stuff164k"]), demo)


def test_run_ids_round_trip_and_plan_every_trunk_dataset_and_seed():
    from internseg.registry import Run, parse_run_id, plan_runs

    for run in (Run("head_tuning", "intern_vit_6b_224px", "ade20k"),
                Run("fewshot_1of8", "t", "d", 3)):
        assert parse_run_id(run.id) == run
    assert Run("fewshot_1of8", "t", "d", 3).id == "d/t/fewshot_1of8/seed3"
    for bad in ("head_tuning", "a/b", "a/b/c/d", "a/b/c/seedx", "/b/c"):
        with pytest.raises(InputError, match="expected <dataset>/<trunk>/<experiment>"):
            parse_run_id(bad)
    default = plan_runs(["head_tuning"], PAPER)
    assert list(default) == ["ade20k/intern_vit_6b_224px/head_tuning"]  # the config's own
    many = plan_runs(["head_tuning", "linear_probing"], PAPER,
                     ["intern_vit_6b_224px", "intern_vit_6b_448px_v2_5"],
                     ["ade20k", "coco_stuff164k"], [0, 1])
    assert len(many) == 16
    assert "coco_stuff164k/intern_vit_6b_448px_v2_5/linear_probing/seed1" in many
    with pytest.raises(InputError, match="registered: .*head_tuning"):
        plan_runs(["head_tunning"], PAPER)
    with pytest.raises(InputError, match="unknown trunk 'v9'"):
        plan_runs(["head_tuning"], PAPER, ["v9"])
    with pytest.raises(InputError, match="unknown dataset 'voc'"):
        plan_runs(["head_tuning"], PAPER, None, ["voc"])


def write_config(tmp_path, base: str, body: str, name: str = "custom"):
    path = tmp_path / "paper" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'_base_ = ["{base}"]\n{body}')
    return path


@pytest.mark.parametrize("body,name,named", [
    ("train_fraction = 'half'", "custom", "train_fraction must be an integer"),
    ("train_fraction = 8", "fewshot_1of16", "the name says 1/16 of the training images, "
                                            "train_fraction says 1/8"),
    ("model = dict(backbone=dict(trunk='intern_vit_7b'))", "custom", "unknown trunk"),
    ("train_dataloader = dict(dataset=dict(type='CityscapesDataset'))", "custom",
     "not a registered dataset"),
])
def test_a_bad_experiment_is_named_with_its_file(tmp_path, body, name, named):
    from internseg.config import CONFIG_ROOT

    path = write_config(tmp_path, str(CONFIG_ROOT / "paper" / "fewshot_1of16.py"), body, name)
    with pytest.raises(InputError, match=re.escape(named)) as err:
        load_experiment("paper", path)
    assert str(path) in str(err.value)


def test_a_new_experiment_inherits_its_parts_but_no_published_number(tmp_path):
    """A child of head tuning is head tuning on a quarter of the images: it inherits every
    hyper-parameter, and no paper number, log or checkpoint (those are head tuning's record,
    keyed by its name)."""
    from internseg.config import CONFIG_ROOT
    from internseg.records import record_of

    path = write_config(tmp_path, str(CONFIG_ROOT / "paper" / "head_tuning.py"),
                        "train_fraction = 4\n", "head_tuning_1of4")
    exp = load_experiment("paper", path)
    assert (exp.name, exp.fraction, exp.setting) == ("head_tuning_1of4", 4, "head tuning")
    assert exp.head == "UPerHead" and exp.trunk_mode == "frozen"
    assert record_of(exp.trunk.name, exp.name, exp.dataset.name) is None
    assert record_of(exp.trunk.name, "head_tuning", exp.dataset.name).miou == 54.9
