"""Experiment configs: finding them, loading them, and shrinking a paper config to the demo."""

from __future__ import annotations

import re
from pathlib import Path

from mmengine.config import Config

from .errors import InputError, MissingFileError

CONFIG_ROOT = Path(__file__).parent / "configs"
PRESETS = ("paper", "demo")

# The demo's tiny InternViT and its training budget; everything not named here is the paper's.
DEMO_DEFAULTS = dict(
    embed_dim=96,
    depth=4,
    num_heads=4,
    crop=112,
    head_channels=32,
    batch_size=4,
    # A random 96-wide trunk learns nothing in a few hundred steps at the paper's 4e-5.
    lr=2e-3,
    evaluations=2,
)


def config_path(preset: str, experiment: str) -> Path:
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose from {PRESETS}")
    path = CONFIG_ROOT / preset / f"{experiment}.py"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_ROOT / preset).glob("[!_]*.py"))
        raise MissingFileError(f"no {preset} config for experiment {experiment!r} "
                               f"(known: {', '.join(known)})")
    return path


def resolve_config_path(path: str | Path) -> Path:
    """A config file, given as a path or as ``<preset>/<experiment>``."""
    path = Path(path)
    if not path.is_file() and len(path.parts) == 2 and path.parts[0] in PRESETS:
        path = config_path(path.parts[0], path.stem)
    if not path.is_file():
        raise MissingFileError(f"config not found: {path}")
    return path


def config_sources(path: str | Path) -> list[Path]:
    """The config file and every file its ``_base_`` chain inherits, each once: what the
    resolved config is made of (read without executing the files, as mmengine reads
    ``_base_``)."""
    sources, pending = [], [resolve_config_path(path).resolve()]
    while pending:
        current = pending.pop(0)
        if current in sources:
            continue
        sources.append(current)
        for base in Config._get_base_files(str(current)):
            pending.append(Path(Config._get_cfg_path(base, str(current))[0]).resolve())
    return sources


def experiments(preset: str = "paper") -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / preset).glob("[!_]*.py"))


def load_config(path: str | Path, cfg_options: dict | None = None) -> Config:
    """Read a config file (a path or ``<preset>/<experiment>``), apply its ``demo`` block and
    ``cfg_options``, then derive the schedule (so ``max_iters=...`` rescales it).

    An option naming a key the config does not have, or giving a value of another type than
    the config's, is refused: mmengine would accept it and ignore it or fail hours later."""
    path = resolve_config_path(path)
    try:
        cfg = Config.fromfile(str(path))
    except SyntaxError as err:
        where = err.filename if err.filename and not err.filename.startswith("<") else path
        raise InputError(f"{where}:{err.lineno}: {err.msg}") from None
    except Exception as err:
        # a config is code: whatever stops it loading (a missing _base_, a NameError) is
        # the file's problem, named with it
        raise InputError(f"{path}: cannot load config ({type(err).__name__}: {err})") from None
    if "demo" in cfg:
        # applied once: a dumped config must reload as it ran, CLI overrides included
        shrink(cfg, **cfg.pop("demo"))
    if cfg_options:
        cfg.merge_from_dict(checked_options(cfg, cfg_options, path))
    return finalize_schedule(cfg)


# Top-level keys the Runner takes that a config may leave out (mmengine's defaults apply).
RUNNER_KEYS = ("work_dir", "experiment_name", "randomness", "resume", "load_from", "launcher",
               "auto_scale_lr", "env_cfg", "log_level", "default_scope", "custom_hooks")
# Loop length and scheduler ends are derived from these (finalize_schedule): an option on
# the derived key is moved to its source, so that loop and schedule cannot disagree.
DERIVED_KEYS = {"train_cfg.max_iters": "max_iters"}


def checked_options(cfg: Config, options: dict, source: Path) -> dict:
    """``--cfg-options`` with every key verified to exist in ``cfg`` and every value to have
    the type the config gives it (an int where a float is expected is fine)."""
    out = {}
    for given, value in options.items():
        key = DERIVED_KEYS.get(given, given)
        if re.fullmatch(r"param_scheduler\.\d+\.end", key):
            raise InputError(f"--cfg-options {given}: derived from warmup_iters and max_iters; "
                             "set those instead")
        if key in out and out[key] != value:
            raise InputError(f"--cfg-options: {key} given twice ({out[key]!r} and {value!r})")
        out[key] = value
        *parents, leaf = key.split(".")
        node = cfg.to_dict()
        for i, part in enumerate(parents):
            node = _child(node, part)
            if node is None or not isinstance(node, (dict, list)):
                raise InputError(f"--cfg-options {given}: {'.'.join(parents[:i + 1])} is not a "
                                 f"section of {source}")
        if isinstance(node, list):
            current = _child(node, leaf)
            present = current is not None
        else:
            present = leaf in node
            current = node.get(leaf)
        if not present:
            if not parents and leaf in RUNNER_KEYS:
                continue
            known = sorted(node) if isinstance(node, dict) else list(range(len(node)))
            raise InputError(f"--cfg-options {given}: no such key in {source} "
                             f"(known here: {', '.join(map(str, known))})")
        _check_type(given, current, value)
    return out


