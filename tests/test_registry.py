"""The registry: every experiment (a config file with its row's metadata) and every trunk
(a registered variant) checked against the recorded facts of the original."""

import re

import pytest
import torch
import yaml

from conftest import FACTS
from internseg.config import load_config
from internseg.errors import InputError
from internseg.registry import experiments, hub_pins, load_experiment
from internseg.trunks import TRUNKS, Trunk, register_trunk

FACTS_DATA = yaml.safe_load(FACTS.read_text())
PAPER = experiments("paper")
REAL_TRUNKS = [t for t in TRUNKS.values() if not t.synthetic]


def test_every_experiment_of_the_facts_is_registered():
    recorded = set(FACTS_DATA["experiments"]) - {"common"}
    assert recorded <= set(PAPER)


def test_the_adapter_row_is_registered_as_recorded():
    exp, ref = PAPER["adapter_tuning"], FACTS_DATA["adapter_tuning"]
    assert exp.paper_miou == ref["miou"]
    assert (exp.head, exp.trunk_mode, exp.fraction) == ("UPerHead", "frozen", 1)
    assert exp.trunk.file == "intern_vit_6b_224px.pth"
    # no released checkpoint; the published log is the one the facts name
    assert exp.released_checkpoint is None
    assert exp.published_log == "upernet_intern_vit_adapter_6b_512_80k_ade20k_bs16_lr4e-5.log"


@pytest.mark.parametrize("name", sorted(set(FACTS_DATA["experiments"]) - {"common"}))
def test_experiment_metadata_matches_the_facts(name):
    exp = PAPER[name]
    ref = FACTS_DATA["experiments"][name]
    assert exp.paper_miou == ref["miou"]
    assert exp.fraction == ref["fraction"]
    assert exp.head == {"linear": "LinearHead", "upernet": "UPerHead"}[ref["head"]]
    assert exp.trunk_mode == ref["trunk"]
    assert exp.trunk.name == "intern_vit_6b_224px"
    # the published log and the released checkpoint share the original's file stem
    files = FACTS_DATA["hub"]["files"]
    pin = exp.released_checkpoint
    assert exp.published_log == pin.file.removesuffix(".pth") + ".log"
    assert pin.sha256 == files[pin.file]["sha256"]
    assert pin.size == files[pin.file].get("size")


@pytest.mark.parametrize("trunk", REAL_TRUNKS, ids=lambda t: t.name)
def test_real_trunk_matches_the_facts(trunk):
    recorded = {t["file"]: t for t in FACTS_DATA["trunks"].values()}[trunk.file]
    # the file's blocks as recorded; a file with more than the fork's ablations use (V1-0's
    # 48) is built 45 deep, as there
    assert trunk.pretrain_size == recorded["pretrain_size"]
    assert (trunk.file_depth or trunk.depth) == recorded["depth"]
    if trunk.pretrain_size == 448:
        assert (trunk.depth, trunk.taps) == (45, (11, 22, 33, 44))
    # all trunks of the model table: 3200 wide, 25 heads, patch 14
    assert (trunk.embed_dim, trunk.num_heads, trunk.patch_size) == (3200, 25, 14)
    pin = FACTS_DATA["hub"]["files"][trunk.file]
    assert (trunk.sha256, trunk.size) == (pin["sha256"], pin["size"])


@pytest.mark.parametrize("trunk", [t for t in TRUNKS.values() if t.synthetic],
                         ids=lambda t: t.name)
def test_synthetic_trunk_is_written_in_the_released_layout_and_loads(trunk, tmp_path):
    from internseg.demo import write_tiny_checkpoint
    from internseg.models import InternViT6B
    from internseg.models.pretrained import load_pretrained_backbone

    path = write_tiny_checkpoint(tmp_path / trunk.file, trunk=trunk.name)
    held = {int(k.split(".")[1]) for k in torch.load(path, weights_only=True) if k.startswith("blocks.")}
    assert len(held) == (trunk.file_depth or trunk.depth)
    model = InternViT6B(img_size=2 * trunk.patch_size * 4, trunk_dtype="float32",
                        out_indices=trunk.taps, **trunk.architecture)
    assert load_pretrained_backbone(model, path, trunk.pretrain_size) == ([], [])


def test_every_trunk_of_the_facts_is_registered():
    assert {t["file"] for t in FACTS_DATA["trunks"].values()} == {t.file for t in REAL_TRUNKS}


