"""Preparing a registered dataset as its entry says, one lifecycle for every dataset: its
source files located (downloaded when asked), checked against their pins, extracted safely,
their raw label maps converted where the entry has a conversion, the tree validated against
the entry's layout and label rule, a manifest written.

Later steps trust ``<data_root>/<tree>`` only through that manifest (``valid: true``).  The
tree is built in a hidden partial folder inside ``data_root`` and renamed into place only
after it validated, so a killed run leaves nothing a later run would mistake for finished
data.  A partial folder whose extraction finished (a marker holds its sources' digests) is
resumed by the next run from the same sources (a killed conversion goes on with the maps it
lacks); any other leftover is deleted.  The data root is locked for the whole run.

A source file the entry publishes no digest for is held to the digest it had when it first
prepared (recorded beside the tree as ``<file>.sha256``); another file is refused until it is
pinned.  A tree the user made or pointed to (an extracted folder as ``source``) is validated
where it is and never replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from .archives import (MAX_ERRORS, DatasetError, Report, discard, extract_members,
                       format_problems, listing, listing_matches, locked, remove_partials,
                       stems_sha256, validate_pairs, vetted_zip)
from .datasets import Dataset, Source
from .download import DIGEST_LENGTHS, DownloadError, download, normalize_digest
from .errors import InputError
from .io import hash_file, read_json, read_sidecar, write_json, write_sidecar

log = logging.getLogger("internseg")

MANIFEST_VERSION = 2
# Inside a tree we built: the digests of the files it came from. Not the manifest's job alone:
# the workflow deletes the manifest (its rule's output) before the rule runs, and a changed
# file must still be told from the tree's own.
SOURCE_RECORD = ".internseg-sources.json"
# 0.2.0 recorded an extracted tree's one zip there ({"source_sha1": ...}); still read, so a
# tree extracted then stays the zip's.
OLD_SOURCE_RECORD = ".internseg-source.json"
MARKER = "sources.json"  # in a partial folder: its extraction finished, from these digests
RAW = "raw"  # in a partial folder: the extracted raw label maps


class TreeFacts(NamedTuple):
    """What validation learnt about a tree; the manifest is built from it."""

    train_stems: list[str]
    val_stems: list[str]
    bytes: dict[str, int]
    extras: dict[str, bool]


class Prepared(NamedTuple):
    manifest: dict
    # "up-to-date" | "extracted" | "resumed" | "re-extracted" | "validated-in-place" | "linked"
    action: str


class Pin(NamedTuple):
    """What a source file is checked against: a digest (``algorithm``) and a size, each None
    when not checked; ``recorded``: held to the digest of its first preparation instead."""

    algorithm: str
    digest: str | None
    size: int | None
    recorded: bool


def partial_prefix(dataset: Dataset) -> str:
    """Partial folders and temporary links carry this prefix: one glob finds what a killed run
    left behind."""
    return f".{dataset.tree}.partial-"


# ---------------------------------------------------------------- pins


def _digest(value: str, what: str) -> tuple[str, str]:
    """A given digest and its algorithm, told by its length (40: sha1, 64: sha256)."""
    text = value.strip().lower()
    for algorithm, length in DIGEST_LENGTHS.items():
        if len(text) == length:
            return algorithm, normalize_digest(text, algorithm, what)
    raise InputError(f"{what} must be 40 (sha1) or 64 (sha256) hex digits, got {value!r}")


def resolve_pins(dataset: Dataset, *, pinned: bool = True,
                 pins: Mapping[str, str] | None = None) -> dict[str, Pin]:
    """Each source file's pin: its published size and digest (none with ``pinned=False``:
    synthetic stand-ins), or the digest in ``pins`` (``{file name: sha1 or sha256}``) over it.
    A file with no published digest and none given is held to its first preparation's."""
    names = [s.name for s in dataset.sources]
    unknown = sorted(set(pins or {}) - set(names))
    if unknown:
        raise InputError(f"pins: {unknown[0]} is not a file of {dataset.name} "
                         f"({', '.join(names)})")
    resolved = {}
    for source in dataset.sources:
        given = (pins or {}).get(source.name)
        if given:
            algorithm, digest = _digest(given, f"pins: {source.name}")
            resolved[source.name] = Pin(algorithm, digest, None, False)
        elif source.published:
            resolved[source.name] = Pin(source.algorithm,
                                        (source.sha1 or source.sha256) if pinned else None,
                                        source.size if pinned else None, False)
        else:
            resolved[source.name] = Pin(source.algorithm, None, None, True)
    return resolved


