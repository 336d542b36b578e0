import re

import pytest
import torch

import internseg.plugin  # noqa: F401  (registers models and hooks, as custom_imports does)
from internseg.demo import CLIP_PROJECTOR_KEYS, DEMO_TRUNK, write_tiny_checkpoint
from internseg.trunks import TRUNKS
from internseg.models import FeatureResampler, InternViT, LinearHead
from internseg.models.pretrained import (CheckpointError, check_fits, checkpoint_filter,
                                         load_checkpoint_file, load_pretrained_backbone,
                                         resize_pos_embed)


BLOCK_KEYS = ["norm1.weight", "attn.qkv.weight", "attn.q_norm.weight", "attn.k_norm.weight",
              "attn.proj.weight", "attn.proj.bias", "ls1.gamma", "norm2.weight",
              "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"]


def tiny(**kw):
    args = dict(img_size=56, trunk_dtype="float32", out_indices=(3,),
                **TRUNKS[DEMO_TRUNK].architecture)
    args.update(kw)
    return InternViT(**args)


def full_size_on_meta(img_size):
    with torch.device("meta"):
        return InternViT(img_size=img_size, out_indices=(47,))


@pytest.mark.parametrize("img_size,total", [(224, 5_902_793_600), (504, 5_906_121_600)])
def test_full_size_parameter_count(img_size, total):
    model = full_size_on_meta(img_size)
    assert sum(p.numel() for p in model.parameters()) == total


def test_full_size_names_and_shapes_match_released_checkpoint():
    state = full_size_on_meta(224).state_dict()
    expected = {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "cls_token"}
    expected |= {f"blocks.{i}.{k}" for i in range(48) for k in BLOCK_KEYS}
    assert set(state) == expected
    assert state["patch_embed.proj.weight"].shape == (3200, 3, 14, 14)
    assert state["pos_embed"].shape == (1, 257, 3200)
    assert state["cls_token"].shape == (1, 1, 3200)
    shapes = {k: tuple(v.shape) for k, v in state.items() if k.startswith("blocks.0.")}
    assert shapes == {
        "blocks.0.norm1.weight": (3200,), "blocks.0.attn.qkv.weight": (9600, 3200),
        "blocks.0.attn.q_norm.weight": (3200,), "blocks.0.attn.k_norm.weight": (3200,),
        "blocks.0.attn.proj.weight": (3200, 3200), "blocks.0.attn.proj.bias": (3200,),
        "blocks.0.ls1.gamma": (3200,), "blocks.0.norm2.weight": (3200,),
        "blocks.0.mlp.fc1.weight": (12800, 3200), "blocks.0.mlp.fc1.bias": (12800,),
        "blocks.0.mlp.fc2.weight": (3200, 12800), "blocks.0.mlp.fc2.bias": (3200,),
        "blocks.0.ls2.gamma": (3200,),
    }


def test_reference_key_list_is_ours(reference):
    keys = reference["backbone"]["checkpoint_keys"]
    block_part = re.search(r"blocks\.\{0\.\.47\}\.\{([^}]*)\}", keys).group(1)
    listed = {k.strip() for k in block_part.replace("\n", " ").split(",")}
    assert listed == set(BLOCK_KEYS)


def test_drop_path_is_linear_over_depth():
    model = tiny(drop_path_rate=0.3)
    rates = [b.drop_path1.drop_prob for b in model.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 4).tolist())


def test_forward_gives_fp32_maps_at_taps():
    model = tiny(out_indices=(1, 3), trunk_dtype="bfloat16")
    model.init_weights()
    outs = model(torch.randn(2, 3, 56, 84))
    assert [tuple(o.shape) for o in outs] == [(2, 96, 4, 6)] * 2
    assert all(o.dtype == torch.float32 for o in outs)
    assert outs[0].requires_grad


def test_a_block_tapped_twice_gives_a_map_per_level():
    """intern_vit_tiny_demo_b's taps (0, 1, 1, 2): UperNet still needs four maps."""
    model = tiny(out_indices=(0, 1, 1, 2))
    model.init_weights()
    outs = model(torch.randn(1, 3, 56, 56))
    assert len(outs) == 4 and torch.equal(outs[1], outs[2])
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[2], outs[3])


def test_frozen_trunk_builds_no_graph_and_stores_bf16():
    model = tiny(freeze_trunk=True, trunk_dtype="bfloat16")
    model.init_weights()
    model.train()
    assert not model.training, "a frozen trunk stays in eval mode"
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in model.parameters())
    out = model(torch.randn(1, 3, 56, 56))[0]
    assert out.dtype == torch.float32 and out.grad_fn is None


