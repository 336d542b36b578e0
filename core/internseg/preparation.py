"""Preparing a dataset that its entry says is extracted as it is (ADE20K; any dataset
registered with one zip holding its tree and ``convert=None``): verify the zip, extract it
safely, validate the tree against the entry's layout and label rule, write a manifest.

Later steps trust ``<data_root>/<tree>`` only through the manifest this module writes
(``valid: true``).  The tree is extracted into a hidden partial folder inside ``data_root``
and renamed into place only after it validated, so a killed run leaves nothing a later run
would mistake for finished data; the next run deletes the leftover partial folder.  The data
root is locked for the whole run.

An already-extracted folder is accepted as the source too.  It is validated in place, never
copied; when it lives elsewhere, ``<data_root>/<tree>`` becomes a symlink to it so that every
later step finds the data at the same path.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

from .archives import (MAX_ERRORS, DatasetError, Report, extract_members, locked,
                       listing_matches, remove_partials, stems_sha256, validate_pairs,
                       vetted_zip)
from .archives import discard as _discard
from .datasets import Dataset
from .download import DownloadError, download, normalize_sha1
from .errors import InputError
from .io import hash_file, read_json, write_json

log = logging.getLogger("internseg")

MANIFEST_VERSION = 1
# Inside a tree we extracted: the zip it came from. Not the manifest's job alone: the workflow
# deletes the manifest (its rule's output) before the rule runs, and a changed zip must still
# be told from the tree's own.
SOURCE_RECORD = ".internseg-source.json"


def partial_prefix(dataset: Dataset) -> str:
    """Both the extraction folder and the temporary symlink carry this prefix, so that one
    glob finds whatever a killed run left behind."""
    return f".{dataset.tree}.partial-"


class TreeFacts(NamedTuple):
    """What validation learnt about a tree; the manifest is built from it."""

    train_stems: list[str]
    val_stems: list[str]
    bytes: dict[str, int]
    extras: dict[str, bool]


class Prepared(NamedTuple):
    manifest: dict
    action: str  # "up-to-date" | "extracted" | "re-extracted" | "validated-in-place" | "linked"


# ---------------------------------------------------------------- checksums


def sha1_file(path: str | Path, chunk: int = 1 << 20, progress: bool = True) -> str:
    """SHA-1 of a file read in chunks; shows a byte progress bar for big files."""
    return hash_file(path, "sha1", chunk=chunk, progress=progress)


def check_sha1(dataset: Dataset, path: str | Path, expected: str | None,
               progress: bool = True) -> str:
    """The SHA-1 of ``path``, verified against ``expected`` when given (a warning when not).

    Always computed: the prepared tree is tied to the archive it came from by this digest.
    """
    expected = normalize_sha1(expected, "expected SHA-1")
    actual = sha1_file(path, progress=progress)
    source = dataset.sources[0]
    if expected is None:
        log.warning("%s: no expected SHA-1 given, archive not verified (SHA-1 %s; the "
                    "official %s has %s)", path, actual, source.name, source.sha1)
    elif actual != expected:
        raise DatasetError(f"{path}: SHA-1 mismatch: expected {expected}, actual {actual}")
    return actual


# ---------------------------------------------------------------- extraction


def remove_stale_partials(dataset: Dataset, data_root: Path) -> list[Path]:
    """Delete what killed runs left behind; the caller holds the data_root lock."""
    return remove_partials(data_root, partial_prefix(dataset))


def extract_zip(dataset: Dataset, zip_path: Path, data_root: Path, *, progress: bool = True,
                report: Report = log.info) -> Path:
    """Extract the zip's ``<tree>/`` into a new partial folder in ``data_root``.

    Every entry is vetted before anything is written.  Returns ``<partial>/<tree>``;
    the caller validates it and renames it into place.  On an error the partial folder is removed.
    """
    with vetted_zip(zip_path, (dataset.tree,), report=report) as (zf, members):
        partial = Path(tempfile.mkdtemp(prefix=partial_prefix(dataset), dir=data_root))
        try:
            extract_members(zf, zip_path, members, partial, progress=progress, report=report)
        except BaseException:
            _discard(partial)
            raise
    return partial / dataset.tree


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


def build_manifest(dataset: Dataset, root: Path, source: Path, source_kind: str,
                   source_sha1: str | None, facts: TreeFacts) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION,
        "dataset": dataset.title,
        "valid": True,
        "root": str(root),
        "source": str(source),
        "source_kind": source_kind,
        "source_sha1": source_sha1,
        "num_classes": dataset.num_classes,
        "train_count": len(facts.train_stems),
        "val_count": len(facts.val_stems),
        "bytes": facts.bytes,
        "extras": facts.extras,
        "train_stems_sha256": stems_sha256(facts.train_stems),
        "val_stems_sha256": stems_sha256(facts.val_stems),
        "train_stems": facts.train_stems,
    }


def _current_manifest(dataset: Dataset, path: Path, root: Path, train_count: int,
                      val_count: int) -> dict | None:
    """The manifest at ``path`` if it still describes ``root``; else None.

    Only the file names are re-listed (cheap), not re-decoded: this is the no-op path of a rerun.
    """
    try:
        manifest = read_json(path, f"{dataset.title} manifest")
    except InputError:
        return None  # no usable manifest: the tree is validated again
    if not (manifest.get("valid") is True
            and manifest.get("manifest_version") == MANIFEST_VERSION
            and manifest.get("root") == str(root)
            and manifest.get("train_count") == train_count
            and manifest.get("val_count") == val_count and root.is_dir()):
        return None
    return manifest if listing_matches(manifest, root, dataset.layout) else None


# ---------------------------------------------------------------- orchestration


def _record_source(tree: Path, source: Path, sha1: str) -> None:
    """Written into an extracted tree before it is renamed into place, so it moves with it."""
    write_json(tree / SOURCE_RECORD, {"source": str(source), "source_sha1": sha1})


def _extracted_from(target: Path, manifest: dict | None) -> str | None:
    """The SHA-1 of the zip the tree at ``target`` was extracted from: its source record, else
    (a tree extracted before trees carried one) its current manifest's; None for a tree of a
    folder source or made by hand."""
    record = target / SOURCE_RECORD
    if record.is_file():
        try:
            return read_json(record, "source record").get("source_sha1")
        except InputError:
            return None  # unreadable: the tree is validated where it is, as one made by hand
    if manifest is not None and manifest.get("source_kind") == "zip":
        return manifest.get("source_sha1")
    return None


def _tree_in(dataset: Dataset, folder: Path) -> Path:
    """Accept both the tree's folder and the folder that contains it."""
    return folder / dataset.tree if (folder / dataset.tree).is_dir() else folder


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
    _discard(old)