def record_path(data_root: Path, name: str) -> Path:
    """Where an unpublished file's digest is kept once a preparation accepted it."""
    return data_root / f"{name}.sha256"


def _recorded(record: Path) -> str | None:
    if not record.exists():
        return None
    digest = read_sidecar(record)
    if digest is None:
        raise DatasetError(f"{record}: recorded sha256 is not 64 hex digits; delete it to "
                           "record the current file")
    return digest


def check_sources(dataset: Dataset, paths: dict[str, Path], pins: dict[str, Pin],
                  data_root: Path, *, progress: bool) -> dict[str, dict]:
    """Size, then digest, of every file against its pin; an unpublished one against the digest
    recorded at its first successful preparation. Returns what the manifest records."""
    checked = {}
    for name, path in paths.items():
        pin = pins[name]
        size = path.stat().st_size
        if pin.size is not None and size != pin.size:
            raise DatasetError(f"{path}: size {size} bytes, expected {pin.size} (an incomplete "
                               "download, or a re-zipped mirror)")
        actual = hash_file(path, pin.algorithm, progress=progress)
        if pin.digest is not None and actual != pin.digest:
            raise DatasetError(f"{path}: {pin.algorithm} mismatch: expected {pin.digest}, "
                               f"actual {actual}")
        if pin.recorded:
            record = record_path(data_root, name)
            recorded = _recorded(record)
            if recorded is not None and recorded != actual:
                raise DatasetError(
                    f"{path}: sha256 {actual} differs from {recorded}, recorded in {record} "
                    f"when it was first used; pass --pin {name}={actual} to accept this file "
                    f"(in the workflow: data.{dataset.name}.pins in config.yaml's preset)")
        elif pin.digest is None:
            log.warning("%s: not pinned, not verified (%s %s)", path, pin.algorithm, actual)
        checked[name] = dict(path=str(path), size=size, algorithm=pin.algorithm,
                             digest=actual, pinned=pin.digest is not None)
    return checked


def _record_first_use(dataset: Dataset, data_root: Path, pins: dict[str, Pin],
                      checked: dict[str, dict]) -> None:
    """An unpublished file's sha256, recorded at its first preparation, and again when a pin
    accepted another file: a later run without the pin is held to the file now used."""
    for source in dataset.sources:
        name, pin, record = source.name, pins[source.name], record_path(data_root, source.name)
        if source.published or (pin.recorded and _recorded(record) is not None):
            continue
        info = checked[name]
        digest = (info["digest"] if info["algorithm"] == "sha256"
                  else hash_file(info["path"], "sha256", progress=False))
        if read_sidecar(record) != digest:
            write_sidecar(name, digest, sidecar=record)


# ---------------------------------------------------------------- sources


def fetch_source(dataset: Dataset, source: Source, dest: Path, pin: Pin, *,
                 mirror: str | None = None, progress: bool = True,
                 report: Report = log.info) -> Path:
    """Download one source file to ``dest`` (resuming a ``.part`` a killed run left), checked
    against its pin before it is renamed into place; a failure names the manual route."""
    url = f"{mirror.rstrip('/')}/{source.name}" if mirror else source.url
    report(f"downloading {url} -> {dest}")
    digest = {pin.algorithm: pin.digest} if pin.digest else {}
    try:
        return download(url, dest, size=pin.size, progress=progress, report=report, **digest)
    except DownloadError as err:
        raise DownloadError(f"{err}; or download {source.name} yourself (another address: "
                            f"--mirror, in the workflow data.{dataset.name}.mirror) and place "
                            f"it at {dest}") from None


