"""Safe zip extraction and the partial-folder discipline shared by the dataset preparations.

A dataset tree is built in a hidden partial folder inside ``data_root`` and renamed into place
only once it validated; whatever a killed run leaves carries the partial prefix, so the next
run finds it with one glob.  Every zip entry is vetted before anything is written, and each
write is checked once more against its destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import InputError
from .locks import exclusive

MAX_ERRORS = 20
# Who holds a data root's lock, while it is held (locks.exclusive)
HOLDER_RECORD = ".internseg-lock-holder.json"
_DRIVE = re.compile(r"^[A-Za-z]:")

Report = Callable[[str], None]


class DatasetError(InputError):
    """A dataset source or tree that cannot be used; the message names the file and problem."""


def progress_bar(iterable=None, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, mininterval=1.0, file=sys.stderr, **kwargs)


# ---------------------------------------------------------------- entry vetting


def unsafe_entry_reason(info: zipfile.ZipInfo) -> str | None:
    """Why extracting this entry could write outside the target folder, or None if it cannot."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if name.startswith(("/", "\\")):
        return "has an absolute path"
    if _DRIVE.match(name):
        return "has a drive letter"
    # Backslashes count as separators too: a zip written on Windows may use them.
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' component"
    return None


def unsafe_entries(infos: Iterable[zipfile.ZipInfo]) -> list[str]:
    return [f"entry {i.filename!r} {reason}" for i in infos
            if (reason := unsafe_entry_reason(i)) is not None]


def _duplicates(names: list[str]) -> list[str]:
    seen, dupes = set(), []
    for name in names:
        if name in seen and name not in dupes:
            dupes.append(name)
        seen.add(name)
    return dupes


@contextlib.contextmanager
def vetted_zip(zip_path: Path, tops: Iterable[str], *, report: Report
               ) -> Iterator[tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]]:
    """The open zip and its members under the ``tops`` folders, once the WHOLE archive passed
    the checks: one unsafe entry anywhere means the archive is not what it claims to be."""
    tops = tuple(tops)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DatasetError(f"{zip_path}: not a readable zip archive ({err})") from None
    with zf:
        infos = zf.infolist()
        dupes = _duplicates([i.filename for i in infos])
        if dupes:
            raise DatasetError(format_problems(f"{zip_path}: duplicate entries (which copy is "
                                               "meant is ambiguous)", dupes, MAX_ERRORS))
        refused = unsafe_entries(infos)
        if refused:
            raise DatasetError(format_problems(f"{zip_path}: refusing to extract", refused,
                                               len(refused)))
        members = [i for i in infos if i.filename.startswith(tuple(f"{t}/" for t in tops))]
        if not members:
            wanted = " or ".join(f"{t}/" for t in tops)
            raise DatasetError(f"{zip_path}: no {wanted} folder inside the archive")
        if len(members) < len(infos):
            report(f"{zip_path}: skipping {len(infos) - len(members)} entries outside "
                   f"{', '.join(f'{t}/' for t in tops)}")
        yield zf, members


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> int:
    """Write one (already vetted) member below ``dest``; returns the bytes written."""
    parts = [p for p in info.filename.split("/") if p not in ("", ".")]
    target = dest.joinpath(*parts)
    # Second line of defence behind unsafe_entry_reason: never write outside dest.
    if not target.resolve().is_relative_to(dest.resolve()):
        raise DatasetError(f"zip entry {info.filename!r} would be written outside {dest}")
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return info.file_size