def _link_into_place(dataset: Dataset, tree: Path, target: Path) -> None:
    tmp = target.parent / f"{partial_prefix(dataset)}link-{os.getpid()}"
    _discard(tmp)
    os.symlink(tree, tmp, target_is_directory=True)
    os.replace(tmp, target)


def fetch_zip(dataset: Dataset, dest: Path, *, url: str | None, sha1: str | None,
              size: int | None, progress: bool, report: Report) -> None:
    """Download the zip to ``dest`` (resuming a ``.part`` a killed run left), checked against
    ``size`` and ``sha1`` before it is renamed into place; a failure names the manual route."""
    source = dataset.sources[0]
    url = url or source.url
    report(f"downloading {url} -> {dest}")
    try:
        download(url, dest, sha1=sha1, size=size, progress=progress, report=report)
    except DownloadError as err:
        raise DownloadError(f"{err}; or download {source.name} yourself (another address: "
                            f"--url, in the workflow presets.<preset>.{dataset.name}.url) and "
                            f"place it at {dest}") from None


def workflow_settings(dataset: Dataset, preset: str, settings: dict) -> dict:
    """A preset's settings of an extracted dataset: its block in config.yaml
    (``presets.<preset>.<dataset>``) where it has one, else what its entry says: the zip in the
    preset's resources, checked against the entry's pin, not downloaded, the official split
    sizes."""
    if dataset.name in settings:
        return settings[dataset.name]
    source = dataset.sources[0]
    return dict(archive=f"resources/{preset}/{source.name}", sha1=source.sha1, download=False,
                url=None, size=None, train_count=dataset.train_count,
                val_count=dataset.val_count)


def download_args(settings: dict) -> list[str]:
    """``internseg download-*`` options for a preset's settings of a dataset (config.yaml):
    where from, and the sha1 and size the file is checked against."""
    words = ["--sha1", settings["sha1"]] if settings["sha1"] else []
    if settings["url"]:
        words += ["--url", settings["url"]]
    if settings["size"]:
        words += ["--size", str(settings["size"])]
    return words


