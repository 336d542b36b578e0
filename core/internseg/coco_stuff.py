"""COCO-Stuff-164K preparation: check the three zips, extract, convert the maps, validate, manifest.

After preparation (what mmseg's ``COCOStuffDataset`` reads)::

    <data_root>/coco_stuff164k/images/{train2017,val2017}/<12-digit id>.jpg
    <data_root>/coco_stuff164k/annotations/{train2017,val2017}/<id>_labelTrainIds.png
    <data_root>/coco_stuff164k.manifest.json

Later steps trust the tree only through the manifest (``valid: true``).  Everything is built in a
hidden partial folder inside ``data_root`` and renamed into place only once it validated.  The
raw maps (values 0..181 and 255) are converted to the 171 train ids with the recorded
182 -> 171 mapping; a raw value outside it is refused, not passed through.  A killed conversion
resumes where it stopped, provided the partial folder came from the same zips (a marker file
holds their sha256s); any other leftover of a killed run is deleted by the next run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from .archives import (MAX_ERRORS, DatasetError, Report, discard, extract_members,
                       format_problems, list_files, listing, listing_matches, locked,
                       progress_bar, remove_partials, stems_sha256, vetted_zip)
from .download import download as fetch_url
from .download import normalize_sha256
from .datasets import DATASETS
from .errors import InputError
from .io import hash_file, naming_full_disk, read_json, read_sidecar, write_json, write_sidecar
from .locks import die_with_parent
from .preparation import TreeFacts, partial_prefix, swap_into_place, validate_tree

log = logging.getLogger("internseg")

COCO_STUFF = DATASETS["coco_stuff164k"]
DATASET = COCO_STUFF.title
TOP = COCO_STUFF.tree
LAYOUT = COCO_STUFF.layout
SPLITS = LAYOUT.splits()
# the maps zip holds both splits; each split's images come in a zip of the split's name
MAPS_ZIP = COCO_STUFF.sources[-1].name
IMAGE_ZIPS = {split: f"{split}.zip" for split, _ in SPLITS}
MAP_SUFFIX = LAYOUT.label_suffix
TRAIN_COUNT = COCO_STUFF.train_count
VAL_COUNT = COCO_STUFF.val_count
NUM_CLASSES = COCO_STUFF.num_classes
IGNORE_INDEX = COCO_STUFF.ignore_index
MANIFEST_VERSION = 1
PARTIAL_PREFIX = partial_prefix(COCO_STUFF)
MARKER = "sources.json"  # in a partial folder: the sha256s of the zips it was extracted from
# The same, inside the tree (renamed into place with it): what it was prepared from when the
# manifest is gone, as the workflow deletes it (its rule's output) before preparing again.
SOURCE_RECORD = ".internseg-sources.json"
RAW = "raw"  # in a partial folder: the extracted raw maps


class Source(NamedTuple):
    url: str
    size: int | None
    sha256: str | None


SOURCES = {s.name: Source(s.url, s.size, s.sha256) for s in COCO_STUFF.sources}

# COCO thing ids that were never annotated (raw value = labels.txt id - 1): the 182 raw
# classes minus these 11 are the 171 train ids, in order.
UNUSED_RAW_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
RAW_TO_TRAIN_ID: dict[int, int] = {
    **{raw: train for train, raw in
       enumerate(r for r in range(182) if r not in UNUSED_RAW_IDS)},
    IGNORE_INDEX: IGNORE_INDEX,
}
# The lookup table's value for raw values outside the mapping; no train id (0..170, 255) is 254.
_UNMAPPED = 254


class Prepared(NamedTuple):
    manifest: dict
    action: str  # "up-to-date" | "extracted" | "resumed" | "re-extracted" | "validated-in-place"


# ---------------------------------------------------------------- sources


def resolve_pins(pins: Mapping[str, Mapping | None] | None) -> dict[str, Source]:
    """The recorded pins with ``pins``' per-file overrides: ``{name: {"sha256": .., "size": ..}}``
    or ``{name: None}`` (not pinned)."""
    resolved = dict(SOURCES)
    for name, pin in (pins or {}).items():
        if name not in SOURCES:
            raise InputError(f"pins: unknown file {name!r} (expected one of {', '.join(SOURCES)})")
        pin = dict(pin or {})
        unknown = set(pin) - {"sha256", "size"}
        if unknown:
            raise InputError(f"pins: {name}: unknown keys {sorted(unknown)} (sha256, size)")
        size = pin.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise InputError(f"pins: {name}: size must be a byte count, got {size!r}")
        sha = normalize_sha256(pin.get("sha256"), f"pins: {name}: sha256")
        resolved[name] = Source(SOURCES[name].url, size, sha)
    return resolved


def locate_sources(sources: str | Path | Mapping[str, str | Path], *, download: bool,
                   base_url: str | None, pins: dict[str, Source], progress: bool,
                   report: Report) -> dict[str, Path]:
    """Paths of the three zips (a folder holding them, or a mapping name -> path); missing ones
    are downloaded when ``download`` is set."""
    if isinstance(sources, Mapping):
        unknown = set(sources) - set(SOURCES)
        missing_keys = set(SOURCES) - set(sources)
        if unknown or missing_keys:
            raise InputError(f"sources: need exactly the keys {', '.join(SOURCES)}; "
                             f"unknown {sorted(unknown)}, missing {sorted(missing_keys)}")
        paths = {name: Path(sources[name]).absolute() for name in SOURCES}
    else:
        folder = Path(sources).absolute()
        if not folder.is_dir() and not (download and not folder.exists()):
            raise DatasetError(f"{folder}: source folder not found")
        paths = {name: folder / name for name in SOURCES}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing and not download:
        where = ", ".join(str(paths[name]) for name in missing)
        raise DatasetError(f"{where}: not found; download "
                           f"{' and '.join(missing)} (see docs/coco-stuff.md) or pass --download")
    for name in missing:
        url = f"{base_url.rstrip('/')}/{name}" if base_url else pins[name].url
        report(f"downloading {url} -> {paths[name]}")
        fetch_url(url, paths[name], sha256=pins[name].sha256, size=pins[name].size,
                  progress=progress, report=report)
    return paths


def record_path(data_root: Path) -> Path:
    """Where the maps zip's sha256 is kept once a preparation accepted it (no digest is
    published, so the first file that prepared successfully is the reference)."""
    return data_root / f"{MAPS_ZIP}.sha256"


def _recorded(record: Path) -> str | None:
    if not record.exists():
        return None
    digest = read_sidecar(record)
    if digest is None:
        raise DatasetError(f"{record}: recorded sha256 is not 64 hex digits; delete it to "
                           "record the current file")
    return digest


def check_sources(paths: dict[str, Path], pins: dict[str, Source], record: Path, *,
                  progress: bool) -> dict[str, dict]:
    """Size, then sha256, of every zip against its pin; the maps zip, unpinned, against the
    digest recorded at its first successful use."""
    checked = {}
    for name, path in paths.items():
        pin = pins[name]
        size = path.stat().st_size
        if pin.size is not None and size != pin.size:
            raise DatasetError(f"{path}: size {size} bytes, expected {pin.size} (an incomplete "
                               "download, or a re-zipped mirror)")
        actual = hash_file(path, "sha256", progress=progress)
        if pin.sha256 is not None and actual != pin.sha256:
            raise DatasetError(f"{path}: sha256 mismatch: expected {pin.sha256}, actual {actual}")
        if pin.sha256 is None and name == MAPS_ZIP:
            recorded = _recorded(record)
            if recorded is not None and recorded != actual:
                raise DatasetError(
                    f"{path}: sha256 {actual} differs from {recorded}, recorded in {record} "
                    f"when it was first used; pass --stuffthingmaps-sha256 {actual} to accept "
                    f"this file (in the workflow: stuffthingmaps_sha256: {actual} in config.yaml's "
                    "coco_stuff164k settings)")
        elif pin.sha256 is None:
            log.warning("%s: not pinned, not verified (sha256 %s)", path, actual)
        checked[name] = dict(path=str(path), size=size, sha256=actual,
                             pinned=pin.sha256 is not None)
    return checked


def _digests(checked: dict[str, dict]) -> dict[str, str]:
    return {name: info["sha256"] for name, info in checked.items()}


# ---------------------------------------------------------------- conversion


@functools.cache
def _lookup_table():
    import numpy as np

    table = np.full(256, _UNMAPPED, dtype=np.uint8)
    for raw, train in RAW_TO_TRAIN_ID.items():
        table[raw] = train
    return table


def convert_map(raw: Path, out: Path, image: Path, name: str) -> str | None:
    """Convert one raw map to train ids at ``out``; returns the problem instead when the map
    cannot be converted (``name`` is how messages call it).

    The PNG is written under a hidden temporary name and renamed: a killed conversion leaves no
    file that looks finished.
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(raw) as im:
            mode, size = im.mode, im.size
            pixels = np.asarray(im) if mode == "L" else None
    except Exception as err:  # PIL raises many types for a broken file
        return f"{name}: unreadable map ({err})"
    if pixels is None:
        return f"{name}: must be single-channel 8-bit (PIL mode 'L'), found mode {mode!r}"
    try:
        with Image.open(image) as im:
            image_size = im.size  # the header only: validation decodes the image later
    except Exception as err:
        return f"{name}: its image {image.name} is unreadable ({err})"
    if size != image_size:
        return (f"{name}: size {size[0]}x{size[1]} differs from its image {image.name} "
                f"({image_size[0]}x{image_size[1]})")
    converted = _lookup_table()[pixels]
    unmapped = converted == _UNMAPPED
    if unmapped.any():
        values = ", ".join(str(v) for v in np.unique(pixels[unmapped]))
        return (f"{name}: raw values {values} are not in the COCO-Stuff mapping "
                f"({int(unmapped.sum())} pixels)")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with naming_full_disk(out, temporary=tmp):
            Image.fromarray(converted).save(tmp, format="PNG")
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return None


