"""Experiment configs: finding them, loading them, and shrinking a paper config to the demo."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mmengine.config import Config

from .errors import InputError, MissingFileError

CONFIG_ROOT = Path(__file__).parent / "configs"
PRESETS = ("paper", "demo")

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


def workflow_sources(path: str | Path, workdir: str | Path) -> list[str]:
    """:func:`config_sources` as a workflow records its inputs: relative to ``workdir`` when
    inside it (a moved checkout keeps its recorded inputs), absolute otherwise."""
    workdir = Path(workdir).resolve()
    return [str(p.relative_to(workdir)) if p.is_relative_to(workdir) else str(p)
            for p in config_sources(path)]


def cfg_options_args(options: dict) -> list[str]:
    """``--cfg-options`` words for a dict of overrides, in the form mmengine's ``DictAction``
    parses back to the same values: strings as they are, everything else as compact JSON
    (lists, numbers, booleans, null). Empty options give no words."""
    words = []
    for key, value in options.items():
        if not isinstance(key, str) or not key or "=" in key or " " in key:
            raise InputError(f"cfg_options: key {key!r} is not a dotted config key")
        if isinstance(value, dict):
            raise InputError(f"cfg_options.{key}: give a dict's keys one by one "
                             f"({key}.<name>: value), not a dict")
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        words.append(f"{key}={text}")
    return ["--cfg-options", *words] if words else []


def load_config(path: str | Path, cfg_options: dict | None = None, *,
                import_modules: bool = True) -> Config:
    """Read a config file (a path or ``<preset>/<experiment>``), apply its ``demo`` block and
    ``cfg_options``, then derive what follows from the trunk and the iteration counts (so
    ``max_iters=...`` rescales the schedule and ``trunk=...`` the widths).

    An option naming a key the config does not have, or giving a value of another type than
    the config's, is refused: mmengine would accept it and ignore it or fail hours later.
    ``import_modules=False`` skips the config's ``custom_imports`` (torch, mmseg): reading an
    experiment's metadata needs neither."""
    path = resolve_config_path(path)
    try:
        cfg = Config.fromfile(str(path), import_custom_modules=import_modules)
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
    written_for = cfg.get("trunk")
    if cfg_options:
        cfg.merge_from_dict(checked_options(cfg, cfg_options, path))
        if cfg.get("trunk") != written_for and written_for is not None:
            retarget_blocks(cfg, written_for, set(cfg_options), path)
    apply_trunk(cfg, path)
    add_option_hooks(cfg, path)
    return finalize_schedule(cfg)


def add_option_hooks(cfg: Config, source: Path | str = "config") -> Config:
    """The hooks the config's switches ask for, added once (a dumped config already has
    them): ``keep_best_checkpoints`` N > 0 keeps the N best validations' weights
    (BestWeightsHook), ``ema_momentum`` m trains an EMA of the weights (mmengine's EMAHook),
    which is then validated and exported. Both off in the paper configs, as in the original."""
    hooks = cfg.get("custom_hooks", [])
    present = {hook.get("type") for hook in hooks}
    keep = cfg.get("keep_best_checkpoints", 0)
    if keep and "BestWeightsHook" not in present:
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            raise InputError(f"{source}: keep_best_checkpoints is {keep!r}; an integer >= 0")
        hooks.append(dict(type="BestWeightsHook", metric="mIoU", keep=keep))
    momentum = cfg.get("ema_momentum")
    if momentum is not None and "EMAHook" not in present:
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
                0 < momentum < 1):
            raise InputError(f"{source}: ema_momentum is {momentum!r}; a number in (0, 1)")
        hooks.append(dict(type="EMAHook", momentum=float(momentum), update_buffers=True))
    cfg.custom_hooks = hooks
    return cfg


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
        if re.fullmatch(r"param_scheduler\.\d+\.(begin|end)", key):
            raise InputError(f"--cfg-options {given}: derived from the iteration counts "
                             f"({', '.join(ITERATION_COUNTS)}); set those instead")
        if key in TRUNK_KEYS:
            raise InputError(f"--cfg-options {given}: fixed by the trunk ({cfg.get('trunk')}); "
                             "choose another with trunk=<name>")
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


