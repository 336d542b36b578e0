"""The adapter row: deformable attention against a hand-written bilinear reference, the
ViT-Adapter backbone on shapes, freezing and loading, and its config against the facts."""

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

import internseg.plugin  # noqa: F401  (registers models, as custom_imports does)
from conftest import FACTS
from internseg.config import backbone_architecture, load_config
from internseg.models.adapter import InternViTAdapter
from internseg.models.deform_attn import MSDeformAttn, multi_scale_deformable_attention

ADAPTER = yaml.safe_load(FACTS.read_text())["adapter_tuning"]


def bilinear_reference(value, shapes, locations, weights):
    """Deformable attention written out point by point: each sample is the bilinear mix of
    its four neighbours at pixel coordinates (x * W - 0.5, y * H - 0.5) (the centre
    convention of align_corners=False), a neighbour outside the map counting as zero."""
    n, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(n, queries, heads, dim, dtype=value.dtype)
    for b in range(n):
        for q in range(queries):
            for m in range(heads):
                acc = torch.zeros(dim, dtype=value.dtype)
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(points):
                        px = locations[b, q, m, lvl, p, 0] * w - 0.5
                        py = locations[b, q, m, lvl, p, 1] * h - 0.5
                        x0, y0 = math.floor(px), math.floor(py)
                        fx, fy = px - x0, py - y0
                        sample = torch.zeros(dim, dtype=value.dtype)
                        for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                                              (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
                            x, y = x0 + dx, y0 + dy
                            if 0 <= x < w and 0 <= y < h:
                                sample = sample + share * value[b, starts[lvl] + y * w + x, m]
                        acc = acc + weights[b, q, m, lvl, p] * sample
                out[b, q, m] = acc
    return out.flatten(2)


def random_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 5), (2, 3)]
    n, heads, dim, queries, points = 2, 2, 3, 5, 3
    value = torch.randn(n, sum(h * w for h, w in shapes), heads, dim, generator=g,
                        dtype=torch.float64)
    # some points outside [0, 1]: the zero padding must match too
    locations = torch.rand(n, queries, heads, len(shapes), points, 2, generator=g,
                           dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(n, queries, heads, len(shapes), points, generator=g,
                         dtype=torch.float64).softmax(-1)
    return value, shapes, locations, weights


def test_deformable_attention_matches_the_bilinear_reference_in_value_and_gradient():
    value, shapes, locations, weights = random_inputs()
    ours_in = [t.clone().requires_grad_() for t in (value, locations, weights)]
    ref_in = [t.clone().requires_grad_() for t in (value, locations, weights)]
    ours = multi_scale_deformable_attention(ours_in[0], shapes, ours_in[1], ours_in[2])
    ref = bilinear_reference(ref_in[0], shapes, ref_in[1], ref_in[2])
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    probe = torch.randn_like(ref)
    (ours * probe).sum().backward()
    (ref * probe).sum().backward()
    for name, a, b in zip(("value", "locations", "weights"), ours_in, ref_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-11, msg=name)


def test_deformable_attention_refuses_shapes_that_do_not_cover_the_value():
    value, shapes, locations, weights = random_inputs()
    with pytest.raises(ValueError, match="spatial_shapes"):
        multi_scale_deformable_attention(value, [(4, 5), (2, 2)], locations, weights)


def test_msdeformattn_starts_as_deformable_detr():
    """Offsets start on one ray per head (the head's angle 2 pi h / M, scaled so its larger
    coordinate is 1) at distances 1..P; attention starts uniform over levels and points."""
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2, ratio=0.5)
    assert attn.value_proj.out_features == 8
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)
    expected_dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for h in range(4):
        for p in range(2):
            torch.testing.assert_close(bias[h, 0, p], expected_dirs[h] * (p + 1), atol=1e-6,
                                       rtol=0)
    query = torch.randn(1, 7, 16)
    weights = attn.attention_weights(query).view(1, 7, 4, 6).softmax(-1)
    torch.testing.assert_close(weights, torch.full_like(weights, 1 / 6))


def tiny_adapter(**overrides):
    kwargs = dict(img_size=64, patch_size=16, embed_dim=32, depth=4, num_heads=2,
                  deform_num_heads=2, conv_inplane=8, trunk_dtype="float32",
                  interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]]) | overrides
    model = InternViTAdapter(**kwargs)
    model.init_weights()
    return model