def _convert_star(task: tuple) -> str | None:
    return convert_map(*task)


def convert_maps(raw_root: Path, tree: Path, *, workers: int, max_errors: int = MAX_ERRORS,
                 progress: bool = True, report: Report = log.info) -> dict:
    """Convert ``raw_root/<split>/<id>.png`` to ``tree/annotations/<split>/<id>_labelTrainIds.png``.

    Maps already converted (present under their final name) are kept: that is the resume.
    Returns the conversion figures; raises one DatasetError listing every map refused.
    """
    tasks, done = [], 0
    for split, _ in SPLITS:
        out_dir = tree / LAYOUT.labels / split
        out_dir.mkdir(parents=True, exist_ok=True)
        for leftover in out_dir.glob(".*"):  # half-written by a killed run
            leftover.unlink()
        have = set(list_files(out_dir, MAP_SUFFIX)[0])
        for stem in sorted(list_files(raw_root / split, ".png")[0]):
            if stem in have:
                done += 1
            else:
                image = tree / LAYOUT.images / split / f"{stem}{LAYOUT.image_suffix}"
                tasks.append((raw_root / split / f"{stem}.png", out_dir / f"{stem}{MAP_SUFFIX}",
                              image, f"{split}/{stem}.png"))
    if done:
        report(f"resuming the conversion: {done} maps already converted, {len(tasks)} to go")
    start = time.perf_counter()
    problems = []
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(tasks) > 1:
            from concurrent.futures import ProcessPoolExecutor

            # the workers share the data root's lock: they must not outlive this process
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)))
            # an interruption must not wait for every queued map to be converted
            stack.callback(pool.shutdown, cancel_futures=True)
            chunk = max(1, min(64, len(tasks) // (8 * workers)))
            results = pool.map(_convert_star, tasks, chunksize=chunk)
        else:
            results = map(_convert_star, tasks)
        for problem in progress_bar(results, total=len(tasks), desc="convert", unit="map",
                                    disable=not progress):
            if problem is not None:
                problems.append(problem)
    seconds = time.perf_counter() - start
    rate = len(tasks) / max(seconds, 1e-9)
    report(f"converted {len(tasks) - len(problems)} maps in {seconds:.1f} s with {workers} "
           f"worker{'s' if workers != 1 else ''}: {rate:.1f} images/s")
    if problems:
        raise DatasetError(format_problems(f"{MAPS_ZIP}: maps refused", problems, max_errors))
    return dict(images=len(tasks), seconds=round(seconds, 3), images_per_s=round(rate, 1),
                workers=workers, already_converted=done)


def prepare_args(settings: dict) -> list[str]:
    """``internseg prepare-coco-stuff`` options for a preset's ``coco_stuff164k`` settings
    (config.yaml): fetch what is missing, check no pins (synthetic zips), the maps' sha256."""
    if settings["download"] and not settings["pinned"]:
        # the job would fetch the official zips and check none of their recorded digests
        raise InputError("pinned: false (synthetic stand-ins, no official pins) and download: "
                         "true (the official zips) contradict each other: set pinned: true to "
                         "download and check them")
    words = ["--download"] if settings["download"] else []
    if not settings["pinned"]:
        words.append("--unpinned")
    if settings["stuffthingmaps_sha256"]:
        words += ["--stuffthingmaps-sha256", settings["stuffthingmaps_sha256"]]
    return words


# ---------------------------------------------------------------- extraction


def _pairing_problems(partial: Path, counts: dict[str, int]) -> list[str]:
    """Images against raw maps, by listing only: a zip that does not pair up is refused before
    the conversion is paid for."""
    problems = []
    for split, _ in SPLITS:
        zip_name = IMAGE_ZIPS[split]
        images = listing(partial / TOP / LAYOUT.images / split, LAYOUT.image_suffix,
                         f"{zip_name}: {split}", problems)
        maps = listing(partial / RAW / split, ".png", f"{MAPS_ZIP}: {split}", problems)
        # the images set the count; the maps are held to the images by the pairing below
        if len(images) != counts[split]:
            problems.append(f"{zip_name}: {len(images)} images in {split}/, "
                            f"expected {counts[split]}")
        image = f"{split}/{{}}{LAYOUT.image_suffix}".format
        problems += [f"{zip_name}: {image(s)} has no map {split}/{s}.png in {MAPS_ZIP}"
                     for s in sorted(images.keys() - maps.keys())]
        problems += [f"{MAPS_ZIP}: {split}/{s}.png has no image {image(s)} in {zip_name}"
                     for s in sorted(maps.keys() - images.keys())]
    return problems


def _extract_all(paths: dict[str, Path], partial: Path, *, progress: bool,
                 report: Report) -> None:
    """Vet all three zips, check the disk has room, then extract: images into the tree, raw maps
    into the working folder."""
    plan = [(paths[IMAGE_ZIPS[split]], (split,), partial / TOP / LAYOUT.images)
            for split, _ in SPLITS]
    plan.append((paths[MAPS_ZIP], tuple(split for split, _ in SPLITS), partial / RAW))
    with contextlib.ExitStack() as stack:
        opened = [(path, *stack.enter_context(vetted_zip(path, tops, report=report)), dest)
                  for path, tops, dest in plan]
        raw_maps = sum(i.file_size for i in opened[-1][2])
        # the converted maps take about as much again as the raw ones
        needed = sum(i.file_size for _, _, members, _ in opened for i in members) + raw_maps
        free = shutil.disk_usage(partial).free
        if free < needed:
            raise DatasetError(f"{partial.parent}: {free / 1e6:,.1f} MB free, preparing "
                               f"{DATASET} needs about {needed / 1e6:,.1f} MB")
        for path, zf, members, dest in opened:
            dest.mkdir(parents=True, exist_ok=True)
            extract_members(zf, path, members, dest, progress=progress, report=report)


def _resumable(data_root: Path, digests: dict[str, str]) -> Path | None:
    """A partial folder whose extraction finished from these very zips, if any."""
    for partial in sorted(data_root.glob(f"{PARTIAL_PREFIX}*")):
        try:
            marker = read_json(partial / MARKER, "extraction marker")
        except InputError:
            continue  # not finished: removed with the other partial folders
        if marker == digests and (partial / TOP).is_dir() and (partial / RAW).is_dir():
            return partial
    return None


def _build(paths: dict[str, Path], digests: dict[str, str], data_root: Path,
           checks: dict, workers: int) -> tuple[Path, TreeFacts, dict, bool]:
    """A validated tree in a partial folder: (partial, facts, conversion figures, resumed)."""
    report, progress = checks["report"], checks["progress"]
    partial = _resumable(data_root, digests)
    for stale in remove_partials(data_root, PARTIAL_PREFIX, keep=[partial] if partial else []):
        report(f"removed {stale}, left by an interrupted run")
    resumed = partial is not None
    if resumed:
        report(f"resuming {partial}: extracted from the same zips by an interrupted run")
    else:
        partial = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=data_root))
        try:
            _extract_all(paths, partial, progress=progress, report=report)
            counts = {"train2017": checks["train_count"], "val2017": checks["val_count"]}
            problems = _pairing_problems(partial, counts)
            if problems:
                raise DatasetError(format_problems(
                    f"{paths[MAPS_ZIP].parent}: the zips do not pair up", problems,
                    checks["max_errors"]))
            write_json(partial / MARKER, digests)
        except BaseException:
            discard(partial)
            raise
    try:
        conversion = convert_maps(partial / RAW, partial / TOP, workers=workers,
                                  max_errors=checks["max_errors"], progress=progress,
                                  report=report)
        facts = validate_tree(partial / TOP, where=f"{data_root / TOP} (being prepared)",
                              workers=workers, **checks)
    except DatasetError:
        discard(partial)  # bad sources: nothing worth resuming
        raise
    # any other failure (a kill, a bug) keeps the partial folder: the next run resumes it
    return partial, facts, conversion, resumed


