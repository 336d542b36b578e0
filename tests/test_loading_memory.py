"""Host memory while a job builds its model and loads the pretrained trunk: one copy of the
trunk, in the dtype it is stored in (benchmarks/startup.py measures the full size)."""

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from internseg.demo import DEMO_TRUNK
from internseg.models import InternViT
from internseg.models.pretrained import load_checkpoint_file
from internseg.trunks import TRUNKS

RSS = """
import re, sys
from pathlib import Path
def kib(field):
    return int(re.search(rf"^{field}:\\s+(\\d+) kB", Path("/proc/self/status").read_text(),
                         re.MULTILINE).group(1))
"""


def run(code: str, *args) -> int:
    done = subprocess.run([sys.executable, "-c", RSS + code, *map(str, args)],
                          capture_output=True, text=True, check=True, timeout=120,
                          env={"PYTHONPATH": str(REPO / "core"), "OMP_NUM_THREADS": "1"})
    return int(done.stdout.split()[-1])


def test_a_frozen_trunk_is_built_without_an_fp32_copy_of_it():
    # 24 blocks of 512: 302 MB in fp32, 151 MB in bf16, one fp32 block 12.6 MB
    grown = run("""
import torch
from internseg.models import InternViT
Path("/proc/self/clear_refs").write_text("5")
base = kib("VmRSS")
model = InternViT(img_size=56, embed_dim=512, depth=24, num_heads=8, out_indices=(23,),
                    freeze_trunk=True)
assert all(p.dtype == torch.bfloat16 for p in model.parameters())
print(kib("VmHWM") - base)
""") * 1024
    fp32 = 24 * 12 * 512 * 512 * 4
    assert fp32 / 2 < grown < 0.7 * fp32


def test_a_frozen_trunk_holds_the_values_of_its_fp32_init():
    args = dict(img_size=56, out_indices=(3,), **TRUNKS[DEMO_TRUNK].architecture)
    torch.manual_seed(0)
    frozen = InternViT(freeze_trunk=True, trunk_dtype="bfloat16", **args)
    torch.manual_seed(0)
    fp32 = InternViT(trunk_dtype="float32", **args)
    for (name, value), reference in zip(frozen.state_dict().items(), fp32.state_dict().values()):
        assert torch.equal(value, reference.to(torch.bfloat16)), name


def test_a_checkpoint_is_mapped_not_read_into_memory(tmp_path):
    path = tmp_path / "trunk.pth"
    weight = torch.randn(64 << 20 >> 2)  # 64 MiB
    torch.save({"w": weight}, path)
    grown = run("""
from internseg.models.pretrained import load_checkpoint_file
base = kib("RssAnon")
state = load_checkpoint_file(sys.argv[1])
print(kib("RssAnon") - base)
""", path) * 1024
    assert grown < weight.nbytes / 8
    assert torch.equal(load_checkpoint_file(path)["w"], weight)


def test_a_checkpoint_in_the_pre_zip_format_is_read(tmp_path):
    path = tmp_path / "old.pth"
    state = {"cls_token": torch.randn(1, 1, 8)}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint_file(path)["cls_token"], state["cls_token"])


def test_the_startup_benchmarks_trunk_file_fits_the_6b_trunk():
    """benchmarks/startup.py writes its file from the recorded key names and shapes it
    derives; the 6B trunk at 224 px must take every tensor but the 14 projector ones."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from startup import trunk_shapes

    shapes = trunk_shapes(48)
    with torch.device("meta"):
        model = InternViT(img_size=224, out_indices=(47,))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    projector = {k for k in shapes if k.startswith("clip_projector.")}
    assert len(projector) == 14
    assert {k: v for k, v in shapes.items() if k not in projector} == expected


# ---------------------------------------------------------------- the trunk built from its file


def old_path(path, **args):
    """What the trunk was before it was built from its file: built with storage and random
    values, initialised at random again, then the file's values copied in."""
    model = InternViT(**args)
    model.pretrained = str(path)  # named after construction: the copying path
    model.init_weights()
    assert not model.loaded_from_file
    return model


