"""Loading checkpoints that come from outside: the pretrained trunk and released segmentors.

Every outside checkpoint goes through :func:`load_checkpoint_file` (``weights_only=True``, via
:func:`internseg.safe_load.safe_load`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..safe_load import CheckpointError, safe_load
from ..trunks import get_trunk

log = logging.getLogger("internseg")

WRAPPER_KEYS = ("module", "state_dict", "model")


def load_checkpoint_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely and unwrap ``module`` / ``state_dict`` / ``model`` wrappers.

    The tensors are memory-mapped views of the file (:func:`safe_load`), to be copied into a
    model: reading them in first held the 11.8 GB trunk twice on a rank while it loaded."""
    path = Path(path)
    obj = safe_load(path, mmap=True)
    while isinstance(obj, dict):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found")
    # DataParallel / DDP prefixes
    return {k.removeprefix("module."): v for k, v in obj.items()}


def kind_problem(value: torch.Tensor, want: torch.Tensor) -> str | None:
    """Why ``value`` cannot be copied into ``want`` as the same kind of number, or None:
    ``load_state_dict`` would copy a complex tensor into real weights dropping its imaginary
    part, and int8 codes (a quantized file) into floats as if they were weights."""
    if value.is_complex() or value.is_floating_point() != want.is_floating_point():
        return f"{value.dtype}, the model holds {want.dtype}"
    return None


