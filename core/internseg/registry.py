"""The experiments (one config file each) and the runs made of them.

``configs/<preset>/<name>.py`` is experiment ``<name>``: hyper-parameters only, run as written
on the trunk and dataset it names. What it is (head, frozen or trained trunk, the share of the
training images) is read from it; what the papers published for it lives in the records
(:mod:`internseg.records`), which nothing inherits. A run is an experiment on a registered
trunk and dataset with a training seed; presets choose which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .config import config_files, dataset_of, load_config, setting_of, trunk_of
from .datasets import Dataset, get_dataset
from .errors import InputError
from .trunks import Trunk, get_trunk

# A name that says its share of the training images (fewshot_1of16) must agree with it.
_FRACTION_IN_NAME = re.compile(r"_1of(\d+)$")


@dataclass(frozen=True)
class Experiment:
    name: str
    preset: str
    config: Path
    trunk: Trunk
    dataset: Dataset
    fraction: int
    head: str
    trunk_mode: str
    setting: str


def train_fraction(cfg, source: Path) -> int:
    fraction = cfg.get("train_fraction", 1)
    if isinstance(fraction, bool) or not isinstance(fraction, int) or fraction < 1:
        raise InputError(f"{source}: train_fraction must be an integer >= 1 (1/N of the "
                         f"training images), got {fraction!r}")
    said = _FRACTION_IN_NAME.search(source.stem)
    if said and int(said.group(1)) != fraction:
        raise InputError(f"{source}: the name says 1/{said.group(1)} of the training images, "
                         f"train_fraction says 1/{fraction}")
    return fraction


def load_experiment(preset: str, path: Path) -> Experiment:
    # custom modules not imported: the workflow reads the registry when it parses, without torch
    cfg = load_config(path, import_modules=False)
    return Experiment(
        name=path.stem, preset=preset, config=path, trunk=trunk_of(cfg, path),
        dataset=dataset_of(cfg, path), fraction=train_fraction(cfg, path),
        head=cfg.model.decode_head.type,
        trunk_mode="frozen" if cfg.model.backbone.get("freeze_trunk") else "trained",
        setting=setting_of(cfg))


def experiments(preset: str = "paper") -> dict[str, Experiment]:
    """Every experiment of a preset, by name."""
    return {path.stem: load_experiment(preset, path) for path in config_files(preset)}


@dataclass(frozen=True)
class Run:
    """One training run: an experiment on a trunk and a dataset, with a training seed (None:
    the seed its subset was drawn with, as the original's runs did). Its folder is
    ``results/<preset>/runs/<id>``."""

    experiment: str
    trunk: str
    dataset: str
    train_seed: int | None = None

    @property
    def id(self) -> str:
        seed = "" if self.train_seed is None else f"/seed{self.train_seed}"
        return f"{self.dataset}/{self.trunk}/{self.experiment}{seed}"


def parse_run_id(run_id: str) -> Run:
    """The run a ``<dataset>/<trunk>/<experiment>[/seed<N>]`` id names (the inverse of
    ``Run.id``)."""
    parts = run_id.strip("/").split("/")
    seed = None
    if len(parts) == 4 and parts[3].startswith("seed") and parts[3][4:].isdigit():
        seed = int(parts[3][4:])
        parts = parts[:3]
    if len(parts) != 3 or not all(parts):
        raise InputError(f"run {run_id!r}: expected <dataset>/<trunk>/<experiment>[/seed<N>]")
    return Run(experiment=parts[2], trunk=parts[1], dataset=parts[0], train_seed=seed)


def plan_runs(run: list[str], known: dict[str, Experiment], trunks: list[str] | None = None,
              datasets: list[str] | None = None,
              train_seeds: list[int] | None = None) -> dict[str, Run]:
    """Every run the workflow makes, by id: each experiment of ``run`` on each of ``trunks``
    and ``datasets`` (none given: the ones its config names) with each of ``train_seeds``
    (none given: one run, trained with its subset's seed)."""
    unknown = [e for e in run if e not in known]
    if unknown:
        raise InputError(f"run lists {', '.join(unknown)}, which have no config "
                         f"(registered: {', '.join(known)})")
    for name in trunks or ():
        get_trunk(name)
    for name in datasets or ():
        get_dataset(name)
    runs = [Run(e, t, d, s) for e in run for t in (trunks or [known[e].trunk.name])
            for d in (datasets or [known[e].dataset.name]) for s in (train_seeds or [None])]
    return {r.id: r for r in runs}


def resolve_run(preset: str, run: Run, cfg_options: dict | None = None, *,
                import_modules: bool = True):
    """The config a run trains with: its experiment's file moved to its trunk and dataset."""
    return load_config(f"{preset}/{run.experiment}", cfg_options, trunk=run.trunk,
                       dataset=run.dataset, import_modules=import_modules)


def check_moves(preset: str, runs: dict[str, Run], known: dict[str, Experiment]) -> None:
    """Resolve once each (experiment, trunk, dataset) that a run moves away from its
    config's own, so that one whose blocks have no counterpart there is refused before any
    job (InputError naming it)."""
    for run in {Run(r.experiment, r.trunk, r.dataset) for r in runs.values()}:
        exp = known[run.experiment]
        if (run.trunk, run.dataset) != (exp.trunk.name, exp.dataset.name):
            resolve_run(preset, run, import_modules=False)


def table15_runs(known: dict[str, Experiment], trunks: list[str] | None = None,
                 datasets: list[str] | None = None,
                 train_seeds: list[int] | None = None) -> dict[str, Run]:
    """The InternVL 2.5 report's Table 15 grid: linear probing, head tuning and full tuning
    on each of ``trunks`` and ``datasets`` (none given: every trunk and dataset the records
    have a Table 15 cell of)."""
    from .records import TABLE15_REGIMES, records

    cells = [r for r in records().values() if r.experiment in TABLE15_REGIMES.values()]
    trunks = trunks or list(dict.fromkeys(r.trunk for r in cells))
    datasets = datasets or list(dict.fromkeys(r.dataset for r in cells))
    return plan_runs(list(TABLE15_REGIMES.values()), known, trunks, datasets, train_seeds)
