"""Experiment configs: finding them, loading them, and moving one to another trunk or dataset.

A config file is the run: ``mmengine.Config.fromfile`` on it gives what ``internseg train``
runs, and mmseg's own tools can use it (with ``custom_imports`` importing our plugin). A run on
another registered trunk or dataset is the same file moved there by :func:`move_to_trunk` /
:func:`move_to_dataset`, the one path for each; ``--cfg-options`` are checked against the
file (:func:`checked_options`). The config a run dumps is this resolution, so it reloads as
it ran. A demo config is derived: its paper config on the demo trunk with the one demo
schedule (:func:`demo_config`).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmengine.config import Config

from .datasets import Dataset, dataset_of_type, get_dataset
from .errors import InputError, MissingFileError, ModelArgumentError
from .trunks import Trunk, get_trunk

CONFIG_ROOT = Path(__file__).parent / "configs"
PRESETS = ("paper", "demo")


DEMO_DIR = CONFIG_ROOT / "demo"
# The one demo schedule every demo config is derived with (demo_config)
DEMO_SCHEDULE = CONFIG_ROOT / "_base_" / "demo.py"


def config_files(preset: str) -> list[Path]:
    """The experiments of a preset: its config files (``_``-prefixed ones are parts). Every
    paper experiment is a demo experiment too, at ``configs/demo/<name>.py``, a file only
    where the row wants other demo settings (:func:`demo_config`)."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose from {PRESETS}")
    if preset == "demo":
        return [DEMO_DIR / path.name for path in config_files("paper")]
    return sorted((CONFIG_ROOT / preset).glob("[!_]*.py"))


def config_path(preset: str, experiment: str) -> Path:
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose from {PRESETS}")
    path = CONFIG_ROOT / preset / f"{experiment}.py"
    if not _exists(path):
        known = sorted(p.stem for p in config_files(preset))
        raise MissingFileError(f"no {preset} config for experiment {experiment!r} "
                               f"(known: {', '.join(known)})")
    return path


def resolve_config_path(path: str | Path) -> Path:
    """A config file, given as a path or as ``<preset>/<experiment>``."""
    path = Path(path)
    if not _exists(path) and len(path.parts) == 2 and path.parts[0] in PRESETS:
        path = config_path(path.parts[0], path.stem)
    if not _exists(path):
        raise MissingFileError(f"config not found: {path}")
    return path


def _is_demo(path: Path) -> bool:
    return path.parent.resolve() == DEMO_DIR.resolve()


def _paper_of(demo: Path) -> Path:
    return CONFIG_ROOT / "paper" / demo.name


def _exists(path: Path) -> bool:
    """A config file, or a demo config derived from its paper config (no file of its own)."""
    return path.is_file() or (_is_demo(path) and _paper_of(path).is_file())


def config_sources(path: str | Path) -> list[Path]:
    """The config file and every file its ``_base_`` chain inherits, each once: what the
    resolved config is made of (read without executing the files, as mmengine reads
    ``_base_``)."""
    path = resolve_config_path(path).resolve()
    pending = [path] if path.is_file() else []
    if _is_demo(path):  # derived: also its paper config's chain and the demo schedule
        pending += [_paper_of(path).resolve(), DEMO_SCHEDULE.resolve()]
    sources = []
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


def load_config(path: str | Path, cfg_options: dict | None = None, *, trunk: str | None = None,
                dataset: str | None = None, import_modules: bool = True) -> Config:
    """Read a config file (a path or ``<preset>/<experiment>``), move it to ``trunk`` and
    ``dataset`` when they are not its own, then apply ``cfg_options``.

    An option naming a key the config does not have, or giving a value of another type than
    the config's, is refused: mmengine would accept it and ignore it or fail hours later.
    ``import_modules=False`` skips the config's ``custom_imports`` (torch, mmseg): reading an
    experiment's facts needs neither."""
    path = resolve_config_path(path)
    cfg = demo_config(path, import_modules) if _is_demo(path) else _copy_of(path, import_modules)
    given = set(cfg_options or {})
    if trunk and trunk != trunk_of(cfg, path).name:
        move_to_trunk(cfg, get_trunk(trunk), given, path)
    if dataset and dataset != dataset_of(cfg, path).name:
        move_to_dataset(cfg, get_dataset(dataset))
    if cfg_options:
        options = checked_options(cfg, cfg_options, path)
        follow_loop_length(cfg, options)
        cfg.merge_from_dict(options)
        check_schedule_lasts(cfg, options)
    check_fits_trunk(cfg, path)
    return cfg