# Iteration counts a scheduler's begin/end may name: the config states them once.
ITERATION_COUNTS = ("max_iters", "warmup_iters")
# Backbone and optimizer keys that follow from the registered trunk (apply_trunk).
TRUNK_KEYS = {f"model.backbone.{k}" for k in
              ("embed_dim", "depth", "num_heads", "patch_size", "pretrain_size",
               "pretrained_depth")} | {
    "optim_wrapper.paramwise_cfg.num_layers"}


def finalize_schedule(cfg: Config) -> Config:
    """Derive the loop length and the schedulers' ``begin``/``end`` from the config's iteration
    counts, whatever the schedule's shape: a ``begin`` or ``end`` given as the name of a count
    (``"warmup_iters"``, ``"max_iters"``) is resolved from it. The symbolic schedule is kept
    (``schedule``), so a dumped config re-derives from it and a new ``max_iters`` changes
    loop and schedule together.

    mmengine reaches a scheduler's final value at step ``end - 1``, hence ``end`` = count + 1:
    a warmup to ``warmup_iters`` is complete there and a poly to ``max_iters`` reaches 0 there,
    as in the original.
    """
    for name in ITERATION_COUNTS:
        if name not in cfg:
            continue
        if isinstance(cfg[name], bool) or not isinstance(cfg[name], int) or cfg[name] < 1:
            raise InputError(f"{name} must be an integer >= 1, got {cfg[name]!r}")
    if "max_iters" not in cfg:
        raise InputError("the config states no max_iters (the training length)")
    schedule = cfg.get("schedule") or cfg.param_scheduler
    resolved = []
    for index, step in enumerate(schedule):
        step = dict(step)
        for bound in ("begin", "end"):
            value = step.get(bound)
            if isinstance(value, str):
                if value not in ITERATION_COUNTS or value not in cfg:
                    raise InputError(f"param_scheduler[{index}].{bound} = {value!r}: not one "
                                     f"of this config's counts {[c for c in ITERATION_COUNTS if c in cfg]}")
                step[bound] = cfg[value] + (1 if bound == "end" else 0)
        resolved.append(step)
    cfg.schedule = [dict(step) for step in schedule]
    cfg.param_scheduler = resolved
    cfg.train_cfg.max_iters = cfg.max_iters
    return cfg


def apply_trunk(cfg: Config, source: Path | str = "config") -> Config:
    """Write the registered trunk's architecture into the backbone, and its width into what
    reads the backbone's maps (neck, heads), its depth into the layer-wise decay."""
    from .trunks import get_trunk

    if "trunk" not in cfg:
        raise InputError(f"{source}: no `trunk = \"<registered trunk>\"`")
    trunk = get_trunk(cfg.trunk)
    model = cfg.model
    architecture = trunk.architecture
    if "patch_size" in cfg:
        # an experiment may run the trunk at another patch size (the adapter's 16 on the
        # 14-patch file): its kernel is resized at load
        architecture["patch_size"] = cfg.patch_size
    model.backbone.update(architecture)
    bad = [i for i in model.backbone.out_indices if not 0 <= i < trunk.depth]
    if bad:
        raise InputError(f"{source}: out_indices {bad} outside trunk {trunk.name}'s "
                         f"0..{trunk.depth - 1}")
    dim = trunk.embed_dim
    if model.get("neck"):
        model.neck.embed_dim = dim
    for name in ("decode_head", "auxiliary_head"):
        head = model.get(name)
        if head:
            levels = head.get("in_index", 0)
            head.in_channels = [dim] * len(levels) if isinstance(levels, (list, tuple)) else dim
    cfg.optim_wrapper.paramwise_cfg.num_layers = trunk.depth
    return cfg