def test_a_file_with_more_blocks_loads_only_when_the_trunk_says_so(tmp_path):
    """V1-0's case on the tiny second demo trunk: its file holds 4 blocks, the trunk runs 3."""
    from internseg.demo import write_tiny_checkpoint
    from internseg.models import InternViT6B
    from internseg.models.pretrained import load_pretrained_backbone
    from internseg.safe_load import CheckpointError

    trunk = TRUNKS["intern_vit_tiny_demo_b"]
    assert trunk.file_depth == trunk.depth + 1
    path = write_tiny_checkpoint(tmp_path / trunk.file, trunk=trunk.name)
    undeclared = trunk.architecture | dict(pretrained_depth=None)
    model = InternViT6B(img_size=56, trunk_dtype="float32", out_indices=(2,), **undeclared)
    with pytest.raises(CheckpointError, match=r"unexpected \['blocks.3"):
        load_pretrained_backbone(model, path, trunk.pretrain_size)


def test_hub_pins_cover_every_real_trunk_and_released_checkpoint():
    pins = hub_pins()
    assert {t.file for t in REAL_TRUNKS} <= set(pins)
    assert {e.released_checkpoint.file for e in PAPER.values() if e.released_checkpoint} <= set(pins)
    assert all(len(p.sha256) == 64 for p in pins.values())


def test_a_trunk_is_registered_once_and_its_taps_fit_its_depth():
    with pytest.raises(ValueError, match="twice"):
        register_trunk(TRUNKS["intern_vit_6b_224px"])
    with pytest.raises(ValueError, match="taps"):
        Trunk(name="x", file="x.pth", embed_dim=8, depth=2, num_heads=2, pretrain_size=28,
              taps=(0, 2))


def test_an_unknown_trunk_names_the_registered_ones():
    with pytest.raises(InputError, match="intern_vit_6b_224px"):
        load_config("paper/fewshot_1of16", {"trunk": "intern_vit_7b"})


def test_the_trunk_sets_every_width_that_reads_it():
    cfg = load_config("paper/head_tuning", {"trunk": "intern_vit_tiny_demo",
                                            "model.backbone.out_indices": [0, 1, 2, 3]})
    assert cfg.model.backbone.embed_dim == cfg.model.neck.embed_dim == 96
    assert cfg.model.decode_head.in_channels == [96] * 4
    assert cfg.model.auxiliary_head.in_channels == 96
    assert cfg.optim_wrapper.paramwise_cfg.num_layers == 4
    with pytest.raises(InputError, match="fixed by the trunk"):
        load_config("paper/head_tuning", {"model.backbone.embed_dim": 64})
    with pytest.raises(InputError, match="outside trunk intern_vit_tiny_demo"):
        load_config("paper/head_tuning", {"trunk": "intern_vit_tiny_demo",
                                          "model.backbone.out_indices": [0, 1, 2, 4]})


# The fork's 448px ablation (facts: trunks): taps [11, 22, 33, 44] over 45 blocks.
@pytest.mark.parametrize("experiment,blocks", [
    ("head_tuning", [11, 22, 33, 44]), ("full_tuning", [11, 22, 33, 44]),
    ("fewshot_1of16", [44]),  # the last block stays the last
    ("linear_probing", [41]),  # [44] is no tap of the 224px trunk: 3 before the last, kept
])
def test_a_config_moved_to_another_trunk_reads_the_blocks_of_the_same_role(experiment, blocks):
    cfg = load_config(f"paper/{experiment}", {"trunk": "intern_vit_6b_448px_v2_5"})
    assert cfg.model.backbone.out_indices == blocks
    assert cfg.model.backbone.pretrain_size == 448 and cfg.model.backbone.depth == 45
    assert cfg.optim_wrapper.paramwise_cfg.num_layers == 45


def test_the_adapter_moved_to_a_448px_trunk_spans_its_45_blocks():
    ref = FACTS_DATA["adapter_tuning"]["adapter"]
    assert "interaction_indexes [[0,11],[12,23],[24,35],[36,47]]" in ref
    cfg = load_config("paper/adapter_tuning", {"trunk": "intern_vit_6b_448px_v1_5"})
    assert cfg.model.backbone.interaction_indexes == [[0, 11], [12, 22], [23, 33], [34, 44]]
    given = load_config("paper/adapter_tuning", {
        "trunk": "intern_vit_6b_448px_v1_5",
        "model.backbone.interaction_indexes": [[0, 10], [11, 21], [22, 32], [33, 44]]})
    assert given.model.backbone.interaction_indexes[0] == [0, 10]  # given options win
    with pytest.raises(InputError, match="interaction ranges"):
        load_config("paper/adapter_tuning", {"trunk": "intern_vit_tiny_demo_b"})