@pytest.mark.parametrize("args", [
    dict(freeze_trunk=True, trunk_dtype="bfloat16"),  # head tuning: the file's fp32 rounded once
    dict(trunk_dtype="bfloat16"),  # full tuning: fp32 masters from the file
    dict(trunk_dtype="bfloat16", master_weights=False),  # few-shot: bf16 weights
    dict(trunk_dtype="float32", img_size=112),  # another grid: the position embedding resized
], ids=["frozen", "masters", "bf16", "resized"])
def test_a_trunk_built_from_its_file_equals_the_old_path_bit_for_bit(args, demo_assets):
    args = dict(img_size=56, out_indices=(3,), **TRUNKS[DEMO_TRUNK].architecture) | args
    path = demo_assets["weights"]
    before = old_path(path, **args).state_dict()
    state = torch.get_rng_state()
    model = InternViT(pretrained=str(path), **args)
    model.init_weights()
    # nothing drawn for the values the file overwrites: the heads' draws follow the seed alone
    assert torch.equal(torch.get_rng_state(), state)
    assert model.loaded_from_file
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in after.items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key
    assert [p.requires_grad for p in model.parameters()] == [
        not args.get("freeze_trunk", False)] * len(after)


def test_an_adapter_gets_the_file_for_its_trunk_and_random_values_for_its_own_parts(demo_assets):
    """Patch 16 on the 14-patch file: the kernel resized as before; the adapter's parts are
    initialised as the fork does, with the trunk from the file."""
    from internseg.models.adapter import InternViTAdapter

    args = dict(img_size=64, patch_size=16, out_indices=(0, 1, 2, 3), n_points=2,
                deform_num_heads=4, interaction_indexes=((0, 0), (1, 1), (2, 2), (3, 3)),
                **{k: v for k, v in TRUNKS[DEMO_TRUNK].architecture.items() if k != "patch_size"})
    path = demo_assets["weights"]
    model = InternViTAdapter(pretrained=str(path), **args)
    model.init_weights()
    before = InternViTAdapter(**args)
    before.pretrained = str(path)
    before.init_weights()
    for key, value in model.state_dict().items():
        if model.is_trunk(key):
            assert torch.equal(value, before.state_dict()[key]), key
        else:
            assert not value.is_meta and value.dtype == torch.float32, key
    assert model(torch.randn(1, 3, 64, 64))[0].isfinite().all()


def test_a_frozen_trunk_from_a_bf16_file_lives_in_the_files_pages(tmp_path):
    """The trunk's tensors are the memory-mapped file's: building it adds no anonymous memory
    of the trunk's size (the released file is bf16, as a frozen trunk stores it)."""
    path = tmp_path / "trunk.pth"
    args = dict(img_size=56, embed_dim=512, depth=24, num_heads=8, out_indices=(23,))
    with torch.device("meta"):
        shapes = InternViT(**args).state_dict()
    torch.save({k: torch.randn(v.shape).to(torch.bfloat16) for k, v in shapes.items()}, path)
    bf16 = sum(v.numel() for v in shapes.values()) * 2  # 151 MB
    grown = run("""
import torch
from internseg.models import InternViT
from internseg.models.pretrained import load_checkpoint_file
args = dict(img_size=56, embed_dim=512, depth=24, num_heads=8, out_indices=(23,))
# one-time costs (torch.load's, the first build's), paid before the baseline
load_checkpoint_file(sys.argv[1])
with torch.device("meta"):
    InternViT(**args)
base = kib("RssAnon")
model = InternViT(freeze_trunk=True, pretrained=sys.argv[1], **args)
model.init_weights()
grown = kib("RssAnon") - base
assert model(torch.randn(1, 3, 56, 56))[0].isfinite().all()
maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()
        if line.endswith(sys.argv[1])]
spans = [tuple(int(x, 16) for x in m[0].split("-")) for m in maps]
outside = [n for n, p in model.named_parameters()
           if not any(a <= p.data_ptr() < b for a, b in spans)]
assert not outside, outside
print(grown)
""", path)
    assert grown < bf16 / 1024 / 20


