"""Experiment configs: finding them, loading them, and shrinking a paper config to the demo."""

from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

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
        raise ValueError(f"unknown preset {preset!r}; choose from {PRESETS}")
    path = CONFIG_ROOT / preset / f"{experiment}.py"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_ROOT / preset).glob("[!_]*.py"))
        raise FileNotFoundError(f"no {preset} config for experiment {experiment!r} "
                                f"(known: {', '.join(known)})")
    return path


def experiments(preset: str = "paper") -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / preset).glob("[!_]*.py"))


def load_config(path: str | Path, cfg_options: dict | None = None) -> Config:
    """Read a config file (a path or ``<preset>/<experiment>``), apply its ``demo`` block and
    ``cfg_options``, then derive the schedule (so ``max_iters=...`` rescales it)."""
    path = Path(path)
    if not path.is_file() and len(path.parts) == 2 and path.parts[0] in PRESETS:
        path = config_path(path.parts[0], path.stem)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    cfg = Config.fromfile(str(path))
    if "demo" in cfg:
        # applied once: a dumped config must reload as it ran, CLI overrides included
        shrink(cfg, **cfg.pop("demo"))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return finalize_schedule(cfg)


def finalize_schedule(cfg: Config) -> Config:
    """Derive the loop length and the scheduler ends from ``max_iters`` / ``warmup_iters``.

    mmengine reaches a scheduler's final value at step ``end - 1``, hence the + 1: warmup is
    complete at ``warmup_iters`` and the poly factor reaches 0 at ``max_iters``, as in the
    original. Ends already set (a dumped config) are kept.
    """
    warmup, poly = cfg.param_scheduler
    if (warmup.type, poly.type) != ("LinearLR", "PolyLR"):
        raise ValueError(f"expected [LinearLR, PolyLR] schedulers, got {warmup.type}, {poly.type}")
    if warmup.end is None:
        warmup.end = cfg.warmup_iters + 1
    if poly.end is None:
        poly.end = cfg.max_iters + 1
    if cfg.train_cfg.max_iters is None:
        cfg.train_cfg.max_iters = cfg.max_iters
    return cfg


def shrink(cfg: Config, *, out_indices: list[int], max_iters: int, **overrides) -> Config:
    """Scale a paper config down in place: tiny trunk, small crop, few iterations.

    The structure (heads, frozen or trained trunk, losses, pipelines, schedule shape) is
    untouched, so the demo runs the paper's code paths.
    """
    unknown = set(overrides) - set(DEMO_DEFAULTS)
    if unknown:
        raise KeyError(f"unknown demo settings {sorted(unknown)}; known: {sorted(DEMO_DEFAULTS)}")
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