def check_fits(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path,
               original=lambda key: key) -> None:
    """Every tensor of ``state`` the model has fits it: same shape, same kind of number.
    Refused otherwise, naming the file and the keys (``original``: the key in the file's own
    layout, where it differs from ours), before anything is copied."""
    wrong = []
    for key, value in state.items():
        want = target.get(key)
        if want is None:
            continue  # reported as unexpected by the caller
        problem = (f"shape {tuple(value.shape)}, the model's {tuple(want.shape)}"
                   if value.shape != want.shape else kind_problem(value, want))
        if problem:
            name = key if original(key) == key else f"{key} ({original(key)} in the file)"
            wrong.append(f"{name}: {problem}")
    if wrong:
        more = f"; and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        raise CheckpointError(f"{path} does not fit the config: {'; '.join(wrong[:3])}{more}")


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int],
                     new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a (1, 1 + H*W, C) position embedding, the cls slot kept as is:
    mmseg's ViT resize, computed in fp32 (a bf16 file's grid is widened first)."""
    from mmseg.models.backbones.vit import VisionTransformer

    return VisionTransformer.resize_pos_embed(pos_embed.float(), new_grid, old_grid,
                                              "bicubic").to(pos_embed.dtype)


# The original keeps the resamplers in its backbone (`backbone.up1` .. `up4`); ours are the neck.
RELEASED_KEY_PREFIXES = {f"backbone.up{i}.": f"neck.up{i}." for i in range(1, 5)}


def checkpoint_filter(state: dict[str, torch.Tensor], model: nn.Module,
                      source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """An outside checkpoint's tensors mapped onto ``model``, as timm's
    ``checkpoint_filter_fn`` does for its variants: the pretrained trunk file onto a trunk
    (``InternViT``), a released segmentor onto a segmentor (its trunk under ``backbone.``).

    - the CLIP projector the 224px file carries beside the trunk is dropped;
    - the original's resamplers (``backbone.upN.``) become our neck (``neck.upN.``);
    - blocks past the trunk's depth are dropped when its file declares them (``file_depth``:
      V1-0's 48 of which its ablations use 45), as the fork's non-strict load leaves them;
    - the position grid and a patch kernel of another size are resized bicubic (the adapter's
      patch 16 on the 14-patch file; 16x16 -> 36x36 at 504 px), as the fork loads them.
    Any other key or shape is kept as it is, for :func:`check_fits` and ``load_state_dict``
    to report. (mmengine's ``revise_keys`` only renames, inside its own non-strict loader.)
    """
    prefix, trunk = ("backbone.", model.backbone) if hasattr(model, "backbone") else ("", model)
    depth, file_depth = trunk.depth, getattr(trunk, "pretrained_depth", None)
    unused = tuple(f"{prefix}blocks.{i}." for i in range(depth, file_depth or depth))
    dropped = (f"{prefix}clip_projector.", *unused)
    if unused and any(k.startswith(unused) for k in state):
        log.info("%s has %d blocks, the trunk uses %d: blocks %d..%d left out", source,
                 file_depth, depth, depth, file_depth - 1)
    target = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.startswith(dropped):
            continue
        old = next((p for p in RELEASED_KEY_PREFIXES if key.startswith(p)), None)
        if old:
            key = RELEASED_KEY_PREFIXES[old] + key.removeprefix(old)
        out[key] = value if key not in target else _fitted(key.removeprefix(prefix), value,
                                                          target[key].shape, source)
    return out


def _fitted(key: str, value: torch.Tensor, want: torch.Size, source: str) -> torch.Tensor:
    if value.shape == want:
        return value
    if key == "patch_embed.proj.weight" and value.shape[:2] == want[:2]:
        return F.interpolate(value.float(), size=tuple(want[2:]), mode="bicubic",
                             align_corners=False).to(value.dtype)
    if key == "pos_embed" and value.shape[-1] == want[-1]:
        old, new = math.isqrt(value.shape[1] - 1), math.isqrt(want[1] - 1)
        if old * old != value.shape[1] - 1 or new * new != want[1] - 1:
            raise CheckpointError(
                f"{source}: pos_embed {tuple(value.shape)} is not a square grid + cls token")
        return resize_pos_embed(value, (old, old), (new, new))
    return value


def released_name(key: str) -> str:
    """Our key in the original's released layout (the resamplers inside its backbone)."""
    for old, new in RELEASED_KEY_PREFIXES.items():
        if key.startswith(new):
            return old + key.removeprefix(new)
    return key


def to_released_layout(state: dict, with_trunk: bool) -> dict:
    """Our segmentor state in the layout of the original's released files, the inverse of
    :func:`checkpoint_filter` for them; written for the demo's stand-in "released" files.

    - resamplers back inside the backbone (``neck.upN.`` -> ``backbone.upN.``);
    - ``with_trunk=False`` (frozen-trunk files) keeps heads and resamplers only;
    - every floating-point tensor in bf16 (the released files' sizes are 2 bytes per value,
      heads included), integer buffers (BN counters) as they are;
    - a plain state dict, no ``meta`` / ``state_dict`` wrapper.
    Our other names already are the original's (trunk, ``decode_head.norm``, UperNet).
    """
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.") and not with_trunk:
            continue
        value = value.detach().cpu()
        out[released_name(key)] = (value.to(torch.bfloat16) if value.is_floating_point()
                                   else value.clone())
    return out


def stored_like(value: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """``value`` in the dtype ``want`` is stored in, and on its device unless that is meta:
    ``value`` itself where both already agree."""
    device = value.device if want.device.type == "meta" else want.device
    return value.to(device=device, dtype=want.dtype)


# The key filters a trunk's file can be read with, by the name its entry gives (``key_filter``
# in internseg.trunks): a family whose files name their keys otherwise adds its own.
KEY_FILTERS = {"internvit": checkpoint_filter}


def load_pretrained_backbone(model: nn.Module, path: str | Path,
                             pretrain_size: int = 224) -> tuple[list[str], list[str]]:
    """Give an InternViT the tensors of an ``intern_vit_6b_224px.pth``-format file.

    A trunk on the meta device (built to be filled by the file) gets the file's tensors
    themselves (``assign``): one already in the dtype the model stores stays a view of the
    memory-mapped file (no copy; the pages are shared by a node's ranks), any other is cast
    once. A trunk with storage of its own has the values copied in, so its parameters stay
    the objects an optimizer may already hold.

    Every trunk tensor must come from the file, and every tensor of the file (but the known
    projector) must go into the trunk: a file with other key names (e.g. a ``backbone.``
    prefix) would otherwise train on a random trunk. Raises :class:`CheckpointError` naming
    the file and the first keys; returns the (empty) missing and unexpected key lists.
    """
    trunk = getattr(model, "trunk", None)
    key_filter = KEY_FILTERS[get_trunk(trunk).key_filter] if trunk else checkpoint_filter
    state = key_filter(load_checkpoint_file(path), model, source=str(path))
    target = model.state_dict()
    check_fits(state, target, path)
    on_meta = any(target[k].is_meta for k in state if k in target)
    if on_meta:
        state = {k: stored_like(v, target[k]) if k in target else v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False, assign=on_meta)
    # a backbone with parts of its own (the adapter) says which keys the file must fill
    missing = [k for k in result.missing_keys if model.is_trunk(k)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the trunk: missing {missing[:3]} "
                              f"({len(missing)}), unexpected {unexpected[:3]} "
                              f"({len(unexpected)})")
    log.info("loaded pretrained trunk %s (trained at %d px): %d tensors", path, pretrain_size,
             len(state))
    return missing, unexpected