@pytest.mark.parametrize("experiment", ["head_tuning", "adapter_tuning"])
def test_the_trunks_file_tensors_are_left_out_of_mmengines_init_record(experiment,
                                                                       demo_assets):
    """mmengine's init_weights takes every parameter's mean twice to log which changed: for a
    trunk in the file's pages that read the whole file twice. Without the trunk's tensors in
    sight the model initialises to the same values, and they are all back afterwards."""
    import copy

    from internseg.config import load_config
    from internseg.engine.resilience import file_tensors_hidden
    from internseg.engine.segmentor import build_segmentor

    cfg = load_config(f"demo/{experiment}")
    cfg.model.backbone.pretrained = str(demo_assets["weights"])
    model = build_segmentor(cfg)
    assert model.backbone.loaded_from_file
    hidden = copy.deepcopy(model)
    params = list(hidden.parameters())
    torch.manual_seed(0)
    model.init_weights()
    torch.manual_seed(0)
    with file_tensors_hidden(hidden.backbone):
        seen = dict(hidden.named_parameters())
        hidden.init_weights()
    assert not any(k.startswith("backbone.") and hidden.backbone.is_trunk(k[9:]) for k in seen)
    assert any(k.startswith("backbone.") for k in seen) == (experiment == "adapter_tuning")
    assert [id(p) for p in hidden.parameters()] == [id(p) for p in params]
    for key, value in model.state_dict().items():
        assert torch.equal(value, hidden.state_dict()[key]), key


def test_verifying_a_checkpoint_maps_it_rather_than_reading_it_in(tmp_path):
    """Auto-resume verifies the newest checkpoint (70 GB for a trained trunk) before the model
    is built: its tensors are mapped, not read into memory (peak RSS, not only what stays)."""
    path = tmp_path / "iter_4.pth"
    weight = torch.randn(64 << 20 >> 2)  # 64 MiB
    torch.save({"state_dict": {"w": weight}}, path)
    small = tmp_path / "small.pth"
    torch.save({"state_dict": {"w": torch.zeros(4)}}, small)
    grown = run("""
from internseg.safe_load import verify_checkpoint
verify_checkpoint(sys.argv[2])  # its imports (torch) before the baseline
Path("/proc/self/clear_refs").write_text("5")
base = kib("VmHWM")
verify_checkpoint(sys.argv[1])
print(kib("VmHWM") - base)
""", path, small) * 1024
    assert grown < weight.nbytes / 8


def test_a_resume_maps_the_checkpoint_and_copies_no_trunk(tmp_path):
    """A head-tuning resume: the checkpoint's bf16 trunk becomes the trunk's storage (its
    pages, shared), nothing of the trunk's size is read into anonymous memory or copied over
    the pretrained file's pages; the values are the checkpoint's."""
    args = dict(img_size=56, embed_dim=512, depth=24, num_heads=8, out_indices=(23,))
    with torch.device("meta"):
        shapes = InternViT(**args).state_dict()
    trunk = tmp_path / "trunk.pth"
    torch.save({k: torch.randn(v.shape).to(torch.bfloat16) for k, v in shapes.items()}, trunk)
    checkpoint = tmp_path / "iter_4.pth"
    torch.save({"meta": {"iter": 4}, "state_dict": {
        k: torch.randn(v.shape).to(torch.bfloat16) for k, v in shapes.items()}}, checkpoint)
    bf16 = sum(v.numel() for v in shapes.values()) * 2  # 151 MB
    grown = run("""
import logging
from types import SimpleNamespace
import torch
from internseg.engine.resilience import InternSegRunner
from internseg.models import InternViT
args = dict(img_size=56, embed_dim=512, depth=24, num_heads=8, out_indices=(23,))
model = InternViT(freeze_trunk=True, pretrained=sys.argv[1], **args)
runner = SimpleNamespace(model=model, call_hook=lambda *a, **k: None,
                         logger=logging.getLogger("test"))
torch.load(sys.argv[2], weights_only=True, mmap=True)  # torch.load's one-time costs
base = kib("RssAnon")
InternSegRunner.load_checkpoint(runner, sys.argv[2])
grown = kib("RssAnon") - base
expected = torch.load(sys.argv[2], weights_only=True)["state_dict"]
assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()
        if line.endswith(sys.argv[2])]
spans = [tuple(int(x, 16) for x in m[0].split("-")) for m in maps]
assert all(any(a <= p.data_ptr() < b for a, b in spans) for p in model.parameters())
print(grown)
""", trunk, checkpoint)
    assert grown < bf16 / 1024 / 20
