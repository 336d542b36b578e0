"""What a GPU job does before its first iteration, timed on this CPU with the peak resident
memory (RSS) of each step: head tuning (``paper/head_tuning``, frozen trunk) on one rank.

    python benchmarks/startup.py --work /tmp/startup              # full size (writes 12 GB)
    python benchmarks/startup.py --work /tmp/startup --depth 12   # the first 12 blocks only
    python benchmarks/startup.py --checkpoint FILE ...            # reuse a written trunk file
    python benchmarks/startup.py --work /tmp/startup --tiny       # the demo trunk (smoke run)

The job runs through `internseg train`'s own functions and mmengine's Runner, as
:func:`internseg.engine.train.run_training` calls them, and stops when the first iteration
begins: config load, run identity, the Runner's model build, the train loop, optimizer and
schedulers, weight initialisation (random, then the pretrained trunk through
:func:`internseg.models.pretrained.load_pretrained_backbone`), and the first batch. Beside it,
every paper config's segmentor is built on the meta device (what `internseg plan` does).

The trunk file is written once, in the released layout of ``intern_vit_6b_224px.pth``: random
bf16 tensors under the key names recorded in ``tests/facts/experiments.yaml``
(``backbone.checkpoint_keys``), with the shapes that follow from its architecture (3200 wide,
MLP 12800, patch 14, a 16x16 position grid and a cls token), plus the 14 ``clip_projector.*``
keys that loading drops. Their names are the demo's record (``internseg.demo``); their shapes
are our inference (InternVL-C's attention-pooling projector: q/k/v 3200 -> 3200, output
3200 -> 768), not a recorded fact. The file is deleted afterwards unless ``--keep``.

Beside the job, the same file is read cold (dropped from the page cache first) with plain
sequential reads: the disk's limit for this file, the floor of any start that loads it. The
report gives the start (imports + the job's steps) over that read time.

``--save-checkpoint FILE`` saves the job's checkpoint once its first iteration begins (the
whole model: the bf16 trunk and the heads in fp32, 13 GB at full size); ``--resume-from
FILE`` then times a resume from it, read cold, against its own cold read time.

``--tiny`` runs the same job on the demo's tiny trunk (the config moved to it as
``--trunk intern_vit_tiny_demo`` moves it): a smoke run of every step, not a measurement.

On a GPU the Runner moves the model to the device before it initialises the weights, so the
random initialisation and the copy out of the file run there; every other step is host work,
as here. ``--depth N`` builds and writes the first N blocks (the taps spread over them), so a
machine too small for the whole job can still compare two versions of the code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
EMBED, MLP, PATCH, GRID = 3200, 12800, 14, 16  # the 224 px file: 16 x 16 patches of 14 px
CLIP_OUT = 768  # our inference, see the module docstring


def status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


class Memory:
    """Peak RSS since the last reset (the kernel's VmHWM, reset through clear_refs), and the
    peaks of its anonymous and file-backed parts, sampled: a memory-mapped file's pages are
    file-backed, shared by the ranks of a node and dropped by the kernel under pressure."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.anon = max(self.anon, status_kib("RssAnon"))
            self.file = max(self.file, status_kib("RssFile"))

    def reset(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")
        self.anon, self.file = status_kib("RssAnon"), status_kib("RssFile")

    def peaks(self) -> dict:
        self.anon = max(self.anon, status_kib("RssAnon"))
        self.file = max(self.file, status_kib("RssFile"))
        return dict(peak_rss_gib=round(status_kib("VmHWM") / 2**20, 2),
                    peak_anon_gib=round(self.anon / 2**20, 2),
                    peak_file_gib=round(self.file / 2**20, 2))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Steps:
    """Consecutive steps: each `begin` ends the step before it."""

    def __init__(self, memory: Memory):
        self.memory = memory
        self.rows: list[dict] = []
        self._current: tuple[str, float] | None = None

    def begin(self, name: str) -> None:
        self.end()
        self.memory.reset()
        self._current = (name, time.perf_counter())

    def end(self) -> None:
        if self._current is None:
            return
        name, started = self._current
        row = dict(step=name, seconds=round(time.perf_counter() - started, 2),
                   **self.memory.peaks())
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        self._current = None


def trunk_shapes(depth: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released trunk file, keys from the recorded facts."""
    import yaml

    sys.path.insert(0, str(REPO / "tests"))
    from released_layout import names

    from internseg.demo import CLIP_PROJECTOR_KEYS

    facts = yaml.safe_load((REPO / "tests/facts/experiments.yaml").read_text())
    pattern = facts["backbone"]["checkpoint_keys"].split(";")[0]
    keys = names(pattern.replace("{0..47}", f"{{0..{depth - 1}}}"))
    per_block = {"attn.qkv.weight": (3 * EMBED, EMBED), "attn.proj.weight": (EMBED, EMBED),
                 "mlp.fc1.weight": (MLP, EMBED), "mlp.fc1.bias": (MLP,),
                 "mlp.fc2.weight": (EMBED, MLP)}
    stem = {"patch_embed.proj.weight": (EMBED, 3, PATCH, PATCH), "patch_embed.proj.bias": (EMBED,),
            "pos_embed": (1, 1 + GRID * GRID, EMBED), "cls_token": (1, 1, EMBED)}
    shapes = {k: stem.get(k) or per_block.get(re.sub(r"^blocks\.\d+\.", "", k), (EMBED,))
              for k in keys}
    for key in CLIP_PROJECTOR_KEYS:
        if key.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            shape = (EMBED, EMBED)
        elif key == "cross_attn.proj.weight":
            shape = (CLIP_OUT, EMBED)
        elif key == "cross_attn.proj.bias":
            shape = (CLIP_OUT,)
        else:
            shape = (EMBED,)
        shapes[f"clip_projector.{key}"] = shape
    return shapes


def write_trunk_file(path: Path, depth: int) -> dict:
    """The released-layout trunk file, random bf16, flushed and dropped from the page cache so
    that the job reads it from disk as a freshly fetched file."""
    import torch

    from internseg.io import save_torch

    started = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen, dtype=torch.bfloat16).mul_(0.02)
             for k, shape in trunk_shapes(depth).items()}
    save_torch(path, state)
    del state
    drop_from_page_cache(path)
    return dict(step="write the trunk file (not part of a job)",
                seconds=round(time.perf_counter() - started, 1),
                file_gib=round(path.stat().st_size / GIB, 2))


def cold_read(path: Path, chunk: int = 64 * 2**20) -> dict:
    """The whole file read from disk (its pages dropped from the cache first), in large
    sequential reads into one reused buffer: how fast this disk delivers this file."""
    drop_from_page_cache(path)
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    started = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            total += n
    seconds = time.perf_counter() - started
    drop_from_page_cache(path)
    return dict(step=f"cold read of {path.name} (the disk's limit; not part of the job)",
                seconds=round(seconds, 3), bytes=total, gib=round(total / GIB, 2),
                gib_per_s=round(total / GIB / max(seconds, 1e-9), 2))


def drop_from_page_cache(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def demo_data(work: Path) -> Path:
    import zipfile

    from internseg.demo import write_demo_zip

    root = work / "data"
    if not (root / "ADEChallengeData2016").is_dir():
        archive = write_demo_zip(work / "ADEChallengeData2016.zip", n_train=8, n_val=2)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(root)
    return root / "ADEChallengeData2016"


def meta_builds() -> list[dict]:
    """Every paper config's segmentor on the meta device: config load and build, seconds."""
    from internseg.config import load_config
    from internseg.engine.segmentor import build_segmentor
    from internseg.registry import experiments

    rows = []
    for name in experiments("paper"):
        started = time.perf_counter()
        cfg = load_config(f"paper/{name}")
        loaded = time.perf_counter()
        cfg.model.backbone.pretrained = None
        model = build_segmentor(cfg, device="meta")
        rows.append(dict(config=f"paper/{name}", load_s=round(loaded - started, 2),
                         meta_build_s=round(time.perf_counter() - loaded, 2),
                         params=sum(p.numel() for p in model.parameters())))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def shallower(cfg, depth: int) -> None:
    """The first ``depth`` blocks of the trunk, the four taps spread over them as over 48."""
    from internseg.config import backbone_architecture

    backbone = cfg.model.backbone
    # no registered trunk: the same architecture with fewer blocks
    backbone.update(trunk=None, **backbone_architecture(backbone) | dict(
        depth=depth, pretrained_depth=None))
    backbone.out_indices = [depth * (i + 1) // 4 - 1 for i in range(4)]


class FirstIteration(Exception):
    """Raised when the first iteration begins: startup is over."""


def job(checkpoint: Path, work: Path, depth: int, steps: Steps, trunk: str | None,
        resume_from: Path | None = None, save_to: Path | None = None) -> None:
    """`internseg train` (run_training) of paper/head_tuning on one rank, up to its first
    iteration, with a step boundary at each phase."""
    from mmengine.hooks import Hook

    from internseg.engine import train
    from internseg.engine.identity import make_identity, settle_work_dir
    from internseg.engine.resilience import InternSegRunner
    from internseg.models import intern_vit

    steps.begin("config load")
    opts = train.TrainOptions(config="paper/head_tuning", work_dir=str(work / "job"),
                              data_root=str(demo_data(work)), pretrained=str(checkpoint),
                              trunk=trunk, resume_from=resume_from and str(resume_from))
    cfg = train.build_train_config(opts, with_start=False)
    if trunk is None and depth != 48:
        shallower(cfg, depth)
    steps.begin("run identity (sidecar present, as `internseg fetch` leaves it)")
    identity = make_identity(cfg, split=None, pretrained=str(checkpoint), load_from=None,
                             data_root=opts.data_root)
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type="RunIdentityHook", digest=identity["digest"])]
    settle_work_dir(cfg.work_dir, identity)
    steps.begin("start chosen (a checkpoint to resume verified: pickle and CRC-32)")
    train.choose_start(cfg, opts)

    class TimedRunner(InternSegRunner):
        def load_checkpoint(self, *args, **kwargs):
            steps.begin("resume: the checkpoint loaded")
            loaded = super().load_checkpoint(*args, **kwargs)
            steps.begin("resume: the rest (optimizer, schedulers)")
            return loaded

        def build_model(self, model):
            steps.begin("Runner: model build")
            built = super().build_model(model)
            steps.begin("Runner: the rest of its construction (device, logger, visualizer)")
            return built

    class Marks(Hook):
        priority = "VERY_HIGH"

        def before_run(self, runner) -> None:
            steps.begin("init weights (random: heads, and the trunk without a file)")

        def before_train(self, runner) -> None:
            steps.begin("first batch (data workers start)")

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            raise FirstIteration

    original = intern_vit.load_pretrained_backbone

    # the trunk's load is timed wherever it happens: in the weight initialisation before
    # the trunk was built from its file, in the model build since
    def timed_load(*args, **kwargs):
        steps.begin("pretrained trunk read and loaded")
        result = original(*args, **kwargs)
        steps.begin("after the trunk's load, the rest of its step")
        return result

    intern_vit.load_pretrained_backbone = timed_load
    steps.begin("Runner: construction before the model")
    runner = TimedRunner.from_cfg(cfg)
    runner.register_hook(Marks())
    steps.begin("train loop, optimizer and schedulers")
    try:
        runner.train()
    except FirstIteration:
        steps.end()
        if save_to is not None:  # the full-size checkpoint a resume is measured from
            runner.save_checkpoint(str(save_to.parent), save_to.name, save_optimizer=True,
                                   save_param_scheduler=True, by_epoch=False)
    else:
        raise RuntimeError("training ended without a first iteration")


def identity_without_sidecar(checkpoint: Path) -> dict:
    """What `internseg train --pretrained FILE` costs without the `.sha256` sidecar that
    `internseg fetch` writes: one more read of the whole file, to hash it."""
    from internseg.engine.identity import recorded_sha256
    from internseg.hub import _record

    sidecar = Path(f"{checkpoint}.sha256")
    sidecar.unlink(missing_ok=True)
    started = time.perf_counter()
    digest = recorded_sha256(checkpoint)
    seconds = time.perf_counter() - started
    _record(checkpoint, digest)
    drop_from_page_cache(checkpoint)
    return dict(step="run identity without a sidecar (hashes the whole file; not in the job "
                "below)", seconds=round(seconds, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument("--depth", type=int, default=48, help="trunk blocks (48: full size)")
    parser.add_argument("--checkpoint", type=Path, help="a trunk file written before "
                        "(with --depth blocks); default: write one and delete it after")
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny trunk "
                        "(a smoke run of every step; --depth is ignored)")
    parser.add_argument("--keep", action="store_true", help="keep the written trunk file")
    parser.add_argument("--save-checkpoint", type=Path, help="after the first iteration "
                        "began, save the job's checkpoint there (what --resume-from reads)")
    parser.add_argument("--resume-from", type=Path, help="resume the job from this "
                        "checkpoint (read cold) instead of starting it")
    parser.add_argument("--out", type=Path, help="JSON to write")
    args = parser.parse_args()
    if not 4 <= args.depth <= 48:
        parser.error(f"--depth {args.depth}: 4 to 48 blocks")
    args.work.mkdir(parents=True, exist_ok=True)
    memory = Memory()
    import torch

    import internseg.plugin  # noqa: F401  (what the config's custom_imports load)
    from internseg.demo import DEMO_TRUNK, write_tiny_checkpoint

    report = dict(machine=f"{os.cpu_count()} CPUs, "
                          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GIB:.0f} GiB",
                  torch=torch.__version__, threads=torch.get_num_threads(), depth=args.depth,
                  imports=dict(seconds=round(time.perf_counter() - START, 2), **memory.peaks()))
    print(json.dumps(report), flush=True)
    report["meta_builds"] = [] if args.tiny else meta_builds()
    trunk = DEMO_TRUNK if args.tiny else None
    checkpoint = args.checkpoint or args.work / f"{trunk or 'intern_vit_6b_224px'}.pth"
    written = args.checkpoint is None
    try:
        if written and args.tiny:
            write_tiny_checkpoint(checkpoint)
        elif written:
            report["written"] = write_trunk_file(checkpoint, args.depth)
            print(json.dumps(report["written"]), flush=True)
        # the file the start reads the most of: the trunk, or the checkpoint it resumes from
        report["cold_read"] = cold_read(args.resume_from or checkpoint)
        print(json.dumps(report["cold_read"]), flush=True)
        if args.resume_from:
            drop_from_page_cache(checkpoint)
        report["identity_without_sidecar"] = identity_without_sidecar(checkpoint)
        print(json.dumps(report["identity_without_sidecar"]), flush=True)
        steps = Steps(memory)
        job(checkpoint, args.work, args.depth, steps, trunk, args.resume_from,
            args.save_checkpoint)
        report["job"] = steps.rows
        start = report["imports"]["seconds"] + sum(row["seconds"] for row in steps.rows)
        report["start_s"] = round(start, 2)
        report["start_over_read"] = round(start / max(report["cold_read"]["seconds"], 1e-9), 2)
        print(json.dumps(dict(start_s=report["start_s"],
                              start_over_read=report["start_over_read"])), flush=True)
    finally:
        if written and not args.keep:
            checkpoint.unlink(missing_ok=True)
            Path(f"{checkpoint}.sha256").unlink(missing_ok=True)
        memory.close()
    if args.out:
        from internseg.io import write_json

        write_json(args.out, report)


if __name__ == "__main__":
    main()
