"""Released segmentation checkpoints (full or head-only) load into our segmentors."""

import pytest
import torch

from internseg.config import load_config
from internseg.engine.evaluate import load_segmentor_weights, rename_released_keys
from internseg.engine.train import build_segmentor
from internseg.models.pretrained import CheckpointError


def build(experiment, weights):
    cfg = load_config(f"demo/{experiment}")
    cfg.model.backbone.pretrained = str(weights)
    return build_segmentor(cfg)


def random_released(value):
    """A random tensor stored as the released files store it: their sizes are the parameter
    counts x 2 bytes to within 0.3 MB, so every floating-point tensor, heads included, is bf16."""
    if not value.is_floating_point():
        return value.clone()
    return torch.randn_like(value.float()).to(torch.bfloat16)


def released_head_only(model):
    """The layout of upernet_..._frozen.pth: heads and resamplers, resamplers in the backbone."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            continue
        if key.startswith("neck."):
            key = "backbone." + key.removeprefix("neck.")
        state[key] = random_released(value)
    return state


# The resampler parameters of a released UperNet checkpoint (the original's backbone.up1 is
# ConvT, LayerNorm, GELU, ConvT, Identity; up2 is ConvT, Identity; up3/up4 have none).
RELEASED_RESAMPLER_KEYS = {f"backbone.{k}.{p}" for k in ("up1.0", "up1.1", "up1.3", "up2.0")
                           for p in ("weight", "bias")}


def test_resampler_keys_map_to_the_neck(demo_assets):
    assert rename_released_keys({"backbone.up1.0.weight": 1, "backbone.blocks.0.ls1.gamma": 2,
                                 "decode_head.conv_seg.bias": 3}) == {
        "neck.up1.0.weight": 1, "backbone.blocks.0.ls1.gamma": 2, "decode_head.conv_seg.bias": 3}
    neck = build("head_tuning", demo_assets["weights"]).neck.state_dict()
    assert set(rename_released_keys(dict.fromkeys(RELEASED_RESAMPLER_KEYS))) == {
        f"neck.{k}" for k in neck}


def test_head_only_checkpoint_takes_the_trunk_from_the_pretrained_file(demo_assets, tmp_path):
    model = build("head_tuning", demo_assets["weights"])
    state = released_head_only(model)
    torch.save({"meta": {"iter": 80000}, "state_dict": state}, tmp_path / "released.pth")
    load_segmentor_weights(model, tmp_path / "released.pth")
    # bf16 values into fp32 heads and resamplers: exact, bf16 widens losslessly
    assert torch.equal(model.neck.up1[0].weight, state["backbone.up1.0.weight"].float())
    assert torch.equal(model.decode_head.conv_seg.weight,
                       state["decode_head.conv_seg.weight"].float())
    trunk = torch.load(demo_assets["weights"], weights_only=True)
    # a frozen trunk keeps its (pretrained) weights in bf16
    assert torch.equal(model.backbone.blocks[1].mlp.fc2.weight,
                       trunk["blocks.1.mlp.fc2.weight"].to(torch.bfloat16))


def test_full_checkpoint_loads_trunk_from_itself(demo_assets, tmp_path):
    model = build("fewshot_1of16", demo_assets["weights"])
    state = {k: random_released(v) for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "full.pth")
    load_segmentor_weights(model, tmp_path / "full.pth")
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight,
                       state["backbone.blocks.0.attn.qkv.weight"])
    assert torch.equal(model.decode_head.conv_seg.weight,
                       state["decode_head.conv_seg.weight"].float())


def test_checkpoint_of_another_head_is_refused_by_name(demo_assets, tmp_path):
    model = build("head_tuning", demo_assets["weights"])
    state = released_head_only(model)
    del state["decode_head.conv_seg.weight"]
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="decode_head.conv_seg.weight"):
        load_segmentor_weights(model, tmp_path / "bad.pth")


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
