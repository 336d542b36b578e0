"""Released checkpoints as the original wrote them, built from recorded key names only.

The names come from tests/facts/released_keys.yaml (copied from the reference facts); the
shapes follow from each named layer's definition (recorded in the same file) at a tiny size.
Nothing here looks at our modules: a fixture built from our own state_dict would agree with our
loader by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

FACTS = Path(__file__).parent / "facts" / "released_keys.yaml"
BN = "{weight,bias,running_mean,running_var,num_batches_tracked}"


def facts() -> dict:
    return yaml.safe_load(FACTS.read_text())


def _split_top(text: str) -> list[str]:
    """Split on commas outside braces."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in parts + [cur] if p.strip()]


def expand(pattern: str) -> list[str]:
    """Shell-style brace expansion: {a,b}, {0..3}, nested; `bn.*` is a BatchNorm's five."""
    pattern = re.sub(r"\s+", "", pattern).replace("bn.*", f"bn.{BN}")
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    if re.fullmatch(r"\d+\.\.\d+", body):
        lo, hi = map(int, body.split(".."))
        options = [str(i) for i in range(lo, hi + 1)]
    else:
        options = body.split(",")
    return [k for o in options
            for k in expand(pattern[:m.start()] + o + pattern[m.end():])]


def names(text: str) -> list[str]:
    text = re.sub(r"\([^)]*\)", "", text)  # drop the parenthetical notes
    return [k for part in _split_top(text) for k in expand(part)]


@dataclass(frozen=True)
class Tiny:
    """Sizes of the tiny stand-in: the demo configs' trunk (96 wide, 4 blocks, 84 px crop)."""

    dim: int = 96
    depth: int = 4
    grid: int = 6          # 84 px / 14
    channels: int = 32     # UperNet / auxiliary channels
    classes: int = 150


def trunk_names(t: Tiny) -> list[str]:
    keys = names(facts()["trunk_keys"].replace("{0..47}", f"{{0..{t.depth - 1}}}"))
    return ["backbone." + k for k in keys]


def shape_of(key: str, t: Tiny, head_type: str) -> tuple[int, ...]:
    """Each layer's parameter shapes from its definition (PyTorch conventions)."""
    c, ch, k = t.dim, t.channels, t.classes
    if key.endswith("num_batches_tracked"):
        return ()
    if key.startswith("backbone."):
        rule = key.removeprefix("backbone.")
        if rule.startswith("up"):  # ConvTranspose2d(C, C, 2): weight (in, out, 2, 2); LN (C,)
            return (c, c, 2, 2) if rule.endswith("weight") and rule[4] in "03" else (c,)
        table = {"patch_embed.proj.weight": (c, 3, 14, 14), "pos_embed": (1, 1 + t.grid ** 2, c),
                 "cls_token": (1, 1, c), "attn.qkv.weight": (3 * c, c),
                 "attn.proj.weight": (c, c), "mlp.fc1.weight": (4 * c, c),
                 "mlp.fc1.bias": (4 * c,), "mlp.fc2.weight": (c, 4 * c)}
        tail = re.sub(r"^blocks\.\d+\.", "", rule)
        return table.get(tail, (c,))
    head, _, rest = key.partition(".")
    if rest.startswith("conv_seg."):
        width = c if (head == "decode_head" and head_type == "linear") else ch
        return (k, width, 1, 1) if rest.endswith("weight") else (k,)
    if rest.startswith("norm."):  # the linear head's BN over the tapped map
        return (c,)
    if ".bn." in rest:
        return (ch,)
    conv = {"psp_modules": (ch, c, 1, 1), "bottleneck": (ch, c + 4 * ch, 3, 3),
            "lateral_convs": (ch, c, 1, 1), "fpn_convs": (ch, ch, 3, 3),
            "fpn_bottleneck": (ch, 4 * ch, 3, 3), "convs": (ch, c, 3, 3)}
    return conv[rest.split(".")[0]]


def released_state(head: str, with_trunk: bool, t: Tiny = Tiny(),
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """A plain state dict as the original saved it: every float bf16, BN counters int64."""
    f = facts()
    if head == "linear":
        keys = names(f["released_keys"]["linear_head"])
    else:
        keys = (names(f["resampler_params"]) + names(f["upernet_head"])
                + names(f["auxiliary_head"]))
    if with_trunk:
        keys = trunk_names(t) + keys
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in keys:
        shape = shape_of(key, t, head)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(80000)
        elif key.endswith("running_var"):
            state[key] = (torch.rand(shape, generator=gen) + 0.5).to(torch.bfloat16)
        else:
            state[key] = (0.02 * torch.randn(shape, generator=gen)).to(torch.bfloat16)
    return state