def extract_members(zf: zipfile.ZipFile, zip_path: Path, members: list[zipfile.ZipInfo],
                    dest: Path, *, progress: bool = True, report: Report) -> int:
    """Extract vetted ``members`` below ``dest``, keeping their paths; returns the bytes.

    ``dest`` belongs to the caller, who removes it when this raises: a half-extracted folder
    must never be trusted, but only the caller knows whether it may be deleted.
    """
    total = sum(i.file_size for i in members)
    start = time.perf_counter()
    with progress_bar(total=total, unit="B", unit_scale=True, desc=f"extract {zip_path.name}",
                      disable=not progress) as bar:
        for info in members:
            try:
                bar.update(_extract_entry(zf, info, dest))
            except (zipfile.BadZipFile, EOFError, zlib.error) as err:
                raise DatasetError(
                    f"{zip_path}: entry {info.filename!r} is corrupt ({err})") from None
    report(throughput("extracted", len(members), total, time.perf_counter() - start))
    return total


# ---------------------------------------------------------------- partial folders and locking


def discard(path: Path) -> None:
    """Remove a partial folder or temporary link without ever following a link."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def remove_partials(data_root: Path, prefix: str, keep: Iterable[Path] = ()) -> list[Path]:
    """Delete what killed runs left behind (except ``keep``); the caller holds the lock."""
    keep = set(keep)
    stale = [p for p in sorted(data_root.glob(f"{prefix}*")) if p not in keep]
    for path in stale:
        discard(path)
    return stale


def locked(folder: Path, report: Report | None = None):
    """Exclusive lock on the folder itself: no lock file is left behind (as ``filelock``'s
    would be), and two concurrent runs cannot delete each other's partial folder. A second
    run waits, saying at once which process it waits for."""
    return exclusive(folder, what=f"data root {folder}", record=folder / HOLDER_RECORD,
                     report=report)


# ---------------------------------------------------------------- reporting and listing


def format_problems(header: str, problems: list[str], max_errors: int = MAX_ERRORS) -> str:
    """One line for one problem; otherwise a header and the first ``max_errors`` problems."""
    if len(problems) == 1:
        return f"{header}: {problems[0]}"
    lines = [f"{header} ({len(problems)} problems):"]
    lines += [f"  - {p}" for p in problems[:max_errors]]
    if len(problems) > max_errors:
        lines.append(f"  ... and {len(problems) - max_errors} more")
    return "\n".join(lines)


def throughput(verb: str, files: int, nbytes: int, seconds: float) -> str:
    seconds = max(seconds, 1e-9)
    return (f"{verb} {files} files ({nbytes / 1e6:.1f} MB) in {seconds:.1f} s: "
            f"{files / seconds:.0f} files/s, {nbytes / 1e6 / seconds:.1f} MB/s")


def list_files(folder: Path, suffix: str) -> tuple[dict[str, int], list[str]]:
    """Stems of ``*suffix`` files with their sizes, and the names of anything else.

    Hidden names are skipped: they are our own temporary files, never dataset content.
    """
    found, other = {}, []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.name.endswith(suffix) and entry.is_file():
                found[entry.name[: -len(suffix)]] = entry.stat().st_size
            else:
                other.append(entry.name)
    return found, sorted(other)


# ---------------------------------------------------------------- dataset trees


def check_pair(root: Path, image: str, label: str, label_values_problem) -> list[str]:
    """Problems of one image/label pair (paths relative to ``root``); ``label_values_problem``
    (the label map's pixels -> a problem or None) is the dataset's rule for its ids.

    Both are decoded in full: a JPEG cut short has an intact header and fails only when its
    pixels are read.
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(root / image) as im:
            image_size = im.size
            im.load()
    except Exception as err:  # PIL raises many types for a broken file
        return [f"{image}: unreadable image ({err})"]
    try:
        with Image.open(root / label) as lab:
            label_size, mode = lab.size, lab.mode
            # Mode "P" is single-channel too, but decoders disagree on palette PNGs (cv2
            # expands them to BGR), so only plain 8-bit grey gives the same ids everywhere.
            pixels = np.asarray(lab) if mode == "L" else None
    except Exception as err:
        return [f"{label}: unreadable label map ({err})"]
    problems = []
    if pixels is None:
        problems.append(f"{label}: label map must be single-channel 8-bit (PIL mode 'L'), "
                        f"found mode {mode!r}")
    elif problem := label_values_problem(pixels):
        problems.append(f"{label}: {problem}")
    if image_size != label_size:
        problems.append(f"{label}: size {label_size[0]}x{label_size[1]} differs from its image "
                        f"{image} ({image_size[0]}x{image_size[1]})")
    return problems


def validate_pairs(root: Path, layout, expected: dict[str, int], label_values_problem, *,
                   title: str, where: str, max_errors: int, workers: int | None,
                   progress: bool, report: Report) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The checks every prepared tree gets, over its ``layout`` (:class:`datasets.Layout`):
    each image beside its label map, the expected count of each (``expected``: split key ->
    count), nothing else in the folders, and every pair decoded in full by ``check_pair``
    with the dataset's ``label_values_problem``. One DatasetError lists every problem; else
    the stems and bytes per split key."""
    from concurrent.futures import ThreadPoolExecutor

    if not root.is_dir():
        raise DatasetError(f"{where}: not a folder")
    problems: list[str] = []
    stems: dict[str, list[str]] = {}
    nbytes: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    for split, key in layout.splits():
        image = f"{layout.images}/{split}/{{}}{layout.image_suffix}".format
        label = f"{layout.labels}/{split}/{{}}{layout.label_suffix}".format
        images, maps = (listing(root / folder / split, suffix, f"{folder}/{split}", problems)
                        for folder, suffix in ((layout.images, layout.image_suffix),
                                               (layout.labels, layout.label_suffix)))
        if len(images) != expected[key] or len(maps) != expected[key]:
            problems.append(f"{split}: found {len(images)} images and {len(maps)} label maps, "
                            f"expected {expected[key]} of each")
        problems += [f"{image(s)}: no label map {label(s)}"
                     for s in sorted(images.keys() - maps.keys())]
        problems += [f"{label(s)}: no image {image(s)}"
                     for s in sorted(maps.keys() - images.keys())]
        both = sorted(images.keys() & maps.keys())
        stems[key] = both
        nbytes[key] = sum(images[s] + maps[s] for s in both)
        pairs += [(image(s), label(s)) for s in both]
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    start = time.perf_counter()
    # PIL releases the GIL while decoding, so threads overlap decoding and file reads.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda pair: check_pair(root, *pair, label_values_problem), pairs)
        for found in progress_bar(results, total=len(pairs), desc="validate", unit="pair",
                                  disable=not progress):
            problems += found
    report(throughput("validated", 2 * len(pairs), sum(nbytes.values()),
                      time.perf_counter() - start))
    if problems:
        raise DatasetError(format_problems(f"{where}: {title} validation failed", problems,
                                           max_errors))
    return stems, nbytes


def listing(folder: Path, suffix: str, what: str, problems: list[str]) -> dict[str, int]:
    """The ``suffix`` files of ``folder`` (stem -> bytes); a missing folder or any other entry
    is added to ``problems``, named as ``what``."""
    if not folder.is_dir():
        problems.append(f"{what}: folder missing")
        return {}
    found, other = list_files(folder, suffix)
    problems += [f"{what}/{name}: unexpected entry (want *{suffix} files)" for name in other]
    return found


def stems_sha256(stems: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(stems).encode()).hexdigest()


def listing_matches(manifest: dict, root: Path, layout) -> bool:
    """Whether the tree at ``root`` still holds the pairs its manifest lists; file names only,
    not decoded (the no-op path of a rerun must stay cheap)."""
    for split, key in layout.splits():
        for folder, suffix in ((layout.images, layout.image_suffix),
                               (layout.labels, layout.label_suffix)):
            try:
                listed = sorted(list_files(root / folder / split, suffix)[0])
            except OSError:
                return False
            if stems_sha256(listed) != manifest.get(f"{key}_stems_sha256"):
                return False
    return True