def test_qk_norm_spans_all_heads():
    model = tiny()
    assert model.blocks[0].attn.q_norm.weight.shape == (96,)


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = tiny()
    plain.init_weights()
    ckpt = tiny(with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 56, 56)
    for m in (plain, ckpt):
        m(x)[0].sum().backward()
    # the recomputed forward runs the same kernels on the same values: bit for bit
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_resize_pos_embed_keeps_cls_and_is_identity_at_same_size():
    pe = torch.randn(1, 1 + 16 * 16, 8)
    same = resize_pos_embed(pe, (16, 16), (16, 16))
    # identity up to the rounding of bicubic weights at integer offsets (fp32: ~1e-7)
    assert torch.allclose(same, pe, atol=1e-5)
    big = resize_pos_embed(pe, (16, 16), (36, 36))
    assert big.shape == (1, 1 + 36 * 36, 8)
    assert torch.equal(big[:, 0], pe[:, 0])
    # a constant grid stays constant under bicubic interpolation, whose four weights sum
    # to 1 up to fp32 rounding
    flat = torch.ones(1, 257, 2)
    assert torch.allclose(resize_pos_embed(flat, (16, 16), (36, 36)), torch.ones(1, 1297, 2),
                          atol=1e-5)


def test_original_format_checkpoint_loads_with_projector_dropped(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "trunk.pth")
    raw = torch.load(path, weights_only=True)
    assert sum(k.startswith("clip_projector.") for k in raw) == len(CLIP_PROJECTOR_KEYS) == 14
    assert raw["pos_embed"].shape == (1, 257, 96)
    model = tiny(img_size=112)  # 8x8 grid: the 16x16 grid must be resized
    missing, unexpected = load_pretrained_backbone(model, path)
    assert missing == [] and unexpected == []
    expected = resize_pos_embed(raw["pos_embed"], (16, 16), (8, 8))
    assert torch.equal(model.pos_embed.detach(), expected)  # the same resize, same process
    assert torch.equal(model.blocks[2].attn.qkv.weight.detach(), raw["blocks.2.attn.qkv.weight"])


@pytest.mark.parametrize("wrapper", ["module", "state_dict"])
def test_wrapped_checkpoints_unwrap(tmp_path, wrapper):
    state = {"module.cls_token": torch.zeros(1, 1, 4)} if wrapper == "module" else {
        "cls_token": torch.zeros(1, 1, 4)}
    torch.save({wrapper: state, "meta": {"note": "x"}}, tmp_path / "c.pth")
    assert set(load_checkpoint_file(tmp_path / "c.pth")) == {"cls_token"}


def test_unadaptable_shape_is_refused_by_name(tmp_path):
    model = tiny()
    state = dict(model.state_dict())
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(10, 96)
    with pytest.raises(CheckpointError, match=r"bad\.pth does not fit the config: blocks\.0\.mlp"
                                              r"\.fc1\.weight: shape \(10, 96\)"):
        check_fits(checkpoint_filter(state, model, source="bad.pth"), model.state_dict(),
                   "bad.pth")
    state = dict(model.state_dict())
    state["pos_embed"] = torch.zeros(1, 1 + 15, 96)  # not a square grid
    with pytest.raises(CheckpointError, match="pos_embed"):
        checkpoint_filter(state, model, source="bad.pth")


def test_outside_checkpoints_refuse_pickled_code(tmp_path):
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": object()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused.*builtins\.object"):
        load_checkpoint_file(tmp_path / "evil.pth")


def test_linear_head_is_norm_then_1x1_conv():
    head = LinearHead(in_channels=96, in_index=0, num_classes=150, norm_cfg=dict(type="BN"))
    assert set(dict(head.named_parameters())) >= {"norm.weight", "norm.bias", "conv_seg.weight",
                                                  "conv_seg.bias"}
    assert head.conv_seg.weight.shape == (150, 96, 1, 1)
    out = head([torch.randn(2, 96, 4, 4)])
    assert out.shape == (2, 150, 4, 4)


def test_linear_head_size_at_full_width():
    head = LinearHead(in_channels=3200, in_index=0, num_classes=150, norm_cfg=dict(type="BN"))
    n = sum(p.numel() for p in head.parameters())
    assert n == 3200 * 2 + 3200 * 150 + 150  # ~0.49M, the README's "0.5M trainable"


def test_resampler_makes_a_four_level_pyramid():
    neck = FeatureResampler(embed_dim=8)
    maps = [torch.randn(1, 8, 36, 36) for _ in range(4)]
    assert [tuple(o.shape[-2:]) for o in neck(maps)] == [(144, 144), (72, 72), (36, 36),
                                                         (18, 18)]
    with pytest.raises(ValueError, match="4 tapped maps"):
        neck(maps[:3])


def test_resampler_size_at_full_width():
    with torch.device("meta"):
        neck = FeatureResampler(embed_dim=3200)
    n = sum(p.numel() for p in neck.parameters())
    assert 120e6 < n < 126e6  # ~123M, as recorded for the original


# Precision: the original runs its trunk and resamplers as bf16 modules (`self.to(bfloat16)`),
# with fp32 masters in the optimizer under DeepSpeed (full tuning) or none (few-shot, plain
# DDP). Ours must compute exactly what a bf16 module computes, whichever way weights are stored.

def _forward_backward(model, x):
    outs = model(x)
    sum(o.float().pow(2).mean() for o in outs).backward()
    return outs


