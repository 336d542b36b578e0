"""Host memory while a job builds its model and loads the pretrained trunk: one copy of the
trunk, in the dtype it is stored in (benchmarks/startup.py measures the full size)."""

import subprocess
import sys

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
