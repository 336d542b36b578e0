"""The experiments: one config file each, with its table row's metadata inside.

``configs/<preset>/<name>.py`` is experiment ``<name>``; its ``experiment`` dict says what the
table needs (setting, fraction, the paper's number, the original's published log and released
checkpoint with its pins), and its ``trunk`` names the registered trunk it starts from
(:mod:`internseg.trunks`). The workflow, the table and the plots read this, not lists of
names kept elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import CONFIG_ROOT, PRESETS, load_config
from .errors import InputError
from .trunks import TRUNKS, Trunk, get_trunk

# the keys of a config's `experiment` dict: the table row's facts
METADATA_KEYS = {"setting", "fraction", "paper_miou", "published_log", "released_checkpoint"}


@dataclass(frozen=True)
class Pin:
    """A file on the Hub with what it must be: size (when recorded) and sha256."""

    file: str
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class Experiment:
    name: str
    preset: str
    config: Path
    setting: str
    fraction: int
    paper_miou: float | None
    published_log: str | None
    released_checkpoint: Pin | None
    trunk: Trunk
    head: str
    trunk_mode: str

    @property
    def published_stem(self) -> str | None:
        return self.published_log.removesuffix(".log") if self.published_log else None


def config_files(preset: str) -> list[Path]:
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose from {PRESETS}")
    return sorted((CONFIG_ROOT / preset).glob("[!_]*.py"))


def metadata(cfg, source: Path) -> dict:
    """The ``experiment`` dict of a loaded config, checked: every key known, every type right,
    the error naming the file."""
    meta = cfg.get("experiment")
    if not isinstance(meta, dict):
        raise InputError(f"{source}: no `experiment = dict(...)` metadata block")
    meta = dict(meta)
    unknown, missing = set(meta) - METADATA_KEYS, METADATA_KEYS - set(meta)
    if unknown or missing:
        problems = [f"{what} keys {sorted(keys)}" for what, keys in
                    (("unknown", unknown), ("missing", missing)) if keys]
        raise InputError(f"{source}: experiment metadata has {' and '.join(problems)}; "
                         f"it holds {sorted(METADATA_KEYS)}")
    if not isinstance(meta["setting"], str) or not meta["setting"]:
        raise InputError(f"{source}: experiment.setting must be a non-empty string")
    fraction = meta["fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, int) or fraction < 1:
        raise InputError(f"{source}: experiment.fraction must be an integer >= 1 (1/N of the "
                         f"training images), got {fraction!r}")
    miou = meta["paper_miou"]
    if miou is not None and (isinstance(miou, bool) or not isinstance(miou, (int, float))
                             or not 0 <= miou <= 100):
        raise InputError(f"{source}: experiment.paper_miou must be a number in 0..100 or None")
    log = meta["published_log"]
    if log is not None and not (isinstance(log, str) and log.endswith(".log")):
        raise InputError(f"{source}: experiment.published_log must be a .log file name or None")
    meta["released_checkpoint"] = _pin(meta["released_checkpoint"], source)
    return meta


def _pin(value, source: Path) -> Pin | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not {"file", "sha256"} <= set(value) or (
            set(value) - {"file", "sha256", "size"}):
        raise InputError(f"{source}: experiment.released_checkpoint must be None or "
                         "dict(file=..., sha256=..., size=...) (size optional)")
    sha = value["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= set("0123456789abcdef")):
        raise InputError(f"{source}: released_checkpoint.sha256 is not 64 hex digits: {sha!r}")
    return Pin(str(value["file"]), sha, value.get("size"))


def load_experiment(preset: str, path: Path) -> Experiment:
    # custom modules not imported: the workflow reads the registry when it parses, without torch
    cfg = load_config(path, import_modules=False)
    meta = metadata(cfg, path)
    return Experiment(
        name=path.stem, preset=preset, config=path, setting=meta["setting"],
        fraction=meta["fraction"], paper_miou=meta["paper_miou"],
        published_log=meta["published_log"], released_checkpoint=meta["released_checkpoint"],
        trunk=get_trunk(cfg.trunk), head=cfg.model.decode_head.type,
        trunk_mode="frozen" if cfg.model.backbone.get("freeze_trunk") else "trained")


def experiments(preset: str = "paper") -> dict[str, Experiment]:
    """Every experiment of a preset, by name."""
    return {path.stem: load_experiment(preset, path) for path in config_files(preset)}


def hub_pins(paper: dict[str, Experiment] | None = None) -> dict[str, Pin]:
    """Every Hub file the workflow may fetch that has pins: the trunks' files and the
    released checkpoints of the paper's experiments (``paper``, read when not given)."""
    pins = {t.file: Pin(t.file, t.sha256, t.size) for t in TRUNKS.values() if t.sha256}
    for exp in (experiments("paper") if paper is None else paper).values():
        if exp.released_checkpoint:
            pins[exp.released_checkpoint.file] = exp.released_checkpoint
    return pins


@dataclass(frozen=True)
class Run:
    """One training run: an experiment started from a trunk, with a training seed (None: the
    seed its subset was drawn with, as the original's runs did). Its folder is
    ``results/runs/<id>``."""

    experiment: str
    trunk: str
    train_seed: int | None = None

    @property
    def id(self) -> str:
        seed = "" if self.train_seed is None else f"/seed{self.train_seed}"
        return f"{self.trunk}/{self.experiment}{seed}"


def parse_run_id(run_id: str) -> Run:
    """The run a ``<trunk>/<experiment>[/seed<N>]`` id names (the inverse of ``Run.id``)."""
    parts = run_id.strip("/").split("/")
    seed = None
    if len(parts) == 3 and parts[2].startswith("seed") and parts[2][4:].isdigit():
        seed = int(parts[2][4:])
        parts = parts[:2]
    if len(parts) != 2 or not all(parts):
        raise InputError(f"run {run_id!r}: expected <trunk>/<experiment>[/seed<N>]")
    return Run(experiment=parts[1], trunk=parts[0], train_seed=seed)


def plan_runs(run: list[str], known: dict[str, Experiment], trunks: list[str] | None = None,
              train_seeds: list[int] | None = None) -> dict[str, Run]:
    """Every run the workflow makes, by id: each experiment of ``run`` on each of ``trunks``
    (none given: the trunk its config names) with each of ``train_seeds`` (none given: one
    run, trained with its subset's seed)."""
    unknown = [e for e in run if e not in known]
    if unknown:
        raise InputError(f"run lists {', '.join(unknown)}, which have no config "
                         f"(registered: {', '.join(known)})")
    for name in trunks or ():
        get_trunk(name)
    runs = [Run(e, t, s) for e in run for t in (trunks or [known[e].trunk.name])
            for s in (train_seeds or [None])]
    return {r.id: r for r in runs}


def on_own_trunk(run: Run, known: dict[str, Experiment]) -> bool:
    """Whether ``run`` starts from the trunk its experiment's config names: only then are the
    original's published log and released checkpoint its reference."""
    return run.trunk == known[run.experiment].trunk.name


def check_moves(preset: str, runs: dict[str, Run], known: dict[str, Experiment]) -> None:
    """Load once each config that a run moves to another trunk, so that one whose blocks
    have no counterpart there is refused before any job (InputError naming it)."""
    for experiment, trunk in {(r.experiment, r.trunk) for r in runs.values()
                              if not on_own_trunk(r, known)}:
        load_config(f"{preset}/{experiment}", {"trunk": trunk}, import_modules=False)
