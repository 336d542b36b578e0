"""The embedded demo: a synthetic ADEChallengeData2016.zip, synthetic COCO-Stuff-164K zips and
a tiny "pretrained" InternViT.

The data is in the exact layouts of the real archives, and a small model can learn it: each
class has its own colour and texture, so a linear probe on a random trunk already beats a
constant predictor.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import DATASETS
from .io import atomic_path


TOP = DATASETS["ade20k"].tree  # the demo's ADE20K zip holds the real zip's layout

@dataclass(frozen=True)
class Look:
    """How pixels of one class are drawn: base RGB colour and a texture."""

    label: int
    name: str
    rgb: tuple[int, int, int]
    texture: str  # smooth | hstripes | vstripes | checker | dots | grid


# ADE20K label ids (1-based, 0 = other) with their official names.
SKY = Look(3, "sky", (110, 160, 230), "smooth")
FLOOR = Look(4, "floor", (150, 110, 70), "hstripes")
OBJECTS = (
    Look(5, "tree", (40, 140, 50), "dots"),
    Look(13, "person", (200, 60, 60), "vstripes"),
    Look(21, "car", (220, 200, 40), "checker"),
    Look(2, "building", (120, 120, 130), "grid"),
)
DEMO_CLASSES = (SKY, FLOOR) + OBJECTS


def texture(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A (h, w) pattern in [-1, 1] with a random phase, so crops differ but stay recognisable."""
    yy, xx = np.mgrid[0:h, 0:w]
    dy, dx = rng.integers(0, 8, size=2)
    if kind == "smooth":
        return (yy / max(h - 1, 1)) * 0.6 - 0.3
    if kind == "hstripes":
        return np.sign(np.sin((yy + dy) * np.pi / 4))
    if kind == "vstripes":
        return np.sign(np.sin((xx + dx) * np.pi / 3))
    if kind == "checker":
        return ((((yy + dy) // 6) + ((xx + dx) // 6)) % 2) * 2.0 - 1
    if kind == "dots":
        return np.where(((yy + dy) % 7 < 3) & ((xx + dx) % 7 < 3), 1.0, -0.6)
    if kind == "grid":
        return np.where(((yy + dy) % 10 < 2) | ((xx + dx) % 10 < 2), -1.0, 0.4)
    raise ValueError(f"unknown texture {kind!r}")


def paint(img: np.ndarray, mask: np.ndarray, look: Look, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    jitter = rng.normal(0, 12, size=3)
    colour = np.clip(np.array(look.rgb) + jitter, 0, 255)
    pattern = texture(look.texture, h, w, rng)[..., None] * 45
    layer = np.clip(colour + pattern + rng.normal(0, 6, size=(h, w, 1)), 0, 255)
    img[mask] = layer[mask]


def make_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image (uint8) and its ADE20K label map (uint8, 0 = other)."""
    h, w = int(rng.integers(120, 201)), int(rng.integers(150, 261))
    img = np.zeros((h, w, 3), np.float64)
    label = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]

    horizon = int(rng.integers(h // 3, 2 * h // 3))
    for look, mask in ((SKY, yy < horizon), (FLOOR, yy >= horizon)):
        paint(img, mask, look, rng)
        label[mask] = look.label

    for _ in range(int(rng.integers(1, 4))):
        look = OBJECTS[int(rng.integers(len(OBJECTS)))]
        oh, ow = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 5, w // 2))
        y0, x0 = int(rng.integers(0, h - oh)), int(rng.integers(0, w - ow))
        if rng.random() < 0.5:
            mask = (yy >= y0) & (yy < y0 + oh) & (xx >= x0) & (xx < x0 + ow)
        else:
            cy, cx = y0 + oh / 2, x0 + ow / 2
            mask = ((yy - cy) / (oh / 2)) ** 2 + ((xx - cx) / (ow / 2)) ** 2 <= 1
        paint(img, mask, look, rng)
        label[mask] = look.label

    if rng.random() < 0.3:  # an unlabelled blob: ADE20K's "other", ignored in training
        s = int(rng.integers(8, 20))
        y0, x0 = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        img[y0:y0 + s, x0:x0 + s] = rng.integers(0, 256, size=(s, s, 3))
        label[y0:y0 + s, x0:x0 + s] = 0
    return img.astype(np.uint8), label


def _encode(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def object_info() -> str:
    """objectInfo150.txt with the demo classes' names, other slots named by index."""
    names = {look.label: look.name for look in DEMO_CLASSES}
    rows = ["Idx\tRatio\tTrain\tVal\tName"]
    rows += [f"{i}\t0\t0\t0\t{names.get(i, f'class{i}')}" for i in range(1, 151)]
    return "\n".join(rows) + "\n"


def _add(zf: zipfile.ZipFile, name: str, data: bytes | str) -> None:
    # A fixed timestamp makes the archive byte-identical for the same seed, so it can be pinned.
    zf.writestr(zipfile.ZipInfo(name, date_time=(2016, 1, 1, 0, 0, 0)), data)


def write_demo_zip(out: str | Path, n_train: int = 96, n_val: int = 16, seed: int = 0) -> Path:
    """Write a synthetic ``ADEChallengeData2016.zip`` (same layout and names as the real one)."""
    rng = np.random.default_rng(seed)
    splits = (("training", "train", n_train), ("validation", "val", n_val))
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        _add(zf, f"{TOP}/objectInfo150.txt", object_info())
        scenes = []
        for folder, tag, count in splits:
            for i in range(1, count + 1):
                stem = f"ADE_{tag}_{i:08d}"
                img, label = make_pair(rng)
                _add(zf, f"{TOP}/images/{folder}/{stem}.jpg", _encode(img, "JPEG"))
                _add(zf, f"{TOP}/annotations/{folder}/{stem}.png", _encode(label, "PNG"))
                scenes.append(f"{stem} synthetic")
        _add(zf, f"{TOP}/sceneCategories.txt", "\n".join(scenes) + "\n")
    return Path(out)


# The demo's trunk (configs/_base_/demo.py): the real InternViT class, registered small.
DEMO_TRUNK = "intern_vit_tiny_demo"
CLIP_PROJECTOR_KEYS = (
    "norm1_q.weight", "norm1_q.bias", "norm1_k.weight", "norm1_k.bias", "norm1_v.weight",
    "norm1_v.bias", "cross_attn.q_proj.weight", "cross_attn.k_proj.weight",
    "cross_attn.v_proj.weight", "cross_attn.q_bias", "cross_attn.k_bias", "cross_attn.v_bias",
    "cross_attn.proj.weight", "cross_attn.proj.bias",
)


def write_tiny_checkpoint(out: str | Path, seed: int = 0, trunk: str = DEMO_TRUNK) -> Path:
    """A randomly initialised synthetic trunk (a registered variant) saved like
    ``intern_vit_6b_224px.pth``: its pretrain grid, the same key names, and the CLIP projector
    keys that loading must drop."""
    import torch

    from .errors import InputError
    from .io import save_torch
    from .models.intern_vit import InternViT
    from .trunks import get_trunk

    variant = get_trunk(trunk)
    if not variant.synthetic:
        raise InputError(f"trunk {trunk} is a released file, not a demo stand-in to write")
    torch.manual_seed(seed)
    # the file holds every block it has, also those the trunk leaves unused (file_depth)
    architecture = variant.architecture | dict(depth=variant.file_depth or variant.depth)
    model = InternViT(img_size=variant.pretrain_size, out_indices=(variant.depth - 1,),
                        trunk_dtype="float32", **architecture)
    model.init_weights()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dim = variant.embed_dim
    for key in CLIP_PROJECTOR_KEYS:
        shape = (dim, dim) if key.endswith("proj.weight") else (dim,)
        state[f"clip_projector.{key}"] = torch.randn(shape) * 0.02
    return save_torch(out, state)


def write_released_demo(out: str | Path, experiment: str, pretrained: str | Path,
                        seed: int = 0, *, trunk: str | None = None,
                        dataset: str | None = None) -> Path:
    """A stand-in for an experiment's released segmentation checkpoint, in the original's
    layout (``models.pretrained.to_released_layout``): the demo config's segmentor with the
    tiny trunk from ``pretrained`` and seeded random heads. A frozen-trunk experiment gets a
    head-only file, as released."""
    import torch

    from .config import load_config
    from .models.pretrained import to_released_layout
    from .engine.segmentor import build_segmentor
    from .io import save_torch

    cfg = load_config(f"demo/{experiment}", trunk=trunk, dataset=dataset)
    cfg.model.backbone.pretrained = str(pretrained)
    torch.manual_seed(seed)
    model = build_segmentor(cfg)
    model.init_weights()
    state = to_released_layout(model.state_dict(), not cfg.model.backbone.freeze_trunk)
    return save_torch(out, state)


# ---------------------------------------------------------------- COCO-Stuff-164K stand-in

# Classes by their names in mmseg's COCOStuffDataset: stuff as backgrounds, things as objects.
# Their raw ids straddle the unannotated raw ids (stop sign is train id 11 but raw 12; every
# stuff class sits 11 raw ids above its train id), so an off-by-one conversion shows.
COCO_BACKGROUNDS = (("sky-other", (110, 160, 230), "smooth"),
                    ("grass", (60, 150, 60), "hstripes"),
                    ("road", (95, 95, 100), "grid"),
                    ("sea", (30, 90, 160), "vstripes"),
                    ("wall-brick", (150, 70, 50), "grid"))
COCO_OBJECTS = (("person", (200, 60, 60), "vstripes"),
                ("stop sign", (210, 30, 40), "checker"),
                ("dog", (160, 120, 60), "dots"),
                ("umbrella", (220, 200, 40), "checker"))


def coco_demo_looks() -> tuple[tuple[Look, ...], tuple[Look, ...]]:
    """The demo's backgrounds and objects, each with the RAW map value of its class."""
    from mmseg.datasets import COCOStuffDataset

    from .datasets import DATASETS

    classes = COCOStuffDataset.METAINFO["classes"]
    raw_of = {train: raw for raw, train in DATASETS["coco_stuff164k"].convert.mapping.items()}

    def looks(table):
        return tuple(Look(raw_of[classes.index(name)], name, rgb, kind)
                     for name, rgb, kind in table)

    return looks(COCO_BACKGROUNDS), looks(COCO_OBJECTS)


def make_coco_pair(rng: np.random.Generator, backgrounds, objects, size=(64, 97)):
    """One RGB image and its raw COCO-Stuff map (0..181, 255 = unlabeled): a background split
    between two stuff classes, one to three objects, sometimes an unlabeled blob."""
    h, w = int(rng.integers(*size)), int(rng.integers(*size))
    img = np.zeros((h, w, 3), np.float64)
    raw = np.full((h, w), 255, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    top, bottom = rng.choice(len(backgrounds), size=2, replace=False)
    horizon = int(rng.integers(h // 3, 2 * h // 3))
    for look, mask in ((backgrounds[top], yy < horizon), (backgrounds[bottom], yy >= horizon)):
        paint(img, mask, look, rng)
        raw[mask] = look.label
    for _ in range(int(rng.integers(1, 4))):
        look = objects[int(rng.integers(len(objects)))]
        oh, ow = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 4, w // 2))
        y0, x0 = int(rng.integers(0, h - oh)), int(rng.integers(0, w - ow))
        cy, cx = y0 + oh / 2, x0 + ow / 2
        mask = ((yy - cy) / (oh / 2)) ** 2 + ((xx - cx) / (ow / 2)) ** 2 <= 1
        paint(img, mask, look, rng)
        raw[mask] = look.label
    if rng.random() < 0.4:  # unlabeled (255): ignored in training, as in the real maps
        s = int(rng.integers(6, 14))
        y0, x0 = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        img[y0:y0 + s, x0:x0 + s] = rng.integers(0, 256, size=(s, s, 3))
        raw[y0:y0 + s, x0:x0 + s] = 255
    return img.astype(np.uint8), raw


def write_demo_coco_stuff(out_dir: str | Path, n_train: int = 48, n_val: int = 12,
                          seed: int = 0, size: tuple[int, int] = (64, 97)) -> dict[str, Path]:
    """Write synthetic ``train2017.zip``, ``val2017.zip`` and ``stuffthingmaps_trainval2017.zip``
    with the real names and layout (``<split>/<12-digit id>.jpg``, ``<split>/<id>.png``); image
    sides are drawn from ``range(*size)``. Returns the three paths by name."""
    from .datasets import DATASETS
    from .errors import InputError

    if size[0] < 32 or size[1] <= size[0]:
        raise InputError(f"demo image sides {size}: need range(a, b) with 32 <= a < b, room for "
                         "the objects and the unlabeled patch")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    backgrounds, objects = coco_demo_looks()
    # COCO ids are sparse and shared by no two images; sorted like the real listings
    ids = rng.choice(np.arange(1, 600_000), size=n_train + n_val, replace=False)
    splits = (("train2017", sorted(ids[:n_train])), ("val2017", sorted(ids[n_train:])))
    sources = DATASETS["coco_stuff164k"].sources
    image_zip = {split: s.name for s in sources if s.holds == "images" for split in s.splits}
    maps_zip = next(s.name for s in sources if s.holds == "raw_labels")
    paths = {name: out_dir / name for name in (*image_zip.values(), maps_zip)}
    with atomic_path(paths[maps_zip]) as maps_tmp, \
            zipfile.ZipFile(maps_tmp, "w", zipfile.ZIP_STORED) as maps:
        for split, split_ids in splits:
            _add(maps, f"{split}/", b"")
            with atomic_path(paths[image_zip[split]]) as tmp, \
                    zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as images:
                _add(images, f"{split}/", b"")
                for image_id in split_ids:
                    img, raw = make_coco_pair(rng, backgrounds, objects, size)
                    _add(images, f"{split}/{image_id:012d}.jpg", _encode(img, "JPEG"))
                    _add(maps, f"{split}/{image_id:012d}.png", _encode(raw, "PNG"))
    return paths