def test_adapter_returns_four_maps_and_trains_only_the_adapter():
    model = tiny_adapter(trunk_dtype="bfloat16").train()
    outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4),
                                              (2, 32, 2, 2)]
    assert all(o.dtype == torch.float32 for o in outs)
    sum(o.square().mean() for o in outs).backward()
    for name, param in model.named_parameters():
        trunk = name.startswith(("blocks.", "patch_embed.", "pos_embed", "cls_token"))
        assert param.requires_grad is not trunk, name
        assert param.dtype == (torch.bfloat16 if trunk else torch.float32), name
        if not trunk:
            assert param.grad is not None, name
    # the injectors start at zero: the first maps' gradient reaches them through gamma
    assert model.interactions[0].injector.gamma.grad.abs().sum() > 0
    assert not model.blocks.training and model.spm.training


def test_adapter_refuses_sides_off_the_32_grid_and_bad_ranges():
    model = tiny_adapter()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="interaction_indexes"):
        tiny_adapter(interaction_indexes=[[0, 1], [1, 2], [2, 3], [3, 4]])


def test_adapter_loads_a_14_patch_file_with_its_kernel_and_grid_resized_bicubic(tmp_path):
    """The released 224 px trunk has patch 14 and a 16x16 grid; at patch 16 / 64 px the
    kernel becomes 16x16 and the grid 4x4, both bicubic (align_corners=False) as the fork
    loads them. The file is written with the recorded key names, the CLIP projector too."""
    from internseg.models.pretrained import load_pretrained_backbone

    dim, depth = 32, 4
    g = torch.Generator().manual_seed(1)
    state = {"patch_embed.proj.weight": torch.randn(dim, 3, 14, 14, generator=g),
             "patch_embed.proj.bias": torch.randn(dim, generator=g),
             "pos_embed": torch.randn(1, 1 + 16 * 16, dim, generator=g),
             "cls_token": torch.randn(1, 1, dim, generator=g),
             "clip_projector.norm1_q.weight": torch.randn(dim, generator=g)}
    per_block = {"norm1.weight": (dim,), "attn.qkv.weight": (3 * dim, dim),
                 "attn.q_norm.weight": (dim,), "attn.k_norm.weight": (dim,),
                 "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,), "ls1.gamma": (dim,),
                 "norm2.weight": (dim,), "mlp.fc1.weight": (4 * dim, dim),
                 "mlp.fc1.bias": (4 * dim,), "mlp.fc2.weight": (dim, 4 * dim),
                 "mlp.fc2.bias": (dim,), "ls2.gamma": (dim,)}
    for i in range(depth):
        for key, shape in per_block.items():
            state[f"blocks.{i}.{key}"] = torch.randn(shape, generator=g)
    path = tmp_path / "trunk.pth"
    torch.save(state, path)
    model = tiny_adapter()
    spm_before = model.spm.fc1.weight.clone()
    assert load_pretrained_backbone(model, path) == ([], [])
    kernel = F.interpolate(state["patch_embed.proj.weight"], size=(16, 16), mode="bicubic",
                           align_corners=False)
    torch.testing.assert_close(model.patch_embed.proj.weight, kernel)
    grid = state["pos_embed"][:, 1:].reshape(1, 16, 16, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(model.pos_embed[:, 1:], grid.flatten(2).transpose(1, 2))
    torch.testing.assert_close(model.blocks[3].mlp.fc2.bias, state["blocks.3.mlp.fc2.bias"])
    # the adapter keeps its own initialisation
    torch.testing.assert_close(model.spm.fc1.weight, spm_before)


def test_adapter_config_matches_the_fork():
    cfg = load_config("paper/adapter_tuning")
    backbone = cfg.model.backbone
    assert backbone.type == "InternViTAdapter"
    arch = backbone_architecture(backbone)
    assert (arch["patch_size"], backbone.img_size, arch["embed_dim"], arch["depth"],
            arch["num_heads"]) == (16, 512, 3200, 48, 25)
    assert backbone.freeze_trunk and backbone.drop_path_rate == 0.0 and backbone.with_cp
    assert (backbone.conv_inplane, backbone.n_points, backbone.deform_num_heads,
            backbone.deform_ratio, backbone.cffn_ratio) == (64, 4, 25, 0.25, 0.25)
    assert backbone.interaction_indexes == [[0, 11], [12, 23], [24, 35], [36, 47]]
    assert backbone.use_extra_extractor and backbone.use_final_norm and backbone.add_vit_feature
    assert cfg.model.neck is None
    assert cfg.model.decode_head.in_channels == [3200] * 4
    assert cfg.model.decode_head.channels == 1536
    assert (cfg.model.auxiliary_head.in_channels, cfg.model.auxiliary_head.loss_decode.loss_weight
            ) == (3200, 0.4)
    assert "512" in ADAPTER["data"] and "341" in ADAPTER["data"]
    assert cfg.model.test_cfg.crop_size == (512, 512) and cfg.model.test_cfg.stride == (341, 341)
    train = {s.type: s for s in cfg.train_dataloader.dataset.pipeline}
    assert train["RandomResize"].scale == (2048, 512)
    assert train["RandomCrop"].crop_size == (512, 512)
    test = {s.type: s for s in cfg.test_dataloader.dataset.pipeline}
    assert test["ShortSideResize"].short_side == 512
    optim = cfg.optim_wrapper
    assert (optim.optimizer.lr, optim.optimizer.weight_decay) == (4e-5, 0.05)
    assert (optim.paramwise_cfg.layer_decay_rate, arch["depth"]) == (0.95, 48)
    assert cfg.param_scheduler[0].end == 1501 and cfg.train_cfg.max_iters == 80000
    # fp16 with fp32 masters and a dynamic loss scale (the fork's DeepSpeed fp16)
    assert (optim.type, optim.dtype, optim.loss_scale) == (
        "GradNormAmpOptimWrapper", "float16", "dynamic")
    assert backbone.trunk_dtype == "float16"
    from internseg.records import record_of

    record = record_of("intern_vit_6b_224px", "adapter_tuning", "ade20k")
    assert record.miou == ADAPTER["miou"] and record.released_checkpoint is None


def test_adapter_parameters_go_to_the_last_layer_decay_group():
    from internseg.engine.layer_decay import layer_id

    assert layer_id("backbone.spm.fc1.weight", 48) == 49
    assert layer_id("backbone.interactions.0.injector.gamma", 48) == 49
    assert layer_id("backbone.level_embed", 48) == 49
    assert layer_id("backbone.blocks.11.attn.qkv.weight", 48) == 12


def test_a_frozen_trunk_run_keeps_the_adapter_in_its_result_and_needs_it_back(tmp_path):
    """final.pth of a frozen-trunk run leaves the trunk out (it is the pretrained file) but
    keeps every adapter weight; loading it without them is an error, not a random adapter."""
    from types import SimpleNamespace

    from internseg.config import load_config
    from internseg.engine.evaluate import load_segmentor_weights
    from internseg.engine.result import trainable_state
    from internseg.engine.segmentor import build_segmentor
    from internseg.models.pretrained import CheckpointError

    cfg = load_config("demo/adapter_tuning")
    model = build_segmentor(cfg)
    state = trainable_state(SimpleNamespace(model=model))
    assert not any(k.startswith(("backbone.blocks.", "backbone.patch_embed.")) for k in state)
    assert "backbone.level_embed" in state and any(k.startswith("backbone.spm.") for k in state)
    adapter_keys = [k for k in model.state_dict() if k.startswith("backbone.")
                    and not model.backbone.is_trunk(k.removeprefix("backbone."))]
    assert set(adapter_keys) <= set(state)
    torch.save({k: v for k, v in state.items() if not k.startswith("backbone.spm.")},
               tmp_path / "no_spm.pth")
    from internseg.demo import write_tiny_checkpoint

    model.backbone.pretrained = str(write_tiny_checkpoint(tmp_path / "trunk.pth",
                                                          trunk=cfg.model.backbone.trunk))
    with pytest.raises(CheckpointError, match=r"missing \['backbone\.spm\."):
        load_segmentor_weights(model, tmp_path / "no_spm.pth")
    load_segmentor_weights(model, _saved(tmp_path / "whole.pth", state))


def _saved(path, state):
    torch.save(state, path)
    return path
