"""Results of record: every published number, as data with its source.

``configs/metafile.yaml`` holds one record per published cell (trunk, experiment, dataset,
mIoU, where it was printed; the original's training log and released checkpoint where they
exist), in the spirit of mmseg's metafiles. The table joins each run to its record by
(trunk, experiment, dataset); a run without one is shown without a paper number. Nothing a
config inherits can carry a published number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .config import CONFIG_ROOT, config_files
from .datasets import DATASETS
from .errors import InputError
from .io import read_yaml
from .trunks import TRUNKS

METAFILE = CONFIG_ROOT / "metafile.yaml"
RECORD_KEYS = {"trunk", "experiment", "dataset", "mIoU", "sources", "published_log",
               "released_checkpoint"}
# Table 15's regimes: its columns and the experiment each is.
TABLE15_REGIMES = {"LP": "linear_probing", "HT": "head_tuning", "FT": "full_tuning"}
# What a source's printed numbers are, and so which of ours they are compared with (the
# metafile's `reports`): what its published logs show, or its configs' best validation.
REPORTS = ("log", "best_validation")


@dataclass(frozen=True)
class Pin:
    """A file on the Hub with what it must be: size (when recorded) and sha256."""

    file: str
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class Source:
    source: str  # a key of the metafile's `sources`
    short: str
    title: str
    where: str
    cell: str
    reports: str  # one of REPORTS

    def __str__(self) -> str:
        return f"{self.short}: {self.cell}"


@dataclass(frozen=True)
class Record:
    trunk: str
    experiment: str
    dataset: str
    miou: float
    sources: tuple[Source, ...]
    published_log: str | None = None
    released_checkpoint: Pin | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.trunk, self.experiment, self.dataset

    @property
    def reports(self) -> str:
        """What the printed number is (REPORTS), by the record's first source."""
        return self.sources[0].reports

    def as_json(self) -> dict:
        pin = self.released_checkpoint
        return dict(trunk=self.trunk, experiment=self.experiment, dataset=self.dataset,
                    mIoU=self.miou, source="; ".join(map(str, self.sources)),
                    sources=[dict(source=s.source, short=s.short, title=s.title,
                                  where=s.where, cell=s.cell, reports=s.reports)
                             for s in self.sources],
                    published_log=self.published_log,
                    released_checkpoint=None if pin is None else dict(
                        file=pin.file, sha256=pin.sha256, size=pin.size))