def _tree_in(dataset: Dataset, folder: Path) -> Path | None:
    """The prepared tree ``folder`` is or holds, if any."""
    for tree in (folder / dataset.tree, folder):
        if (tree / dataset.layout.images).is_dir():
            return tree
    return None


def locate_sources(dataset: Dataset, source: str | Path | Mapping[str, str | Path], *,
                   download: bool) -> tuple[dict[str, Path], Path | None]:
    """The source files' paths, or an extracted tree given instead: ``source`` is the
    dataset's one zip, a folder holding its files, a mapping of file name to path, or a
    folder that is (or holds) a prepared tree. Missing files are for the caller to fetch."""
    names = [s.name for s in dataset.sources]
    if isinstance(source, Mapping):
        if set(source) != set(names):
            raise InputError(f"sources: need exactly the files {', '.join(names)}; got "
                             f"{', '.join(sorted(source)) or 'none'}")
        return {name: Path(source[name]).absolute() for name in names}, None
    path = Path(source).absolute()
    if path.is_file() or (path.name in names and not path.exists()):
        if len(names) > 1:
            raise InputError(f"--source {path}: {dataset.name} is prepared from "
                             f"{', '.join(names)}: give the folder holding them")
        return {names[0]: path}, None
    if not path.is_dir() and not download:
        raise DatasetError(f"{path}: source not found")
    paths = {name: path / name for name in names}
    held = any(p.is_file() for p in paths.values())
    tree = None if held or not path.is_dir() else _tree_in(dataset, path)
    return paths, tree


def _fetch_missing(dataset: Dataset, paths: dict[str, Path], pins: dict[str, Pin], *,
                   download: bool, mirror: str | None, progress: bool, report: Report) -> None:
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing and not download:
        where = ", ".join(str(paths[name]) for name in missing)
        raise DatasetError(f"{where}: not found; place {' and '.join(missing)} there "
                           f"(docs/datasets.md) or pass --download")
    by_name = {s.name: s for s in dataset.sources}
    for name in missing:
        fetch_source(dataset, by_name[name], paths[name], pins[name], mirror=mirror,
                     progress=progress, report=report)


# ---------------------------------------------------------------- building a tree


def _destinations(dataset: Dataset, partial: Path) -> list[tuple[Source, tuple[str, ...], Path]]:
    """Each source with the top folders it holds and where they go."""
    where = {"tree": partial, "images": partial / dataset.tree / dataset.layout.images,
             "raw_labels": partial / RAW}
    return [(s, (dataset.tree,) if s.holds == "tree" else s.splits, where[s.holds])
            for s in dataset.sources]


def _extract_all(dataset: Dataset, paths: dict[str, Path], partial: Path, *, progress: bool,
                 report: Report) -> None:
    """Vet every zip, check the disk has room, then extract each where its entry says."""
    plan = _destinations(dataset, partial)
    with contextlib.ExitStack() as stack:
        opened = [(paths[s.name], *stack.enter_context(vetted_zip(paths[s.name], tops,
                                                                  report=report)), s, dest)
                  for s, tops, dest in plan]
        needed = sum(i.file_size for _, _, members, _, _ in opened for i in members)
        # the converted maps take about as much again as the raw ones
        needed += sum(i.file_size for _, _, members, s, _ in opened
                      if s.holds == "raw_labels" for i in members)
        free = shutil.disk_usage(partial).free
        if free < needed:
            raise DatasetError(f"{partial.parent}: {free / 1e6:,.1f} MB free, preparing "
                               f"{dataset.title} needs about {needed / 1e6:,.1f} MB")
        for path, zf, members, _, dest in opened:
            dest.mkdir(parents=True, exist_ok=True)
            extract_members(zf, path, members, dest, progress=progress, report=report)