# ---------------------------------------------------------------- manifest


def build_manifest(root: Path, sources: dict[str, dict], facts: TreeFacts,
                   conversion: dict) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION,
        "dataset": DATASET,
        "valid": True,
        "root": str(root),
        "sources": sources,
        "num_classes": NUM_CLASSES,
        "ignore_index": IGNORE_INDEX,
        "train_count": len(facts.train_stems),
        "val_count": len(facts.val_stems),
        "bytes": facts.bytes,
        "train_stems_sha256": stems_sha256(facts.train_stems),
        "val_stems_sha256": stems_sha256(facts.val_stems),
        "train_stems": facts.train_stems,
        "conversion": conversion,
    }


def _our_manifest(path: Path, root: Path) -> dict | None:
    """The manifest at ``path`` if this module wrote it for ``root``."""
    try:
        manifest = read_json(path, f"{DATASET} manifest")
    except InputError:
        return None
    if (manifest.get("valid") is True
            and manifest.get("dataset") == DATASET
            and manifest.get("manifest_version") == MANIFEST_VERSION
            and manifest.get("root") == str(root)):
        return manifest
    return None


def _listing_matches(manifest: dict, root: Path, train_count: int, val_count: int) -> bool:
    """Whether the tree still holds what the manifest lists, in the expected counts."""
    return (manifest.get("train_count") == train_count
            and manifest.get("val_count") == val_count
            and listing_matches(manifest, root, LAYOUT))