def test_a_block_without_counterpart_is_refused():
    big, tiny = TRUNKS["intern_vit_6b_224px"], TRUNKS["intern_vit_tiny_demo"]
    assert tiny.corresponding_block(23, big) == 1 and tiny.corresponding_block(46, big) == 2
    with pytest.raises(ValueError, match="block 5 of intern_vit_6b_224px has no counterpart"):
        tiny.corresponding_block(5, big)


def test_moves_to_another_trunk_are_checked_before_any_job():
    from internseg.registry import check_moves, experiments, on_own_trunk, plan_runs

    demo = experiments("demo")
    runs = plan_runs(["adapter_tuning", "head_tuning"], demo,
                     ["intern_vit_tiny_demo", "intern_vit_tiny_demo_b"])
    assert [on_own_trunk(r, demo) for r in runs.values()] == [True, False, True, False]
    with pytest.raises(InputError, match="adapter_tuning.py: trunk=intern_vit_tiny_demo_b"):
        check_moves("demo", runs, demo)
    check_moves("demo", plan_runs(["head_tuning"], demo, ["intern_vit_tiny_demo_b"]), demo)


def test_run_ids_round_trip_and_plan_every_trunk_and_seed():
    from internseg.registry import Run, parse_run_id, plan_runs

    for run in (Run("head_tuning", "intern_vit_6b_224px"), Run("fewshot_1of8", "t", 3)):
        assert parse_run_id(run.id) == run
    assert Run("fewshot_1of8", "t", 3).id == "t/fewshot_1of8/seed3"
    for bad in ("head_tuning", "a/b/c", "a/b/seedx", "/b"):
        with pytest.raises(InputError, match="expected <trunk>/<experiment>"):
            parse_run_id(bad)
    default = plan_runs(["head_tuning"], PAPER)
    assert list(default) == ["intern_vit_6b_224px/head_tuning"]  # the config's own trunk
    many = plan_runs(["head_tuning", "linear_probing"], PAPER,
                     ["intern_vit_6b_224px", "intern_vit_6b_448px_v2_5"], [0, 1])
    assert len(many) == 8 and "intern_vit_6b_448px_v2_5/linear_probing/seed1" in many
    with pytest.raises(InputError, match="registered: .*head_tuning"):
        plan_runs(["head_tunning"], PAPER)
    with pytest.raises(InputError, match="unknown trunk 'v9'"):
        plan_runs(["head_tuning"], PAPER, ["v9"])


def write_config(tmp_path, base: str, body: str):
    path = tmp_path / "paper" / "custom.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'_base_ = ["{base}"]\n{body}')
    return path


@pytest.mark.parametrize("body,named", [
    ("experiment = dict(fraction='half')", "experiment.fraction"),
    ("experiment = dict(paper_miou=130)", "experiment.paper_miou"),
    ("experiment = dict(colour='blue')", "unknown keys ['colour']"),
    ("experiment = dict(released_checkpoint=dict(file='a.pth', sha256='abc'))",
     "64 hex digits"),
])
def test_bad_metadata_is_named_with_its_file(tmp_path, body, named):
    from internseg.config import CONFIG_ROOT

    path = write_config(tmp_path, str(CONFIG_ROOT / "paper" / "fewshot_1of16.py"), body)
    with pytest.raises(InputError, match=re.escape(named)) as err:
        load_experiment("paper", path)
    assert str(path) in str(err.value)


def test_a_new_experiment_inherits_its_parts_and_is_read_from_its_file(tmp_path):
    from internseg.config import CONFIG_ROOT

    path = write_config(tmp_path, str(CONFIG_ROOT / "paper" / "head_tuning.py"),
                        "experiment = dict(setting='head tuning, 1/4', fraction=4, "
                        "paper_miou=None, released_checkpoint=None)\n")
    exp = load_experiment("paper", path)
    assert (exp.name, exp.fraction, exp.paper_miou, exp.released_checkpoint) == (
        "custom", 4, None, None)
    assert exp.head == "UPerHead" and exp.trunk_mode == "frozen"