def _pairing_problems(dataset: Dataset, partial: Path, counts: dict[str, int]) -> list[str]:
    """Images against raw maps, by listing only: sources that do not pair up are refused
    before the conversion is paid for."""
    layout, raw_suffix = dataset.layout, dataset.convert.raw_suffix
    holder = {(s.holds, split): s.name for s in dataset.sources for split in s.splits}
    problems = []
    for split, key in layout.splits():
        images_zip, maps_zip = holder["images", split], holder["raw_labels", split]
        images = listing(partial / dataset.tree / layout.images / split, layout.image_suffix,
                         f"{images_zip}: {split}", problems)
        maps = listing(partial / RAW / split, raw_suffix, f"{maps_zip}: {split}", problems)
        # the images set the count; the maps are held to the images by the pairing below
        if len(images) != counts[key]:
            problems.append(f"{images_zip}: {len(images)} images in {split}/, "
                            f"expected {counts[key]}")
        image = f"{split}/{{}}{layout.image_suffix}".format
        problems += [f"{images_zip}: {image(s)} has no map {split}/{s}{raw_suffix} in "
                     f"{maps_zip}" for s in sorted(images.keys() - maps.keys())]
        problems += [f"{maps_zip}: {split}/{s}{raw_suffix} has no image {image(s)} in "
                     f"{images_zip}" for s in sorted(maps.keys() - images.keys())]
    return problems


def _resumable(dataset: Dataset, data_root: Path, digests: dict[str, str]) -> Path | None:
    """A partial folder whose extraction finished from these very files, if any."""
    for partial in sorted(data_root.glob(f"{partial_prefix(dataset)}*")):
        try:
            marker = read_json(partial / MARKER, "extraction marker")
        except InputError:
            continue  # not finished: removed with the other partial folders
        if marker == digests and (partial / dataset.tree).is_dir():
            return partial
    return None


def _build(dataset: Dataset, paths: dict[str, Path], digests: dict[str, str],
           data_root: Path, checks: dict) -> tuple[Path, TreeFacts, dict | None, bool]:
    """A validated tree in a partial folder: (partial, facts, conversion figures, resumed)."""
    report, progress = checks["report"], checks["progress"]
    partial = _resumable(dataset, data_root, digests)
    for stale in remove_partials(data_root, partial_prefix(dataset),
                                 keep=[partial] if partial else []):
        report(f"removed {stale}, left by an interrupted run")
    resumed = partial is not None
    if resumed:
        report(f"resuming {partial}: extracted from the same files by an interrupted run")
    else:
        partial = Path(tempfile.mkdtemp(prefix=partial_prefix(dataset), dir=data_root))
        try:
            _extract_all(dataset, paths, partial, progress=progress, report=report)
            if dataset.convert is not None:
                counts = {"train": checks["train_count"], "val": checks["val_count"]}
                problems = _pairing_problems(dataset, partial, counts)
                if problems:
                    folder = paths[dataset.sources[-1].name].parent
                    raise DatasetError(format_problems(
                        f"{folder}: the zips do not pair up", problems, checks["max_errors"]))
            write_json(partial / MARKER, digests)
        except BaseException:
            discard(partial)
            raise
    tree, conversion = partial / dataset.tree, None
    try:
        if dataset.convert is not None:
            from .conversion import convert_maps

            conversion = convert_maps(dataset, partial / RAW, tree, workers=checks["workers"],
                                      max_errors=checks["max_errors"], progress=progress,
                                      report=report)
        facts = validate_tree(tree, where=f"{data_root / dataset.tree} (being prepared)",
                              **checks)
    except DatasetError:
        discard(partial)  # bad sources: nothing worth resuming
        raise
    # any other failure (a kill, a bug) keeps the partial folder: the next run resumes it
    return partial, facts, conversion, resumed