def _copy_of(path: Path, import_modules: bool) -> Config:
    return copy.deepcopy(_read(path, import_modules, path.stat().st_mtime_ns))


def demo_config(path: Path, import_modules: bool = True) -> Config:
    """The CPU demo's config of an experiment: its paper config moved to the demo trunk, then
    the one demo schedule (``configs/_base_/demo.py``): the crop and every size that scales
    with it, the batch, the lr, the heads' width, the iterations (the paper's, scaled per
    setting) and what ends with them. ``configs/demo/<name>.py``, where it exists, is the
    paper config with what the row's demo does otherwise (a block, the adapter's CPU
    optimizer) and a ``demo_schedule`` of its own settings; what it states is what runs
    (neither moved nor scheduled over: an edit to it is an edit to the run)."""
    paper = _copy_of(_paper_of(path), import_modules)
    cfg, stated = paper, {}
    if path.is_file():
        cfg = _copy_of(path, import_modules)  # its _delete_ replacements applied
        paper_leaves = leaves(paper.to_dict())
        stated = {key: value for key, value in leaves(cfg.to_dict()).items()
                  if paper_leaves.get(key, _ABSENT) != value}
    schedule = dict(_copy_of(DEMO_SCHEDULE, False).demo_schedule)
    schedule.update(cfg.pop("demo_schedule", {}))
    stated = {key: value for key, value in stated.items() if key.split(".")[0] in cfg}
    setting = setting_of(cfg)
    move_to_trunk(cfg, get_trunk(schedule["trunk"]), set(stated), path)
    crop, paper_crop = schedule["crop"], paper.model.data_preprocessor.size[0]

    def scaled(size):
        return (tuple(round(v * crop / paper_crop) for v in size) if isinstance(size, tuple)
                else round(size * crop / paper_crop))

    model = cfg.model
    model.data_preprocessor.size = (crop, crop)
    model.backbone.img_size = crop
    model.test_cfg.crop_size = (crop, crop)
    model.test_cfg.stride = scaled(tuple(model.test_cfg.stride))
    for name in ("decode_head", "auxiliary_head"):
        if model.get(name) and model[name].type != "LinearHead":
            model[name].channels = schedule["head_channels"]
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].update(num_workers=0, persistent_workers=False)
        # new steps: a config's loaders may share one pipeline (test_dataloader = val_dataloader)
        cfg[loader].dataset.pipeline = [
            {key: scaled(value) if key in ("scale", "crop_size", "short_side") else value
             for key, value in step.items()} for step in cfg[loader].dataset.pipeline]
    cfg.train_dataloader.batch_size = cfg.total_batch_size = schedule["batch_size"]
    cfg.optim_wrapper.optimizer.lr = schedule["lr"]
    paper_iters = paper.train_cfg.max_iters
    iters = schedule["max_iters"][setting] * paper_iters // schedule["paper_iters"]
    cfg.train_cfg.update(max_iters=iters, val_interval=iters // 2)
    for step in cfg.param_scheduler:
        # one that ends with the loop still does; a warmup keeps its share, at least a step
        step.end = (iters + 1 if step.end == paper_iters + 1
                    else max(1, round((step.end - 1) * iters / paper_iters)) + 1)
    cfg.default_hooks.checkpoint.interval = iters // 2
    cfg.default_hooks.logger.interval = iters // 10
    cfg.merge_from_dict(stated)
    return cfg


_ABSENT = object()


def leaves(node, prefix: str = "") -> dict:
    """A nested dict as ``{dotted.key: value}``, the form ``--cfg-options`` name keys in."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out |= leaves(value, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): node}


def setting_of(cfg) -> str:
    """The regime a config trains, as the papers name it: what it trains (adapter, trunk or
    head) and on how much of the data."""
    backbone = cfg.model.backbone
    if backbone.type == "InternViTAdapter":
        return "adapter tuning"
    linear = cfg.model.decode_head.type == "LinearHead"
    if backbone.get("freeze_trunk"):
        return "linear probing" if linear else "head tuning"
    return "few-shot" if linear else "full tuning"


@functools.lru_cache(maxsize=64)
def _read(path: Path, import_modules: bool, mtime_ns: int) -> Config:
    """A config file as mmengine reads it, read once per version of the file in a process
    (the workflow resolves one experiment for every trunk and dataset it moves to)."""
    try:
        return Config.fromfile(str(path), import_custom_modules=import_modules)
    except SyntaxError as err:
        where = err.filename if err.filename and not err.filename.startswith("<") else path
        raise InputError(f"{where}:{err.lineno}: {err.msg}") from None
    except Exception as err:
        # a config is code: whatever stops it loading (a missing _base_, a NameError) is
        # the file's problem, named with it
        raise InputError(f"{path}: cannot load config ({type(err).__name__}: {err})") from None


def trunk_of(cfg: Config, source: Path | str = "config") -> Trunk:
    """The registered trunk a config's backbone names."""
    name = cfg.model.backbone.get("trunk")
    if not name:
        raise InputError(f"{source}: model.backbone names no trunk "
                         "(trunk=\"<registered trunk>\", internseg.trunks)")
    try:
        return get_trunk(name)
    except InputError as err:
        raise InputError(f"{source}: model.backbone.trunk: {err}") from None


def backbone_architecture(backbone) -> dict:
    """Width, depth, heads, patch and pretrain grid of a backbone config: its registered
    trunk's, with the patch it states (InternViT builds the same)."""
    trunk = get_trunk(backbone.trunk)
    return trunk.architecture_with({key: backbone.get(key) for key in trunk.architecture})


def dataset_of(cfg: Config, source: Path | str = "config") -> Dataset:
    """The registered dataset a config trains on (its training dataloader's class)."""
    try:
        return dataset_of_type(cfg.train_dataloader.dataset.type)
    except InputError as err:
        raise InputError(f"{source}: {err}") from None


def check_fits_trunk(cfg: Config, source: Path | str = "config") -> None:
    """Blocks a head reads must exist in the trunk: known before the model is built."""
    trunk = trunk_of(cfg, source)
    backbone = cfg.model.backbone
    key = "interaction_indexes" if "interaction_indexes" in backbone else "out_indices"
    blocks = ([b for r in backbone.interaction_indexes for b in r]
              if key == "interaction_indexes" else backbone.out_indices)
    bad = [i for i in blocks if not 0 <= i < trunk.depth]
    if bad:
        raise InputError(f"{source}: model.backbone.{key}: blocks {bad} outside trunk "
                         f"{trunk.name}'s 0..{trunk.depth - 1}")


# Backbone arguments a registered trunk fixes: a config chooses another trunk instead.
TRUNK_KEYS = {f"model.backbone.{k}" for k in
              ("trunk", "embed_dim", "depth", "num_heads", "pretrain_size", "pretrained_depth",
               "mlp_ratio", "norm", "qkv_bias", "qk_normalization", "layerscale_init",
               "norm_eps")}


# Variables of the config files (configs/_base_/datasets/): the sections that use them took
# copies of their values when the file was read, so an option on one would be recorded in the
# dumped config and change nothing. What to set instead:
READ_TIME_VARIABLES = {
    "crop_size": "the train pipeline's RandomCrop crop_size "
                 "(train_dataloader.dataset.pipeline.<i>.crop_size) and model.test_cfg.crop_size",
    "data_root": "--data-root",
    "dataset_type": "--dataset",
}


def checked_options(cfg: Config, options: dict, source: Path) -> dict:
    """``--cfg-options`` with every key verified to exist in ``cfg`` and every value to have
    the type the config gives it (an int where a float is expected is fine)."""
    out = {}
    for key, value in options.items():
        if key in TRUNK_KEYS:
            raise InputError(f"--cfg-options {key}: fixed by the trunk "
                             f"({cfg.model.backbone.get('trunk')}); choose another with --trunk")
        if key in READ_TIME_VARIABLES:
            raise InputError(f"--cfg-options {key}={value}: a variable of the config file, "
                             "copied where the file uses it when it is read: it would be "
                             f"recorded and change nothing; set {READ_TIME_VARIABLES[key]}")
        out[key] = value
        *parents, leaf = key.split(".")
        node = cfg.to_dict()
        for i, part in enumerate(parents):
            node = _child(node, part)
            if node is None or not isinstance(node, (dict, list)):
                raise InputError(f"--cfg-options {key}: {'.'.join(parents[:i + 1])} is not a "
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
            raise InputError(f"--cfg-options {key}: no such key in {source} "
                             f"(known here: {', '.join(map(str, known))})")
        _check_type(key, current, value)
    return out


def follow_loop_length(cfg: Config, options: dict) -> None:
    """An option that changes ``train_cfg.max_iters`` moves the schedulers that end with the
    loop (``end`` = max_iters + 1, configs/_base_/default_runtime.py) along with it, so that a
    shortened run still decays to 0; a scheduler option given with it wins."""
    new = options.get("train_cfg.max_iters")
    if new is None:
        return
    old = cfg.train_cfg.max_iters
    for index, step in enumerate(cfg.param_scheduler):
        key = f"param_scheduler.{index}.end"
        if step.get("end") == old + 1 and key not in options:
            options[key] = new + 1


def check_schedule_lasts(cfg: Config, options: dict) -> None:
    """Options that end the schedule before the loop are refused: mmengine then holds the
    last scheduler's final value (the poly decay's eta_min, 0) for the rest of the run."""
    steps, iters = cfg.get("param_scheduler") or [], cfg.train_cfg.get("max_iters")
    ends = [step.get("end") for step in steps if isinstance(step.get("end"), int)]
    if not ends or not isinstance(iters, int) or max(ends) >= iters:
        return
    given = [f"{key}={value}" for key, value in options.items()
             if key == "train_cfg.max_iters" or key.startswith("param_scheduler.")]
    if given:
        raise InputError(f"--cfg-options {' '.join(given)}: the schedule ends at iteration "
                         f"{max(ends)} of train_cfg.max_iters={iters}, and the lr would stay at "
                         f"its last value for the other {iters - max(ends)}; to shorten the "
                         "run, set train_cfg.max_iters alone (the schedule's end follows it)")


# Top-level keys the Runner takes that a config may leave out (mmengine's defaults apply).
RUNNER_KEYS = ("work_dir", "experiment_name", "randomness", "resume", "load_from", "launcher",
               "auto_scale_lr", "env_cfg", "log_level", "default_scope", "custom_hooks")
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


def move_to_trunk(cfg: Config, trunk: Trunk, given: set[str], source) -> Config:
    """The config written for its trunk, run on ``trunk``: the blocks its heads read
    (``out_indices``) or, for the adapter, the ranges its interactions span, moved to the
    blocks that play the same role (:meth:`Trunk.corresponding_block`) unless ``given``
    options set them; each range ends where it ended (a tap) and starts after the previous
    one. Where the trunk is another width, so are the resamplers and the heads' inputs."""
    old, backbone = trunk_of(cfg, source), cfg.model.backbone
    backbone.trunk = trunk.name
    # a config written for one trunk states its block (norm, qkv bias, ...): the new trunk's
    backbone.update({key: value for key, value in trunk.block.items() if key in backbone})

    def moved(block):
        try:
            return trunk.corresponding_block(block, old)
        except ValueError as err:
            raise InputError(f"{source}: --trunk {trunk.name}: {err}; set "
                             "model.backbone.out_indices for it") from None

    adapter = "interaction_indexes" in backbone  # its out_indices are levels, not blocks
    if not adapter and "model.backbone.out_indices" not in given:
        backbone.out_indices = [moved(b) for b in backbone.out_indices]
    if adapter and "model.backbone.interaction_indexes" not in given:
        ends = [moved(last) for _, last in backbone.interaction_indexes]
        starts = [0] + [end + 1 for end in ends[:-1]]
        ranges = [[first, last] for first, last in zip(starts, ends)]
        if any(first > last for first, last in ranges):
            raise InputError(f"{source}: --trunk {trunk.name}: the adapter's interaction "
                             f"ranges {backbone.interaction_indexes} have no counterpart "
                             f"({ranges}); set model.backbone.interaction_indexes for it")
        backbone.interaction_indexes = ranges
    if trunk.embed_dim != old.embed_dim:
        model = cfg.model
        if model.get("neck"):
            model.neck.embed_dim = trunk.embed_dim
        for name in ("decode_head", "auxiliary_head"):
            head = model.get(name)
            if head:
                levels = head.get("in_index", 0)
                head.in_channels = ([trunk.embed_dim] * len(levels)
                                    if isinstance(levels, (list, tuple)) else trunk.embed_dim)
    return cfg


def move_to_dataset(cfg: Config, dataset: Dataset) -> Config:
    """The config written for its dataset, run on ``dataset``: each dataloader's dataset class,
    data root, folders and label handling, and every head's class count; pipelines, schedule
    and model stay (the fork's ADE20K and COCO-Stuff configs differ in nothing else)."""
    for name, split in (("train_dataloader", "train"), ("val_dataloader", "val"),
                        ("test_dataloader", "val")):
        loader = cfg.get(name)
        if loader:
            loader.dataset.update(type=dataset.mmseg_type, data_root=dataset.data_root,
                                  reduce_zero_label=dataset.reduce_zero_label,
                                  data_prefix=dataset.data_prefix(split))
    for name in ("decode_head", "auxiliary_head"):
        if cfg.model.get(name):
            cfg.model[name].num_classes = dataset.num_classes
    return cfg


def _section_of(node, owner: str, at: str) -> str | None:
    """The dotted path of the section of ``node`` whose ``type`` is ``owner``."""
    if isinstance(node, dict):
        if node.get("type") == owner:
            return at
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        return None
    return next((found for key, value in items
                 if (found := _section_of(value, owner, f"{at}.{key}"))), None)


@contextmanager
def building_model(cfg: Config, source) -> Iterator[None]:
    """Build the model of ``cfg`` inside this: an argument one of our model classes cannot be
    built with (:class:`ModelArgumentError`, e.g. adapter heads that do not divide the
    trunk's width) is one line naming the config and the key path,
    ``model.backbone.deform_num_heads``; it is known only when the class builds."""
    try:
        yield
    except ModelArgumentError as err:
        section = _section_of(cfg.model.to_dict(), err.owner, "model") or f"model ({err.owner})"
        raise InputError(f"{source}: {section}.{err.argument}: {err.problem}") from None


def sync_bn_to_bn(obj):
    """Replace every SyncBN norm config by BN: SyncBN needs a process group."""
    if isinstance(obj, dict):
        out = {k: sync_bn_to_bn(v) for k, v in obj.items()}
        if out.get("type") == "SyncBN":
            out["type"] = "BN"
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(sync_bn_to_bn(v) for v in obj)
    return obj


def apply_run_options(cfg: Config, *, data_root: str | None, pretrained: str | None,
                      launcher: str) -> None:
    """What training and evaluation both take from the command line."""
    if data_root:
        for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
            if cfg.get(name):
                cfg[name].dataset.data_root = str(data_root)
    if pretrained:
        cfg.model.backbone.pretrained = str(pretrained)
    cfg.launcher = launcher
    import torch

    if launcher == "none" or not torch.cuda.is_available():
        # SyncBN needs a process group, and torch's runs on GPUs only: the config the run
        # dumps says BN, as it ran
        cfg.model = sync_bn_to_bn(cfg.model.to_dict())