def test_master_weights_compute_exactly_what_a_bf16_trunk_computes():
    torch.manual_seed(0)
    master = tiny(out_indices=(1, 3), trunk_dtype="bfloat16", master_weights=True)
    master.init_weights()
    pure = tiny(out_indices=(1, 3), trunk_dtype="bfloat16", master_weights=False)
    pure.load_state_dict(master.state_dict())  # copy_ rounds fp32 -> bf16 as .to() does
    assert {p.dtype for p in master.parameters()} == {torch.float32}
    assert {p.dtype for p in pure.parameters()} == {torch.bfloat16}

    streams = []
    master.blocks[0].register_forward_hook(lambda m, i, o: streams.append(o.dtype))
    x = torch.randn(2, 3, 56, 56)
    out_master = _forward_backward(master, x)
    out_pure = _forward_backward(pure, x)
    assert streams == [torch.bfloat16], "the residual stream is bf16, as in the original"
    for a, b in zip(out_master, out_pure):
        assert a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b)
    for (name, p_master), p_pure in zip(master.named_parameters(), pure.parameters()):
        assert p_master.grad.dtype == torch.float32, name
        # the gradient is the bf16 module's gradient, handed to the fp32 master unrounded
        assert torch.equal(p_master.grad, p_pure.grad.float()), name


def test_frozen_trunk_computes_what_the_trained_one_does():
    torch.manual_seed(0)
    trained = tiny(trunk_dtype="bfloat16")
    trained.init_weights()
    frozen = tiny(trunk_dtype="bfloat16", freeze_trunk=True)
    frozen.load_state_dict(trained.state_dict())
    trained.eval()
    x = torch.randn(1, 3, 56, 56)
    assert torch.equal(trained(x)[0], frozen(x)[0])


def test_pure_bf16_trunk_is_updated_in_bf16():
    torch.manual_seed(0)
    model = tiny(trunk_dtype="bfloat16", master_weights=False)
    model.init_weights()
    before = model.blocks[0].mlp.fc1.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _forward_backward(model, torch.randn(1, 3, 56, 56))
    optimizer.step()
    weight = model.blocks[0].mlp.fc1.weight
    assert weight.dtype == torch.bfloat16 and weight.requires_grad
    assert optimizer.state[weight]["exp_avg"].dtype == torch.bfloat16
    assert not torch.equal(weight.detach(), before)


def test_resampler_computes_in_bf16_from_fp32_weights():
    torch.manual_seed(0)
    neck = FeatureResampler(embed_dim=8)
    # not a no-op LayerNorm, so that its weights' precision shows in the result
    torch.nn.init.normal_(neck.up1[1].weight)
    torch.nn.init.normal_(neck.up1[1].bias)
    bf16_copy = FeatureResampler(embed_dim=8)
    bf16_copy.load_state_dict(neck.state_dict())
    bf16_copy.to(torch.bfloat16)
    maps = [torch.randn(1, 8, 6, 6, requires_grad=True) for _ in range(4)]
    outs = neck(maps)
    assert all(p.dtype == torch.float32 for p in neck.parameters())
    assert all(o.dtype == torch.float32 for o in outs)
    for a, b in zip(outs, bf16_copy(maps)):
        assert torch.equal(a, b)
    sum(o.sum() for o in outs).backward()
    assert neck.up1[0].weight.grad.dtype == torch.float32
    with pytest.raises(ValueError, match="compute_dtype 'bf16'"):
        FeatureResampler(embed_dim=8, compute_dtype="bf16")


def test_resampler_init_is_the_originals():
    """heads.resampler_init: ConvT weights ~ N(0, sqrt(2 / fan_out)), zero bias, through the
    segmentor's init_weights (PyTorch's default would be 2.45x smaller)."""
    torch.manual_seed(0)
    neck = FeatureResampler(embed_dim=64)
    neck.init_weights()
    expected = (2 / (2 * 2 * 64)) ** 0.5
    for conv in (neck.up1[0], neck.up1[3], neck.up2[0]):
        # 16384 samples: the std estimate's relative error is ~1/sqrt(2 * 16384) = 0.6 %
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.03)
        assert conv.weight.mean().abs().item() < 0.05 * expected
        assert not conv.bias.any()
    assert torch.equal(neck.up1[1].weight, torch.ones(64))


def test_resampler_layernorm_statistics_in_fp32():
    """A bf16 map far from zero mean: statistics in bf16 would lose most of the signal
    (bf16 spacing at 100 is 0.5); in fp32 the result is the fp32 LayerNorm's rounded once."""
    torch.manual_seed(0)
    neck = FeatureResampler(embed_dim=64)
    x = (100 + 4 * torch.randn(2, 64, 5, 5)).to(torch.bfloat16)
    out = neck.up1[1](x)
    assert out.dtype == torch.bfloat16
    reference = torch.nn.functional.layer_norm(
        x.float().permute(0, 2, 3, 1), (64,), eps=1e-6).permute(0, 3, 1, 2)
    # two fp32 algorithms (two-pass here, Welford in layer_norm), then one bf16 rounding:
    # within one bf16 step (2^-8 relative) of the fp32 value
    torch.testing.assert_close(out.float(), reference, rtol=2 ** -8, atol=1e-3)
