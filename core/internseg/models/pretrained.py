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

log = logging.getLogger("internseg")

# The 224 px checkpoint carries InternVL's CLIP projector next to the trunk; it is not part
# of the segmentation backbone.
DROPPED_PREFIXES = ("clip_projector.",)
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
    """Bicubic resize of a (1, 1 + H*W, C) position embedding; the cls slot is kept as is."""
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    c = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c).to(pos_embed.dtype)
    return torch.cat([cls, grid], dim=1)


def adapt_backbone_state(state: dict[str, torch.Tensor], model: nn.Module,
                         source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Map a pretrained trunk state dict onto ``model``: drop projector keys, resize pos_embed.

    Raises :class:`CheckpointError` for a tensor whose shape cannot be adapted.
    """
    state = {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}
    target = model.state_dict()
    out = {}
    for key, value in state.items():
        if key not in target:
            out[key] = value  # reported as unexpected by load_state_dict
            continue
        want = target[key].shape
        if problem := kind_problem(value, target[key]):
            raise CheckpointError(f"{source}: {key} is {problem}")
        if value.shape == want:
            out[key] = value
        elif key == "patch_embed.proj.weight" and value.shape[:2] == want[:2]:
            # another patch size than the file's (the adapter's 16 on the 14-patch 224 px
            # file): the kernel resized bicubic, as the fork loads it
            out[key] = F.interpolate(value.float(), size=tuple(want[2:]), mode="bicubic",
                                     align_corners=False).to(value.dtype)
        elif key == "pos_embed" and value.shape[-1] == want[-1]:
            old = math.isqrt(value.shape[1] - 1)
            new = math.isqrt(want[1] - 1)
            if old * old != value.shape[1] - 1 or new * new != want[1] - 1:
                raise CheckpointError(
                    f"{source}: pos_embed {tuple(value.shape)} is not a square grid + cls token")
            out[key] = resize_pos_embed(value, (old, old), (new, new))
        else:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(value.shape)}, model expects {tuple(want)}")
    return out


def drop_unused_blocks(state: dict[str, torch.Tensor], depth: int,
                       file_depth: int | None) -> dict[str, torch.Tensor]:
    """A file with more blocks than the trunk builds (``file_depth`` > ``depth``: the 448px
    V1-0 file has 48, its ablations use 45) loses the blocks past ``depth``, as the fork's
    non-strict load leaves them unused. Only the blocks it declares are dropped: any other
    extra key is still an error."""
    if not file_depth or file_depth <= depth:
        return state
    unused = tuple(f"blocks.{i}." for i in range(depth, file_depth))
    dropped = [k for k in state if k.startswith(unused)]
    if dropped:
        log.info("pretrained file has %d blocks, the trunk uses %d: %d tensors of blocks "
                 "%d..%d left out", file_depth, depth, len(dropped), depth, file_depth - 1)
    return {k: v for k, v in state.items() if not k.startswith(unused)}


def load_pretrained_backbone(model: nn.Module, path: str | Path,
                             pretrain_size: int = 224) -> tuple[list[str], list[str]]:
    """Load an ``intern_vit_6b_224px.pth``-format file into an InternViT6B.

    Every trunk tensor must come from the file, and every tensor of the file (but the known
    projector) must go into the trunk: a file with other key names (e.g. a ``backbone.``
    prefix) would otherwise train on a random trunk. Raises :class:`CheckpointError` naming
    the file and the first keys; returns the (empty) missing and unexpected key lists.
    """
    state = drop_unused_blocks(load_checkpoint_file(path), model.depth,
                               getattr(model, "pretrained_depth", None))
    state = adapt_backbone_state(state, model, source=str(path))
    result = model.load_state_dict(state, strict=False)
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
