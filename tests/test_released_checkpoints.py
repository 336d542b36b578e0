"""Released segmentation checkpoints (full or head-only) load into our segmentors."""

import json

import pytest
import torch
from released_layout import facts, names, released_state

from internseg.cli import main
from internseg.config import load_config
from internseg.engine.evaluate import load_segmentor_weights
from internseg.models.pretrained import checkpoint_filter
from internseg.engine.segmentor import build_segmentor
from internseg.models.pretrained import CheckpointError


def build(experiment, weights):
    cfg = load_config(f"demo/{experiment}")
    cfg.model.backbone.pretrained = str(weights)
    return build_segmentor(cfg)


# experiment -> (head, whether its released file holds the trunk), from tests/facts
WITH_TRUNK = facts()["with_trunk"]
EXPERIMENTS = {**{f"fewshot_1of{n}": "linear" for n in (16, 8, 4, 2, 1)},
               "linear_probing": "linear", "head_tuning": "upernet", "full_tuning": "upernet"}


def released_file(experiment, path):
    """A file in the original's layout: a plain state dict of bf16 tensors, from the facts."""
    with_trunk = WITH_TRUNK[experiment.split("_1of")[0]]
    state = released_state(EXPERIMENTS[experiment], with_trunk)
    torch.save(state, path)
    return state


def test_resampler_keys_map_to_the_neck(demo_assets):
    model = build("head_tuning", demo_assets["weights"])
    ours = model.state_dict()
    given = {"backbone.up1.0.weight": ours["neck.up1.0.weight"],
             "backbone.blocks.0.ls1.gamma": ours["backbone.blocks.0.ls1.gamma"],
             "decode_head.conv_seg.bias": ours["decode_head.conv_seg.bias"]}
    assert set(checkpoint_filter(given, model)) == {
        "neck.up1.0.weight", "backbone.blocks.0.ls1.gamma", "decode_head.conv_seg.bias"}
    released = {k: ours[k.replace("backbone.up", "neck.up")]
                for k in names(facts()["resampler_params"])}
    assert set(checkpoint_filter(released, model)) == {f"neck.{k}" for k in model.neck.state_dict()}


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_released_layout_loads_every_value(experiment, demo_assets, tmp_path):
    model = build(experiment, demo_assets["weights"])
    state = released_file(experiment, tmp_path / "released.pth")
    load_segmentor_weights(model, tmp_path / "released.pth")
    ours = model.state_dict()
    for key, value in checkpoint_filter(state, model).items():
        # bf16 widens to our fp32 heads and masters exactly
        assert torch.equal(ours[key], value.to(ours[key].dtype)), key
    if not WITH_TRUNK[experiment.split("_1of")[0]]:
        trunk = torch.load(demo_assets["weights"], weights_only=True)
        assert torch.equal(model.backbone.blocks[1].mlp.fc2.weight.float(),
                           trunk["blocks.1.mlp.fc2.weight"].to(torch.bfloat16).float())


def test_linear_head_norm_is_called_norm_as_in_the_original(demo_assets, tmp_path):
    model = build("fewshot_1of16", demo_assets["weights"])
    state = released_file("fewshot_1of16", tmp_path / "released.pth")
    load_segmentor_weights(model, tmp_path / "released.pth")
    assert torch.equal(model.decode_head.norm.running_var,
                       state["decode_head.norm.running_var"].float())
    # our own checkpoints use the original's names too
    assert {k for k in model.state_dict() if k.startswith("decode_head.")} == {
        k for k in state if k.startswith("decode_head.")}


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_internseg_test_evaluates_released_layout(experiment, demo_assets, tmp_path):
    released_file(experiment, tmp_path / "released.pth")
    out = tmp_path / "metrics.json"
    assert main(["test", f"demo/{experiment}", str(tmp_path / "released.pth"), "--out", str(out),
                 "--data-root", str(demo_assets["data_root"]),
                 "--pretrained", str(demo_assets["weights"]), "--threads", "2"]) == 0
    result = json.loads(out.read_text())
    assert result["num_images"] == 4 and 0 <= result["mIoU"] <= 100


def test_checkpoint_of_another_head_is_refused_by_name(demo_assets, tmp_path):
    model = build("head_tuning", demo_assets["weights"])
    state = released_file("head_tuning", tmp_path / "released.pth")
    del state["decode_head.conv_seg.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="decode_head.conv_seg.weight"):
        load_segmentor_weights(model, tmp_path / "bad.pth")


def test_our_old_bn_name_is_refused(demo_assets, tmp_path):
    """A linear head saved before the rename (decode_head.bn.*) names the keys it lacks."""
    model = build("linear_probing", demo_assets["weights"])
    state = {k.replace("decode_head.norm.", "decode_head.bn."): v
             for k, v in released_file("linear_probing", tmp_path / "r.pth").items()}
    torch.save(state, tmp_path / "old.pth")
    with pytest.raises(CheckpointError, match="decode_head.norm"):
        load_segmentor_weights(model, tmp_path / "old.pth")


@pytest.mark.parametrize("experiment,stem,with_trunk", [
    ("fewshot_1of16", "linear_intern_vit_6b_504_5k_ade20k_bs16_lr4e-5_1of16", True),
    ("head_tuning", "upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen", False),
    ("full_tuning", "upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5", True),
])
def test_released_file_sizes_are_our_state_in_bf16(experiment, stem, with_trunk, reference):
    """The released files could not be downloaded here, but their recorded sizes pin what they
    hold: our full-size segmentor's state (auxiliary head included), 2 bytes per float, plus a
    few hundred bytes of container per tensor. A missing or extra module would show as
    megabytes; fp32 heads as hundreds of megabytes."""
    cfg = load_config(f"paper/{experiment}")
    cfg.model.backbone.pretrained = None
    state = build_segmentor(cfg, device="meta").state_dict()
    tensors = [v for k, v in state.items() if with_trunk or not k.startswith("backbone.")]
    payload = sum(v.numel() * (2 if v.is_floating_point() else v.element_size())
                  for v in tensors)
    overhead = reference["hub"]["files"][f"{stem}.pth"]["size"] - payload
    assert 0 < overhead < 1000 * len(tensors)


def test_demo_released_stand_ins_have_the_original_layout(demo_assets, tmp_path):
    """make-demo's "released" files (our tiny segmentors through to_released_layout) hold
    exactly the names and shapes the facts give, every float in bf16, no wrapper."""
    from internseg.demo import write_released_demo

    for experiment in EXPERIMENTS:
        path = write_released_demo(tmp_path / f"{experiment}.pth", experiment,
                                   demo_assets["weights"])
        written = torch.load(path, weights_only=True)
        expected = released_state(EXPERIMENTS[experiment],
                                  WITH_TRUNK[experiment.split("_1of")[0]])
        assert {k: v.shape for k, v in written.items()} == {
            k: v.shape for k, v in expected.items()}, experiment
        assert all(v.dtype == expected[k].dtype for k, v in written.items()), experiment