def swap_into_place(dataset: Dataset, built: Path, target: Path, manifest_path: Path) -> None:
    """Rename the validated tree ``built`` to ``target``, in place of a stale tree there. The
    stale manifest goes first: a run killed midway leaves no manifest that vouches for either
    tree, and the next run's partial-folder cleanup removes the leftovers."""
    manifest_path.unlink(missing_ok=True)
    if not os.path.lexists(target):
        os.rename(built, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{partial_prefix(dataset)}old-", dir=target.parent))
    os.rename(target, old / dataset.tree)
    os.rename(built, target)
    discard(old)


def _link_into_place(dataset: Dataset, tree: Path, target: Path) -> None:
    tmp = target.parent / f"{partial_prefix(dataset)}link-{os.getpid()}"
    discard(tmp)
    os.symlink(tree, tmp, target_is_directory=True)
    os.replace(tmp, target)


# ---------------------------------------------------------------- validation


def validate_tree(root: str | Path, *, dataset: Dataset, train_count: int | None = None,
                  val_count: int | None = None, max_errors: int = MAX_ERRORS,
                  workers: int | None = None, progress: bool = True,
                  where: str | None = None, report: Report = log.info) -> TreeFacts:
    """Check a tree of ``dataset`` against its entry (layout, label rule, split sizes unless
    ``train_count`` / ``val_count`` say otherwise); raise one DatasetError listing every
    problem. ``where`` names the tree in messages (defaults to ``root``).
    """
    root = Path(root)
    where = where or str(root)
    expected = {"train": train_count or dataset.train_count,
                "val": val_count or dataset.val_count}
    stems, nbytes = validate_pairs(
        root, dataset.layout, expected, dataset.label_values_problem, title=dataset.title,
        where=where, max_errors=max_errors, workers=workers, progress=progress, report=report)
    extras = {name: (root / name).is_file() for name in dataset.extras}
    for name, present in extras.items():
        if not present:
            log.warning("%s: %s missing (not needed for training)", where, name)
    return TreeFacts(stems["train"], stems["val"], nbytes, extras)


# ---------------------------------------------------------------- manifest


def build_manifest(dataset: Dataset, root: Path, source: Path | None, checked: dict,
                   facts: TreeFacts, conversion: dict | None) -> dict:
    """``source``: the folder a tree was validated in (made by the user), None for a tree
    built from the files ``checked`` lists."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "dataset": dataset.title,
        "name": dataset.name,
        "valid": True,
        "root": str(root),
        "source_kind": "folder" if source is not None else "files",
        "source": str(source) if source is not None else None,
        "sources": checked,
        "num_classes": dataset.num_classes,
        "ignore_index": dataset.ignore_index,
        "train_count": len(facts.train_stems),
        "val_count": len(facts.val_stems),
        "bytes": facts.bytes,
        "extras": facts.extras,
        "train_stems_sha256": stems_sha256(facts.train_stems),
        "val_stems_sha256": stems_sha256(facts.val_stems),
        "train_stems": facts.train_stems,
        "conversion": conversion,
    }


def manifest_problem(manifest: dict) -> str | None:
    """What keeps a manifest of this version from being read (an edit by hand), or None."""
    sources = manifest.get("sources")
    if manifest.get("source_kind") not in ("files", "folder"):
        return f"source_kind {manifest.get('source_kind')!r} is neither 'files' nor 'folder'"
    if not isinstance(sources, dict) or not all(
            isinstance(info, dict) and isinstance(info.get("digest"), str)
            for info in sources.values()):
        return "sources is not a mapping of file names to their digests"
    if not isinstance(manifest.get("bytes"), dict):
        return "bytes is not a mapping of splits to byte counts"
    if not isinstance(manifest.get("train_stems_sha256"), str):
        return "train_stems_sha256 is missing"
    return None


def data_sha256(manifest: dict) -> str:
    """What a run's weights take from a prepared tree, as one digest: the dataset, its training
    pairs (their stems and bytes) and the files it was built from; never where it lies, how it
    was prepared or how long that took, so a tree validated again, moved or described by a
    later manifest version keeps its runs."""
    import hashlib
    import json

    content = dict(name=manifest.get("name"), num_classes=manifest.get("num_classes"),
                   train_stems_sha256=manifest["train_stems_sha256"],
                   train_bytes=manifest["bytes"].get("train"),
                   sources={name: info["digest"] for name, info in manifest["sources"].items()})
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _our_manifest(dataset: Dataset, path: Path, root: Path) -> dict | None:
    """The manifest at ``path`` if this version wrote it for ``root``."""
    try:
        manifest = read_json(path, f"{dataset.title} manifest")
    except InputError:
        return None  # no usable manifest: the tree is validated again
    if (manifest.get("valid") is True and manifest.get("name") == dataset.name
            and manifest.get("manifest_version") == MANIFEST_VERSION
            and manifest.get("root") == str(root) and manifest_problem(manifest) is None):
        return manifest
    return None


def _still_listed(dataset: Dataset, manifest: dict, root: Path, counts: dict) -> bool:
    """Whether the tree still holds what the manifest lists, in the expected counts; file
    names only, not re-decoded: this is the no-op path of a rerun."""
    return (manifest.get("train_count") == counts["train_count"]
            and manifest.get("val_count") == counts["val_count"]
            and root.is_dir() and listing_matches(manifest, root, dataset.layout))


def _built_from(dataset: Dataset, target: Path, manifest: dict | None) -> dict | None:
    """The digests of the files the tree at ``target`` was built from (its manifest's, else
    its source record's), or None: a tree the user made or pointed to."""
    if manifest is not None:
        if manifest["source_kind"] != "files":
            return None
        return {name: info["digest"] for name, info in manifest["sources"].items()}
    for record, read in ((SOURCE_RECORD, dict),
                         (OLD_SOURCE_RECORD, lambda r: {dataset.sources[0].name:
                                                        r.get("source_sha1")})):
        if (target / record).is_file():
            try:
                return read(read_json(target / record, "source record"))
            except InputError:
                return None  # unreadable: validated where it is, as one made by hand
    return None


# ---------------------------------------------------------------- orchestration


def prepare_dataset(dataset: Dataset, source: str | Path | Mapping[str, str | Path],
                    data_root: str | Path, *, pinned: bool = True,
                    pins: Mapping[str, str] | None = None, download: bool = False,
                    mirror: str | None = None, manifest_path: str | Path | None = None,
                    train_count: int | None = None, val_count: int | None = None,
                    max_errors: int = MAX_ERRORS, workers: int | None = None,
                    progress: bool = True, report: Report = log.info) -> Prepared:
    """Make ``<data_root>/<tree>`` a validated tree of ``dataset`` and write its manifest.

    ``source``: see :func:`locate_sources`. ``pinned`` / ``pins``: see :func:`resolve_pins`.
    With ``download``, missing files are fetched from the entry's URLs (or ``mirror/<name>``).
    ``manifest_path`` defaults to ``<data_root>/<tree>.manifest.json``; the split sizes to the
    entry's. Idempotent: when the manifest still describes the tree and the files, nothing is
    extracted, converted or decoded.
    """
    if download and not pinned:
        # it would fetch the official files and check none of their published digests
        raise InputError("unpinned (synthetic stand-ins) and download (the official files) "
                         "contradict each other: pin the files to download them")
    data_root = Path(data_root).absolute()
    target = data_root / dataset.tree
    manifest_path = Path(manifest_path or data_root / f"{dataset.tree}.manifest.json").absolute()
    pin_of = resolve_pins(dataset, pinned=pinned, pins=pins)
    counts = dict(train_count=train_count or dataset.train_count,
                  val_count=val_count or dataset.val_count)
    checks = dict(dataset=dataset, **counts, max_errors=max_errors,
                  workers=workers or os.cpu_count() or 1, progress=progress, report=report)
    paths, tree = locate_sources(dataset, source, download=download)
    data_root.mkdir(parents=True, exist_ok=True)

    with locked(data_root, report):
        manifest = _our_manifest(dataset, manifest_path, target)
        if tree is not None:
            prepared = _given_tree(tree, target, manifest, manifest_path, checks)
        else:
            _fetch_missing(dataset, paths, pin_of, download=download, mirror=mirror,
                           progress=progress, report=report)
            checked = check_sources(dataset, paths, pin_of, data_root, progress=progress)
            prepared = _from_files(paths, checked, target, manifest, manifest_path, checks)
            _record_first_use(dataset, data_root, pin_of, checked)
        if prepared.action != "up-to-date":
            # an up-to-date manifest is left as it is: a new mtime would make every later
            # step that depends on it look out of date
            write_json(manifest_path, prepared.manifest)
    report(f"{target}: {prepared.action}; {prepared.manifest['train_count']} training and "
           f"{prepared.manifest['val_count']} validation pairs; manifest {manifest_path}")
    return prepared


def _given_tree(tree: Path, target: Path, manifest: dict | None, manifest_path: Path,
                checks: dict) -> Prepared:
    """An extracted tree given as the source: validated where it is, linked into place."""
    dataset = checks["dataset"]
    if manifest is not None and _still_listed(dataset, manifest, target, checks):
        return Prepared(manifest, "up-to-date")
    facts = validate_tree(tree, **checks)
    if os.path.lexists(target) and target.resolve() != tree.resolve():
        raise DatasetError(f"{target} already exists and is not {tree}; remove it, or pass it "
                           "as the source")
    action = "validated-in-place"
    if not os.path.lexists(target):
        _link_into_place(dataset, tree, target)
        action = "linked"
    return Prepared(build_manifest(dataset, target, tree, {}, facts, None), action)


def _from_files(paths: dict[str, Path], checked: dict, target: Path, manifest: dict | None,
                manifest_path: Path, checks: dict) -> Prepared:
    """The tree built from the checked source files, unless it already is theirs."""
    dataset, report = checks["dataset"], checks["report"]
    data_root = target.parent
    digests = {name: info["digest"] for name, info in checked.items()}
    origin = _built_from(dataset, target, manifest) if os.path.lexists(target) else None
    if os.path.lexists(target) and origin is None:
        # a tree the user made or pointed to: theirs, validated where it is, never replaced
        where = "validated as found" if manifest else "exists without a manifest of ours"
        log.warning("%s %s; remove it and %s to build it from %s", target, where,
                    manifest_path.name, ", ".join(paths))
        if manifest is not None and _still_listed(dataset, manifest, target, checks):
            return Prepared(manifest, "up-to-date")
        facts = _validated_in_place(target, checks)
        return Prepared(build_manifest(dataset, target, target, {}, facts, None),
                        "validated-in-place")
    if origin == digests:
        remove_partials(data_root, partial_prefix(dataset))
        if manifest is not None and _still_listed(dataset, manifest, target, checks):
            return Prepared(manifest, "up-to-date")
        # built from these very files, its manifest gone or the tree changed since
        report(f"{target}: built from these files, without a current manifest "
               f"{manifest_path}; validating it in place")
        facts = _validated_in_place(target, checks)
        conversion = manifest.get("conversion") if manifest else None
        return Prepared(build_manifest(dataset, target, None, checked, facts, conversion),
                        "validated-in-place")
    exists = origin is not None
    if exists:
        report(f"{target} was built from other files than those now given: building it again")
    partial, facts, conversion, resumed = _build(dataset, paths, digests, data_root, checks)
    write_json(partial / dataset.tree / SOURCE_RECORD, digests)
    try:
        swap_into_place(dataset, partial / dataset.tree, target, manifest_path)
    finally:
        if not (partial / dataset.tree).exists():
            discard(partial)
    action = "re-extracted" if exists else "resumed" if resumed else "extracted"
    return Prepared(build_manifest(dataset, target, None, checked, facts, conversion), action)


def _validated_in_place(target: Path, checks: dict) -> TreeFacts:
    try:
        return validate_tree(target, **checks)
    except DatasetError as err:
        raise DatasetError(f"{err}\nremove {target} to build it again from its files") from None


# ---------------------------------------------------------------- the workflow's settings


def workflow_settings(dataset: Dataset, preset: str, settings: dict) -> dict:
    """A preset's settings of a dataset (config.yaml ``presets.<preset>.data.<dataset>``), each
    key it leaves out as the entry says: its files in the preset's resources folder, checked
    against their published pins, not downloaded, the official split sizes."""
    given = (settings.get("data") or {}).get(dataset.name) or {}
    defaults = dict(sources=f"resources/{preset}", download=False, mirror=None, pinned=True,
                    pins={}, train_count=dataset.train_count, val_count=dataset.val_count)
    return defaults | {key: value for key, value in given.items() if value is not None}


def unknown_data_settings(preset: str, settings: dict, registered) -> str | None:
    """A dataset block naming no registered dataset, as one line (the schema knows a block's
    keys, not which datasets are registered)."""
    for name in settings.get("data") or {}:
        if name not in registered:
            return (f"presets.{preset}.data.{name}: not a registered dataset "
                    f"({', '.join(sorted(registered))})")
    return None


def preset_data_settings(preset: str, settings: dict, registered: dict) -> dict[str, dict]:
    """Every registered dataset's settings in a preset (:func:`workflow_settings`), checked as
    the commands built from them would check them; a problem is one line named by its config
    keys (``presets.<preset>.data.<dataset>``), as the workflow reports it when parsed."""
    unknown = unknown_data_settings(preset, settings, registered)
    if unknown:
        raise InputError(unknown)
    resolved = {}
    for name, dataset in registered.items():
        resolved[name] = workflow_settings(dataset, preset, settings)
        try:
            prepare_args(dataset, resolved[name])
        except InputError as err:
            raise InputError(f"presets.{preset}.data.{name}: {err}") from None
    return resolved


def _pin_words(settings: dict) -> list[str]:
    words = [] if settings["pinned"] else ["--unpinned"]
    for name, digest in sorted(settings["pins"].items()):
        words += ["--pin", f"{name}={digest}"]
    return words


def prepare_args(dataset: Dataset, settings: dict) -> list[str]:
    """``internseg prepare`` words for a preset's settings of ``dataset``: which dataset, how
    many pairs, the pins. Checked here, so that the workflow refuses them when it is parsed."""
    if settings["download"] and not settings["pinned"]:
        raise InputError("pinned: false (synthetic stand-ins, no official pins) and download: "
                         "true (the official files) contradict each other: set pinned: true "
                         "to download and check them")
    resolve_pins(dataset, pinned=settings["pinned"], pins=settings["pins"])
    # no --mirror: the workflow's preparation downloads nothing (its download jobs do), and
    # `prepare` refuses --mirror without --download
    return [dataset.name, "--train-count", str(settings["train_count"]),
            "--val-count", str(settings["val_count"]), *_pin_words(settings)]


def download_args(dataset: Dataset, settings: dict) -> list[str]:
    """``internseg download`` words for a preset's settings of ``dataset``."""
    mirror = ["--mirror", settings["mirror"]] if settings["mirror"] else []
    return [dataset.name, *_pin_words(settings), *mirror]


def source_files(dataset: Dataset, settings: dict) -> list[str]:
    """The paths of a dataset's files under a preset's settings."""
    return [f"{settings['sources']}/{s.name}" for s in dataset.sources]


def download_receipt(path: str) -> str:
    """What the workflow's download job of the file at ``path`` leaves beside it. The job's
    output is this, never the file: Snakemake deletes a job's output before running the job
    again (its options changed, say), and a 19 GB zip must not go with it."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.downloaded")


def downloaded_file(receipt: str) -> str:
    """The file a :func:`download_receipt` stands for."""
    folder, name = os.path.split(receipt)
    return os.path.join(folder, name.removeprefix(".").removesuffix(".downloaded"))


def preparation_inputs(dataset: Dataset, settings: dict) -> list[str]:
    """What the workflow's preparation of a dataset reads: its files (with ``download``, the
    receipts of the jobs that fetch them), or the ``sources`` folder itself when that holds
    none of them but is (or holds) an extracted tree, which is then validated where it is."""
    files = source_files(dataset, settings)
    if settings["download"]:
        return [download_receipt(f) for f in files]
    if not any(Path(f).is_file() for f in files) and _tree_in(dataset, Path(settings["sources"])):
        return [settings["sources"]]
    return files


def source_argument(inputs) -> str:
    """``--source`` for a preparation's inputs: the folder holding its files, or the tree."""
    first = str(inputs[0])
    return first if os.path.isdir(first) else os.path.dirname(first)