def retarget_blocks(cfg: Config, written_for: str, given: set[str], source) -> Config:
    """A config written for trunk ``written_for`` run on ``cfg.trunk``: the blocks its heads
    read (``out_indices``) or, for the adapter, the ranges its interactions span, moved to
    the blocks that play the same role (:meth:`Trunk.corresponding_block`), unless the options
    set them too. Each range ends where it ended (a tap) and starts after the previous one."""
    from .trunks import get_trunk

    old, new = get_trunk(written_for), get_trunk(cfg.trunk)
    backbone = cfg.model.backbone

    def moved(block):
        try:
            return new.corresponding_block(block, old)
        except ValueError as err:
            raise InputError(f"{source}: trunk={new.name}: {err}; set "
                             "model.backbone.out_indices for it") from None

    adapter = "interaction_indexes" in backbone  # its out_indices are levels, not blocks
    if not adapter and "model.backbone.out_indices" not in given:
        backbone.out_indices = [moved(b) for b in backbone.out_indices]
    if adapter and "model.backbone.interaction_indexes" not in given:
        ends = [moved(last) for _, last in backbone.interaction_indexes]
        starts = [0] + [end + 1 for end in ends[:-1]]
        ranges = [[first, last] for first, last in zip(starts, ends)]
        if any(first > last for first, last in ranges):
            raise InputError(f"{source}: trunk={new.name}: the adapter's interaction ranges "
                             f"{backbone.interaction_indexes} have no counterpart ({ranges}); "
                             "set model.backbone.interaction_indexes for it")
        backbone.interaction_indexes = ranges
    return cfg


# What a `demo` block must say; configs/_base_/demo.py gives all but out_indices.
DEMO_SETTINGS = ("trunk", "out_indices", "max_iters", "crop", "head_channels", "batch_size",
                 "lr", "evaluations")


def shrink(cfg: Config, **settings) -> Config:
    """Scale a paper config down in place for the CPU demo: the tiny trunk, a small crop, a
    short budget. The structure (heads, frozen or trained trunk, losses, pipelines, schedule
    shape) is untouched, so the demo runs the paper's code paths."""
    unknown = set(settings) - set(DEMO_SETTINGS)
    missing = set(DEMO_SETTINGS) - set(settings)
    if unknown or missing:
        raise InputError(f"demo settings: unknown {sorted(unknown)}, missing {sorted(missing)}; "
                         f"a demo block holds {list(DEMO_SETTINGS)}")
    d = settings
    crop, old_crop = d["crop"], cfg.model.data_preprocessor.size[0]
    scale = crop / old_crop
    model = cfg.model
    cfg.trunk = d["trunk"]
    model.backbone.update(img_size=crop, out_indices=list(d["out_indices"]))
    model.data_preprocessor.size = (crop, crop)
    model.test_cfg.update(crop_size=(crop, crop),
                          stride=tuple(round(s * scale) for s in model.test_cfg.stride))
    for name in ("decode_head", "auxiliary_head"):
        if "channels" in model.get(name, {}):
            model[name].channels = d["head_channels"]

    cfg.optim_wrapper.optimizer.lr = d["lr"]
    max_iters = d["max_iters"]
    if "warmup_iters" in cfg:
        cfg.warmup_iters = max(1, round(cfg.warmup_iters * max_iters / cfg.max_iters))
    cfg.max_iters = max_iters
    every = max(1, max_iters // d["evaluations"])
    cfg.train_cfg.val_interval = every
    cfg.default_hooks.checkpoint.interval = every
    cfg.default_hooks.logger.interval = max(1, max_iters // 10)

    def scaled(size):
        return tuple(round(s * scale) for s in size)

    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.update(num_workers=0, persistent_workers=False)
        for step in loader.dataset.pipeline:
            if step.type in ("RandomResize", "Resize"):
                step.scale = scaled(step.scale)
            elif step.type == "RandomCrop":
                step.crop_size = (crop, crop)
            elif step.type == "ShortSideResize":
                step.short_side = crop
    cfg.train_dataloader.batch_size = d["batch_size"]
    cfg.total_batch_size = d["batch_size"]
    return cfg
