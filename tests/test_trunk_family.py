"""A trunk is a whole variant of the InternViT family: a test-only trunk unlike the 6B
(LayerNorm, qkv bias, no q/k norm, no layer scale, 24 blocks) builds from its entry, loads a
file written in its own layout, and runs every regime its depth allows."""

import hashlib

import pytest
import torch

from internseg.config import load_config
from internseg.errors import InputError
from internseg.trunks import TRUNKS, Trunk

NAME = "intern_vit_test_layernorm_24"


def family_member(**pins) -> Trunk:
    return Trunk(name=NAME, file=f"{NAME}.pth", embed_dim=64, depth=24, num_heads=4,
                 pretrain_size=56, taps=(5, 11, 17, 23), norm="layer", qkv_bias=True,
                 qk_normalization=False, layerscale_init=None, **pins)


@pytest.fixture
def trunk(monkeypatch):
    member = family_member(size=1, sha256="0" * 64)
    monkeypatch.setitem(TRUNKS, NAME, member)
    return member


def test_it_builds_as_its_entry_says(trunk):
    from internseg.models import InternViT
    from internseg.models.intern_vit import LayerNorm

    model = InternViT(trunk=NAME, img_size=56, out_indices=trunk.taps, trunk_dtype="float32")
    block = model.blocks[0]
    assert len(model.blocks) == 24 and model.embed_dim == 64
    assert isinstance(block.norm1, LayerNorm) and block.norm1.bias is not None
    assert block.attn.qkv.bias is not None and not hasattr(block.attn, "q_norm")
    assert not any(".ls1." in k or ".q_norm." in k for k in model.state_dict())
    maps = model(torch.randn(1, 3, 56, 56))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 4, 4)] * 4
    # what the entry fixes, a config cannot contradict
    with pytest.raises(ValueError, match="has qkv_bias=True, the config says False"):
        InternViT(trunk=NAME, qkv_bias=False, out_indices=(23,))


def test_it_loads_a_file_written_in_its_own_layout(trunk, tmp_path):
    from internseg.models import InternViT
    from internseg.models.pretrained import KEY_FILTERS, load_pretrained_backbone

    assert {t.key_filter for t in TRUNKS.values()} <= set(KEY_FILTERS)
    torch.manual_seed(1)
    written = InternViT(trunk=NAME, img_size=56, out_indices=(23,), trunk_dtype="float32")
    written.init_weights()
    state = written.state_dict()
    assert "blocks.0.attn.qkv.bias" in state and "blocks.0.norm1.bias" in state
    torch.save(state, tmp_path / trunk.file)
    torch.manual_seed(2)
    model = InternViT(trunk=NAME, img_size=56, out_indices=(23,), trunk_dtype="float32")
    assert load_pretrained_backbone(model, tmp_path / trunk.file, 56) == ([], [])
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_it_resolves_every_regime_its_depth_allows(trunk):
    from internseg.engine.segmentor import build_segmentor
    from internseg.registry import experiments

    resolved, refused = {}, {}
    for name in experiments("paper"):
        try:
            resolved[name] = load_config(f"paper/{name}", trunk=NAME, import_modules=False)
        except InputError as err:
            refused[name] = str(err)
    # linear probing reads block 44, which 24 blocks do not have: refused in one line
    assert list(refused) == ["linear_probing"]
    assert "\n" not in refused["linear_probing"]
    assert "block 44 of intern_vit_6b_224px has no counterpart" in refused["linear_probing"]
    assert resolved["fewshot_1of16"].model.backbone.out_indices == [23]
    assert resolved["full_tuning"].model.backbone.out_indices == [5, 11, 17, 23]
    assert resolved["adapter_tuning"].model.backbone.interaction_indexes == [
        [0, 5], [6, 11], [12, 17], [18, 23]]
    for cfg in resolved.values():
        backbone = cfg.model.backbone
        assert backbone.qkv_bias is True and backbone.qk_normalization is False
    model = build_segmentor(resolved["full_tuning"], device="meta")
    assert model.backbone.blocks[0].attn.qkv.bias is not None


def test_a_real_trunk_without_pins_is_refused_where_pins_are_verified(monkeypatch):
    from internseg.records import hub_pins

    monkeypatch.setitem(TRUNKS, NAME, family_member())
    with pytest.raises(InputError, match=f"trunk {NAME} is registered without its file's pins"):
        hub_pins()
    pinned = family_member(size=3, sha256=hashlib.sha256(b"abc").hexdigest())
    monkeypatch.setitem(TRUNKS, NAME, pinned)
    assert hub_pins()[pinned.file].sha256 == pinned.sha256
