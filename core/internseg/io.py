"""Atomic file output: a reader never sees a half-written file, a killed writer leaves none."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffix: some writers (mmengine Config.dump) pick the format from it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; the finished file should get the usual umask-derived mode
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: str | Path, what: str) -> Path:
    """Create ``folder`` if needed and make sure a file can be written in it, so that a
    read-only work, output or cache folder fails at the start, not after hours of work."""
    from .errors import InputError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"{what} {folder}: not writable ({err.strerror or err})") from None
    return folder


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(path: str | Path, obj) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# Hashing a small file is instant; a bar would only be noise.
PROGRESS_MIN_BYTES = 64 << 20


def hash_file(path: str | Path, algorithm: str = "sha256", *, chunk: int = 8 << 20,
              progress: bool = True) -> str:
    """Hex digest of a file read in chunks, with a byte progress bar for big files (a 12 GB
    checkpoint takes about a minute; ``hashlib.file_digest`` has no progress hook)."""
    from tqdm import tqdm

    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.new(algorithm)
    show = progress and size >= PROGRESS_MIN_BYTES
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, mininterval=1.0,
                                     desc=f"{algorithm} {path.name}", file=sys.stderr,
                                     disable=not show) as bar:
        while block := f.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    return hash_file(path, "sha256")


# ---------------------------------------------------------------- sha256 sidecars
# `<file>.sha256` in sha256sum format ("<digest>  <name>"), written beside a file when its
# digest was computed or verified, so that a later step need not hash it again (a 12 GB trunk
# takes a minute) and can tell when the file changed.


def sidecar_path(path: str | Path) -> Path:
    return Path(f"{path}.sha256")


def write_sidecar(path: str | Path, digest: str, *, sidecar: str | Path | None = None) -> Path:
    """Record ``digest`` for ``path`` (in ``sidecar``, default ``<path>.sha256``)."""
    return write_text(sidecar or sidecar_path(path), f"{digest}  {Path(path).name}\n")


def read_sidecar(sidecar: str | Path) -> str | None:
    """The digest a sidecar records; None when there is none, or not 64 hex digits."""
    try:
        words = Path(sidecar).read_text().split()
    except FileNotFoundError:
        return None
    digest = words[0].lower() if words else ""
    return digest if len(digest) == 64 and set(digest) <= set("0123456789abcdef") else None


def recorded_sha256(path: str | Path) -> str:
    """sha256 of a file, from its sidecar if that is newer than the file's inode change (any
    rewrite, rename or link of the file updates it), else computed."""
    path = Path(path)
    sidecar = sidecar_path(path)
    if sidecar.is_file() and sidecar.stat().st_mtime_ns >= path.stat().st_ctime_ns:
        recorded = read_sidecar(sidecar)
        if recorded:
            return recorded
    return sha256_file(path)