def _tree_digests(target: Path) -> dict[str, str] | None:
    """The zips' sha256s the tree at ``target`` was prepared from (its source record), or
    None: not a tree of ours, or one prepared before trees carried the record."""
    try:
        return read_json(target / SOURCE_RECORD, "source record")
    except InputError:
        return None


def _recorded_digests(manifest: dict) -> dict[str, str | None]:
    sources = manifest.get("sources")
    if not isinstance(sources, dict):
        return {}
    return {name: (info or {}).get("sha256") if isinstance(info, dict) else None
            for name, info in sources.items()}


# ---------------------------------------------------------------- orchestration


def prepare_coco_stuff(sources: str | Path | Mapping[str, str | Path], data_root: str | Path,
                       *, pins: Mapping[str, Mapping | None] | None = None,
                       download: bool = False, base_url: str | None = None,
                       manifest_path: str | Path | None = None,
                       train_count: int = TRAIN_COUNT, val_count: int = VAL_COUNT,
                       max_errors: int = MAX_ERRORS, workers: int | None = None,
                       progress: bool = True, report: Report = log.info) -> Prepared:
    """Make ``<data_root>/coco_stuff164k`` a validated COCO-Stuff-164K tree; write its manifest.

    ``sources``: a folder holding ``train2017.zip``, ``val2017.zip`` and
    ``stuffthingmaps_trainval2017.zip``, or a mapping of those names to paths.  ``pins``
    overrides the recorded size/sha256 per file (see :func:`resolve_pins`).  With ``download``,
    missing zips are fetched from the recorded URLs (or ``base_url/<name>``).
    ``manifest_path`` defaults to ``<data_root>/coco_stuff164k.manifest.json``.  Idempotent: when
    the manifest still describes the tree and the zips, nothing is extracted or converted.
    """
    data_root = Path(data_root).absolute()
    target = data_root / TOP
    manifest_path = Path(manifest_path or data_root / f"{TOP}.manifest.json").absolute()
    pinned = resolve_pins(pins)
    workers = workers or os.cpu_count() or 1
    checks = dict(dataset=COCO_STUFF, train_count=train_count, val_count=val_count,
                  max_errors=max_errors, progress=progress, report=report)
    data_root.mkdir(parents=True, exist_ok=True)

    with locked(data_root, report):
        paths = locate_sources(sources, download=download, base_url=base_url, pins=pinned,
                               progress=progress, report=report)
        record = record_path(data_root)
        checked = check_sources(paths, pinned, record, progress=progress)
        digests = _digests(checked)
        manifest = _our_manifest(manifest_path, target)
        exists = os.path.lexists(target)
        recorded = _recorded_digests(manifest) if manifest else _tree_digests(target)
        stale = recorded is not None and recorded != digests
        if exists and recorded is None:
            raise DatasetError(f"{target} exists but no {DATASET} manifest of ours vouches for "
                               f"it ({manifest_path}); move it away to prepare from the zips")
        if exists and not stale and manifest is None:
            # prepared from these zips, its manifest deleted: validated where it is
            report(f"{target}: prepared from these zips but without its manifest "
                   f"{manifest_path}; validating it in place")
            facts = validate_tree(target, workers=workers, **checks)
            manifest = build_manifest(target, checked, facts, None)
            write_json(manifest_path, manifest)
            return Prepared(manifest, "validated-in-place")
        if exists and not stale:
            if _listing_matches(manifest, target, train_count, val_count):
                remove_partials(data_root, PARTIAL_PREFIX)
                if _recorded(record) is None:  # deleted by hand: the tree vouches for the file
                    write_sidecar(MAPS_ZIP, digests[MAPS_ZIP], sidecar=record)
                report(f"{target}: up to date (manifest {manifest_path})")
                return Prepared(manifest, "up-to-date")
            # made by us from these zips, then changed: say what is wrong with it, in place
            report(f"{target} no longer matches {manifest_path}; validating it in place")
            facts = validate_tree(target, workers=workers, **checks)
            manifest = build_manifest(target, checked, facts, manifest.get("conversion"))
            write_json(manifest_path, manifest)
            return Prepared(manifest, "validated-in-place")
        if stale and exists:
            report(f"{target} was prepared from other zips than those now given: "
                   "preparing it again")

        partial, facts, conversion, resumed = _build(paths, digests, data_root, checks, workers)
        write_json(partial / TOP / SOURCE_RECORD, digests)
        try:
            swap_into_place(COCO_STUFF, partial / TOP, target, manifest_path)
        finally:
            if not (partial / TOP).exists():
                discard(partial)
        manifest = build_manifest(target, checked, facts, conversion)
        write_json(manifest_path, manifest)
        write_sidecar(MAPS_ZIP, digests[MAPS_ZIP], sidecar=record)
    action = "re-extracted" if exists else "resumed" if resumed else "extracted"
    report(f"{target}: {action}; {manifest['train_count']} training and "
           f"{manifest['val_count']} validation pairs; manifest {manifest_path}")
    return Prepared(manifest, action)
