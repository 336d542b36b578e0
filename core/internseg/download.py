"""Resumable HTTP(S) downloads that are checked before anyone can use them.

The body streams into ``<dest>.part``; only once the whole file is there, of the pinned size and
digest (sha256, or the sha1 that is all ADE20K publishes), is it renamed to ``dest``.  A dropped
connection is resumed with a ``Range`` request inside the same call, and a ``.part`` left by a
killed process is resumed by the next call, so a 20 GB archive never starts over because of one
hiccup.  Plain ``urllib``: dataset hosts need no
more, and the project takes no new dependency for it.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from .errors import InputError
from .io import hash_file

log = logging.getLogger("internseg")

# hex digits of each digest a file may be checked with
DIGEST_LENGTHS = {"sha1": 40, "sha256": 64}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIABLE = re.compile(r"bytes \*/(\d+)")


class DownloadError(InputError):
    """A download that failed or delivered the wrong file; the message says which failure."""


class _Transient(Exception):
    """A failure that another attempt may not repeat: a dropped connection, a 5xx, a refusal."""


class _Unsatisfiable(Exception):
    """HTTP 416 to a resume request; carries the file's length when the server gave it."""

    def __init__(self, total: int | None):
        super().__init__(total)
        self.total = total


def normalize_digest(value: str | None, algorithm: str, what: str) -> str | None:
    """``value`` as lower-case hex of ``algorithm``'s length, or one line naming ``what``."""
    if value is None:
        return None
    value = value.strip().lower()
    if not re.fullmatch(f"[0-9a-f]{{{DIGEST_LENGTHS[algorithm]}}}", value):
        raise InputError(f"{what} must be {DIGEST_LENGTHS[algorithm]} hex digits, got {value!r}")
    return value


def part_path(dest: str | Path) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def download(url: str, dest: str | Path, *, sha256: str | None = None, sha1: str | None = None,
             size: int | None = None, progress: bool = True, retries: int = 4, backoff: float = 1.0,
             timeout: float = 60.0, chunk: int = 1 << 20,
             report: Callable[[str], None] = log.info) -> Path:
    """Download ``url`` to ``dest``, resuming whatever ``<dest>.part`` holds; returns ``dest``.

    ``retries`` counts attempts in a row that add no byte (waiting ``backoff``, doubled each
    time): a connection that drops after every few megabytes still completes.  ``size`` and the
    digest (``sha256`` or ``sha1``, at most one) are checked, in that order, before the rename;
    a file failing either is deleted.  Raises DownloadError naming the file and the failure.
    """
    dest = Path(dest)
    if sha256 is not None and sha1 is not None:
        raise InputError(f"{dest.name}: give the expected sha256 or sha1, not both")
    algorithm = "sha1" if sha1 is not None else "sha256"
    digest = (algorithm, normalize_digest(sha1 if sha1 is not None else sha256, algorithm,
                                          f"{dest.name}: expected {algorithm}"))
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(part) as fh, _bar(dest.name, size, fh.tell(), progress) as bar:
        if fh.tell():
            report(f"{dest.name}: resuming {part} at byte {fh.tell()}")
        try:
            _attempts(url, dest.name, part, fh, size=size, retries=retries, backoff=backoff,
                      timeout=timeout, chunk=chunk, bar=bar, report=report)
        except BaseException:
            if not fh.tell():
                part.unlink()  # nothing to resume: leave no empty file behind
            raise
        # still under the lock: nobody appends between the check and the rename
        _check_and_place(part, dest, digest, size, progress)
    return dest


def _attempts(url: str, name: str, part: Path, fh: BinaryIO, *, size, retries, backoff,
              timeout, chunk, bar, report) -> None:
    failures = 0
    while True:
        before = fh.tell()
        try:
            _attempt(url, name, fh, size=size, timeout=timeout, chunk=chunk, bar=bar,
                     report=report)
            return
        except _Transient as err:
            failures = 0 if fh.tell() > before else failures + 1
            if failures > retries:
                raise DownloadError(
                    f"{name}: {err}; {failures} attempts in a row without progress "
                    f"({fh.tell()} bytes kept in {part}: run again to resume)") from None
            wait = backoff * 2 ** max(failures - 1, 0)
            report(f"{name}: {err}; retrying in {wait:.1f} s")
            time.sleep(wait)