def _child(node, part: str):
    if isinstance(node, list):
        in_range = part.isdigit() and int(part) < len(node)
        return node[int(part)] if in_range else None
    return node.get(part) if isinstance(node, dict) else None


def _check_type(key: str, current, value) -> None:
    if current is None or value is None:
        return
    if isinstance(current, bool) or isinstance(value, bool):
        ok = isinstance(current, bool) and isinstance(value, bool)
    elif isinstance(current, (int, float)):
        ok = isinstance(value, int) or (isinstance(value, float) and isinstance(current, float))
    elif isinstance(current, str):
        ok = isinstance(value, str)
    elif isinstance(current, dict):
        ok = isinstance(value, dict)
    elif isinstance(current, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = True
    if not ok:
        raise InputError(f"--cfg-options {key}={value!r}: expected {type(current).__name__} "
                         f"like the config's {current!r}")


def finalize_schedule(cfg: Config) -> Config:
    """Derive the loop length and the scheduler ends from ``max_iters`` / ``warmup_iters``,
    the one source of the iteration count: they are always recomputed (a dumped config holds
    the same values), so changing ``max_iters`` changes loop and schedule together.

    mmengine reaches a scheduler's final value at step ``end - 1``, hence the + 1: warmup is
    complete at ``warmup_iters`` and the poly factor reaches 0 at ``max_iters``, as in the
    original.
    """
    warmup, poly = cfg.param_scheduler
    if (warmup.type, poly.type) != ("LinearLR", "PolyLR"):
        raise InputError(f"expected [LinearLR, PolyLR] schedulers, got {warmup.type}, {poly.type}")
    for name in ("max_iters", "warmup_iters"):
        if isinstance(cfg[name], bool) or not isinstance(cfg[name], int) or cfg[name] < 1:
            raise InputError(f"{name} must be an integer >= 1, got {cfg[name]!r}")
    warmup.end = cfg.warmup_iters + 1
    poly.end = cfg.max_iters + 1
    cfg.train_cfg.max_iters = cfg.max_iters
    return cfg


def shrink(cfg: Config, *, out_indices: list[int], max_iters: int, **overrides) -> Config:
    """Scale a paper config down in place: tiny trunk, small crop, few iterations.

    The structure (heads, frozen or trained trunk, losses, pipelines, schedule shape) is
    untouched, so the demo runs the paper's code paths.
    """
    unknown = set(overrides) - set(DEMO_DEFAULTS)
    if unknown:
        raise InputError(f"unknown demo settings {sorted(unknown)}; known: {sorted(DEMO_DEFAULTS)}")
    d = {**DEMO_DEFAULTS, **overrides}
    dim, crop = d["embed_dim"], d["crop"]
    model = cfg.model

    model.backbone.update(img_size=crop, embed_dim=dim, depth=d["depth"],
                          num_heads=d["num_heads"], out_indices=list(out_indices))
    model.data_preprocessor.size = (crop, crop)
    model.test_cfg.update(crop_size=(crop, crop), stride=(round(crop * 322 / 504),) * 2)
    if model.get("neck"):
        model.neck.embed_dim = dim
    head = model.decode_head
    if head.type == "LinearHead":
        head.in_channels = dim
    else:
        head.update(in_channels=[dim] * len(head.in_channels), channels=d["head_channels"])
    if model.get("auxiliary_head"):
        model.auxiliary_head.update(in_channels=dim, channels=d["head_channels"])

    cfg.optim_wrapper.optimizer.lr = d["lr"]
    cfg.optim_wrapper.paramwise_cfg.num_layers = d["depth"]

    cfg.warmup_iters = max(1, round(cfg.warmup_iters * max_iters / cfg.max_iters))
    cfg.max_iters = max_iters
    every = max(1, max_iters // d["evaluations"])
    cfg.train_cfg.val_interval = every
    cfg.default_hooks.checkpoint.interval = every
    cfg.default_hooks.logger.interval = max(1, max_iters // 10)

    for step in cfg.train_dataloader.dataset.pipeline:
        if step.type == "RandomResize":
            step.scale = (4 * crop, crop)
        elif step.type == "RandomCrop":
            step.crop_size = (crop, crop)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.update(num_workers=0, persistent_workers=False)
        for step in loader.dataset.pipeline:
            if step.type == "Resize":
                step.scale = (4 * crop, crop)
            elif step.type == "ShortSideResize":
                step.short_side = crop
    cfg.train_dataloader.batch_size = d["batch_size"]
    cfg.total_batch_size = d["batch_size"]
    return cfg