def prepare_extracted(dataset: Dataset, source: str | Path, data_root: str | Path, *,
                      sha1: str | None = None, download: bool = False, url: str | None = None,
                      size: int | None = None, manifest_path: str | Path | None = None,
                      train_count: int | None = None, val_count: int | None = None,
                      max_errors: int = MAX_ERRORS, workers: int | None = None,
                      progress: bool = True, report: Report = log.info) -> Prepared:
    """Make ``<data_root>/<tree>`` a validated tree of ``dataset`` and write its manifest.

    ``source`` is the dataset's zip or an extracted folder; with ``download``, a missing zip
    is first fetched from ``url`` (default: the entry's).  ``manifest_path`` defaults to
    ``<data_root>/<tree>.manifest.json``; the split sizes to the entry's.  Idempotent: when the
    manifest still describes the tree, nothing is read or written.
    """
    source = Path(source).absolute()
    data_root = Path(data_root).absolute()
    target = data_root / dataset.tree
    manifest_path = Path(manifest_path or data_root / f"{dataset.tree}.manifest.json")
    sha1 = normalize_sha1(sha1, "expected SHA-1")
    train_count = train_count or dataset.train_count
    val_count = val_count or dataset.val_count
    checks = dict(dataset=dataset, train_count=train_count, val_count=val_count,
                  max_errors=max_errors, workers=workers, progress=progress, report=report)
    if not source.exists() and download:
        fetch_zip(dataset, source, url=url, sha1=sha1, size=size, progress=progress,
                  report=report)
    if not source.exists():
        raise DatasetError(f"{source}: source not found; place {dataset.sources[0].name} there "
                           "or pass --download")
    data_root.mkdir(parents=True, exist_ok=True)

    with locked(data_root, report):
        for stale in remove_stale_partials(dataset, data_root):
            report(f"removed {stale}, left by an interrupted run")
        manifest = _current_manifest(dataset, manifest_path, target, train_count, val_count)
        actual = origin = None
        if source.is_file():
            # a given --sha1 is always checked, and the tree must come from this very zip
            actual = check_sha1(dataset, source, sha1, progress=progress)
            origin = _extracted_from(target, manifest)
            if manifest is not None and manifest.get("source_kind") != "zip":
                # a tree the user made or pointed to: theirs, never replaced
                log.warning("%s was not extracted from %s but validated as found (from %s); "
                            "remove it and %s to extract the zip", target, source.name,
                            manifest.get("source"), manifest_path.name)
            elif origin is not None and origin != actual:
                report(f"{target} was extracted from an archive with SHA-1 {origin}; "
                       f"{source} has {actual}: extracting again")
                return _replace_from_zip(source, actual, target, manifest_path, checks)
        if manifest is not None:
            report(f"{target}: up to date (manifest {manifest_path})")
            return Prepared(manifest, "up-to-date")

        if source.is_dir():
            tree = _tree_in(dataset, source)
            if sha1 is not None:
                log.warning("--sha1 applies to a zip source; %s is a folder", source)
            facts = validate_tree(tree, **checks)
            if os.path.lexists(target) and target.resolve() != tree.resolve():
                raise DatasetError(f"{target} already exists and is not {tree}; "
                                   f"remove it, or pass it as the source")
            action = "validated-in-place"
            if not os.path.lexists(target):
                _link_into_place(dataset, tree, target)
                action = "linked"
            manifest = build_manifest(dataset, target, tree, "folder", None, facts)
        elif os.path.lexists(target):
            # A tree is only renamed into place after it validated, so this one lost its
            # manifest (the workflow deletes it before preparing) or was made by hand:
            # validate it where it is, never overwrite it. Extracted from this very zip
            # (its source record), it stays the zip's.
            ours = origin == actual
            report(f"{target} exists without a current manifest; validating it in place "
                   + (f"(extracted from {source.name})" if ours
                      else f"instead of extracting {source.name}"))
            try:
                facts = validate_tree(target, **checks)
            except DatasetError as err:
                raise DatasetError(f"{err}\nremove {target} to extract {source} again") from None
            manifest = (build_manifest(dataset, target, source, "zip", actual, facts) if ours
                        else build_manifest(dataset, target, target, "folder", None, facts))
            action = "validated-in-place"
        else:
            facts = _extract_into_place(source, actual, target, manifest_path, checks)
            manifest = build_manifest(dataset, target, source, "zip", actual, facts)
            action = "extracted"
        write_json(manifest_path, manifest)
    report(f"{target}: {action}; {manifest['train_count']} training and "
           f"{manifest['val_count']} validation pairs; manifest {manifest_path}")
    return Prepared(manifest, action)


def _extract_into_place(source: Path, actual: str, target: Path, manifest_path: Path,
                        checks: dict) -> dict:
    """Extract ``source`` beside ``target``, validate it, record the zip it came from and
    swap it into place; returns the validated tree's facts."""
    dataset = checks["dataset"]
    extracted = extract_zip(dataset, source, target.parent, progress=checks["progress"],
                            report=checks["report"])
    try:
        facts = validate_tree(extracted, where=f"{source} (extracted)", **checks)
        _record_source(extracted, source, actual)
        swap_into_place(dataset, extracted, target, manifest_path)
    finally:
        _discard(extracted.parent)
    return facts


def _replace_from_zip(source: Path, actual: str, target: Path, manifest_path: Path,
                      checks: dict) -> Prepared:
    """Extract and validate ``source`` beside the stale ``target``, then swap them."""
    report = checks["report"]
    dataset = checks["dataset"]
    facts = _extract_into_place(source, actual, target, manifest_path, checks)
    manifest = build_manifest(dataset, target, source, "zip", actual, facts)
    write_json(manifest_path, manifest)
    report(f"{target}: re-extracted; {manifest['train_count']} training and "
           f"{manifest['val_count']} validation pairs; manifest {manifest_path}")
    return Prepared(manifest, "re-extracted")