def _check_and_place(part: Path, dest: Path, digest: tuple[str, str | None], size,
                     progress) -> None:
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise DownloadError(f"{dest.name}: downloaded {got} bytes, expected {size}; "
                            "the partial file was deleted")
    algorithm, expected = digest
    actual = hash_file(part, algorithm, progress=progress)
    if expected is not None and actual != expected:
        part.unlink()
        raise DownloadError(f"{dest.name}: {algorithm} mismatch: expected {expected}, actual "
                            f"{actual}; the downloaded file was deleted")
    if expected is None:
        log.warning("%s: no %s to check the download against; it has %s %s",
                    dest.name, algorithm, algorithm, actual)
    os.replace(part, dest)


@contextlib.contextmanager
def _exclusive(part: Path) -> Iterator[BinaryIO]:
    """``part`` opened for appending, locked: two processes appending to one file would
    interleave their bytes into something that only the checksum could catch."""
    import fcntl

    with open(part, "ab") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(f"{part}: another process is downloading into it") from None
        yield fh


def _bar(name: str, size: int | None, initial: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=size, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"download {name}", mininterval=1.0, file=sys.stderr, disable=not progress)


def _open(url: str, name: str, offset: int, timeout: float):
    headers = {"User-Agent": "internseg"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    host = urlsplit(url).netloc
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            found = _UNSATISFIABLE.fullmatch(err.headers.get("Content-Range", ""))
            raise _Unsatisfiable(int(found[1]) if found else None) from None
        if err.code >= 500 or err.code in (408, 429):
            raise _Transient(f"HTTP {err.code} from {url}") from None
        raise DownloadError(f"{name}: HTTP {err.code} {err.reason} from {url}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, socket.gaierror):
            raise DownloadError(f"{name}: offline or host not found: {host} ({url})") from None
        if isinstance(reason, ConnectionRefusedError):
            raise _Transient(f"connection refused by {host}") from None
        if isinstance(reason, TimeoutError):
            raise _Transient(f"no answer from {host} within {timeout:g} s") from None
        raise _Transient(f"cannot reach {host}: {reason}") from None
    except (TimeoutError, OSError, http.client.HTTPException) as err:
        raise _Transient(f"cannot reach {host}: {err}") from None


def _attempt(url: str, name: str, fh: BinaryIO, *, size, timeout, chunk, bar, report) -> None:
    """One request, appending to ``fh`` from its current end. Returns when the file is whole."""
    offset = fh.tell()
    try:
        resp = _open(url, name, offset, timeout)
    except _Unsatisfiable as err:
        if err.total == offset:
            return  # a killed run had received every byte, only the rename was missing
        report(f"{name}: the server cannot resume at byte {offset} (HTTP 416); starting over")
        _restart(fh, bar)
        raise _Transient(f"HTTP 416 from {url}") from None
    with resp:
        length = resp.headers.get("Content-Length")
        total = None
        if resp.status == 206:
            found = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
            if not found or int(found[1]) != offset:
                raise DownloadError(f"{name}: {url} answered a request for byte {offset} "
                                    f"onwards with Content-Range {found and found[0]!r}")
            total = None if found[3] == "*" else int(found[3])
        else:
            if offset:
                report(f"{name}: the server ignored the Range request; starting over "
                       f"from byte 0 ({offset} bytes discarded)")
                _restart(fh, bar)
            total = int(length) if length is not None else None
        if size is not None and total is not None and total != size:
            # a mirror with another version of the file: not worth downloading to find out
            raise DownloadError(f"{name}: {url} serves {total} bytes, expected {size}")
        if total is not None:
            bar.total = total
        try:
            while block := resp.read(chunk):
                fh.write(block)
                bar.update(len(block))
        except (TimeoutError, OSError, http.client.HTTPException) as err:
            raise _Transient(f"connection lost at byte {fh.tell()} ({err})") from None
        finally:
            fh.flush()
    if total is not None and fh.tell() < total:
        raise _Transient(f"connection closed at byte {fh.tell()} of {total}")


def _restart(fh: BinaryIO, bar) -> None:
    fh.seek(0)
    fh.truncate()
    bar.reset(total=bar.total)