def _pin(value, where: str) -> Pin | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not {"file", "sha256"} <= set(value) or (
            set(value) - {"file", "sha256", "size"}):
        raise InputError(f"{where}: released_checkpoint must be dict(file, sha256[, size])")
    sha = value["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= set("0123456789abcdef")):
        raise InputError(f"{where}: released_checkpoint.sha256 is not 64 hex digits: {sha!r}")
    return Pin(str(value["file"]), sha, value.get("size"))


def parse_records(data, path: Path | str, experiments: set[str]) -> dict[tuple, Record]:
    """The records of a loaded metafile, checked: every name registered, every number a
    percentage, one record per cell; errors name the file and the entry."""
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise InputError(f"{path}: expected `sources` and a `records` list")
    sources = data.get("sources") or {}
    out: dict[tuple, Record] = {}
    for index, entry in enumerate(data["records"]):
        where = f"{path}: records[{index}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: not a mapping")
        unknown, missing = set(entry) - RECORD_KEYS, {"trunk", "experiment", "dataset", "mIoU",
                                                      "sources"} - set(entry)
        if unknown or missing:
            raise InputError(f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
        for key, known in (("trunk", TRUNKS), ("dataset", DATASETS), ("experiment", experiments)):
            if entry[key] not in known:
                raise InputError(f"{where}: {key} {entry[key]!r} is not registered "
                                 f"({', '.join(sorted(known))})")
        miou = entry["mIoU"]
        if isinstance(miou, bool) or not isinstance(miou, (int, float)) or not (
                math.isfinite(miou) and 0 <= miou <= 100):
            raise InputError(f"{where}: mIoU {miou!r} is not a percentage")
        cited = []
        for cite in entry["sources"] or ():
            name = cite.get("source") if isinstance(cite, dict) else None
            if name not in sources:
                raise InputError(f"{where}: source {name!r} is not one of the metafile's "
                                 f"sources ({', '.join(sources)})")
            known = sources[name]
            if known.get("reports") not in REPORTS:
                raise InputError(f"{path}: sources.{name}.reports is {known.get('reports')!r}, "
                                 f"not one of {', '.join(REPORTS)}")
            cited.append(Source(name, known["short"], known["title"], known["where"],
                                str(cite.get("cell", "")), known["reports"]))
        if not cited:
            raise InputError(f"{where}: a published number needs its source")
        record = Record(entry["trunk"], entry["experiment"], entry["dataset"], float(miou),
                        tuple(cited), entry.get("published_log"),
                        _pin(entry.get("released_checkpoint"), where))
        if record.key in out:
            raise InputError(f"{where}: a second record of {'/'.join(record.key)} (one cell, "
                             "one number: list both sources in one record)")
        out[record.key] = record
    return out


@cache
def records() -> dict[tuple[str, str, str], Record]:
    """Every record, by (trunk, experiment, dataset)."""
    experiments = {p.stem for p in config_files("paper")}
    return parse_records(read_yaml(METAFILE, "records"), METAFILE, experiments)


@cache
def table15_printed() -> dict[str, dict[str, float]]:
    """Table 15's derived columns as printed, by trunk."""
    return read_yaml(METAFILE, "records")["table15_printed"]["rows"]


def of_record(trunk: str) -> str:
    """The trunk whose records a run on ``trunk`` is compared with: itself, or the real trunk
    a synthetic one stands for (the demo)."""
    return TRUNKS[trunk].stands_for or trunk if trunk in TRUNKS else trunk


def record_of(trunk: str, experiment: str, dataset: str) -> Record | None:
    """The record a run of ``experiment`` on ``trunk`` and ``dataset`` is compared with."""
    return records().get((of_record(trunk), experiment, dataset))


def printed_table15(trunk: str) -> dict[str, float]:
    """Table 15's printed averages and gaps of the row a run on ``trunk`` is compared with."""
    return table15_printed().get(of_record(trunk), {})


def hub_pins() -> dict[str, Pin]:
    """Every Hub file the workflow may fetch that has pins: the trunks' files and the
    released checkpoints of the records."""
    unpinned = [t.name for t in TRUNKS.values() if not t.synthetic and not t.pinned]
    if unpinned:
        raise InputError(f"trunk {unpinned[0]} is registered without its file's pins (size "
                         "and sha256 in internseg/trunks.py): pins are verified (a preset's "
                         "verify_hub_pins), so its file could not be checked")
    pins = {t.file: Pin(t.file, t.sha256, t.size) for t in TRUNKS.values() if t.pinned}
    for record in records().values():
        if record.released_checkpoint:
            pins[record.released_checkpoint.file] = record.released_checkpoint
    return pins


def _trunk_of_file(filename: str):
    return next((t for t in TRUNKS.values() if t.file == filename), None)


def hub_source(filename: str, hub: dict) -> tuple[str, str | None]:
    """Where a Hub file is fetched from, (repo id, revision): a trunk's file from its entry's
    ``hub_repo`` and ``revision`` where set, anything else (published logs, released
    checkpoints) from the workflow's ``hub`` block (config.yaml, ``repo_id`` and
    ``revision``). A trunk in another repo never takes the block's revision (a commit of
    another repo): without its own it has none."""
    trunk = _trunk_of_file(filename)
    if trunk is None:
        return hub["repo_id"], hub["revision"]
    own_repo = trunk.hub_repo is not None
    revision = trunk.revision or (None if own_repo else hub["revision"])
    return trunk.hub_repo or hub["repo_id"], revision


def fetch_args(filename: str, hub: dict, pins: dict[str, Pin],
               local_dir: str | None) -> list[str]:
    """The options of ``internseg fetch <filename>``: where it is on the Hub (:func:`hub_source`),
    its pins where ``pins`` (:func:`hub_pins`, or none) has them, and the local folder it is
    taken from instead, if any."""
    repo_id, revision = hub_source(filename, hub)
    words = ["--repo-id", repo_id]
    if revision:
        words += ["--revision", revision]
    pin = pins.get(filename)
    if pin:
        words += ["--sha256", pin.sha256]
    if pin and pin.size is not None:
        words += ["--size", str(pin.size)]
    if local_dir:
        words += ["--local-dir", str(local_dir)]
    return words


def hub_files(trunks, run_records) -> list[str]:
    """The Hub files of ``trunks`` (names) and ``run_records`` (their published logs and
    released checkpoints; ``None`` entries are skipped), each once, in order."""
    files = [TRUNKS[name].file for name in trunks]
    for record in run_records:
        if record is None:
            continue
        if record.published_log:
            files.append(record.published_log)
        if record.released_checkpoint:
            files.append(record.released_checkpoint.file)
    return list(dict.fromkeys(files))


def check_hub_revisions(files, hub: dict, preset: str, local_dir: str | None) -> None:
    """Every one of ``files`` that a preset downloading from the Hub (no ``local_dir``) fetches
    has a pinned revision (:func:`hub_source`), else one line naming what lacks it."""
    if local_dir:
        return
    downloads = (f"preset {preset!r} downloads {{}} from the Hub (presets.{preset}"
                 ".weights_local_dir is null)")
    for filename in files:
        if hub_source(filename, hub)[1]:
            continue
        trunk = _trunk_of_file(filename)
        if trunk is not None and trunk.hub_repo is not None:
            raise InputError(
                f"core/internseg/trunks.py: trunk {trunk.name} has hub_repo {trunk.hub_repo} "
                f"but no revision, and {downloads.format(filename)}: the file would be "
                "unpinned; set the entry's revision to a 40-hex commit of that repo")
        raise InputError(f"config.yaml: hub.revision is null but {downloads.format(filename)}:"
                         " pin hub.revision to a 40-hex commit")
