"""Files in and out. Out: atomic, so that a reader never sees a half-written file and a killed
writer leaves only a temporary file that names its writer. In: one reader per format, so that
a file that is not what we expect is one line naming the file, the line and what was expected.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, MissingFileError

# ---------------------------------------------------------------- reading


def _expected(expect) -> str:
    return {dict: "a JSON object", list: "a JSON list"}.get(expect, expect.__name__)


def read_text(path: str | Path, what: str) -> str:
    """A text file we read; a missing, unreadable or non-UTF-8 one names the file."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: {what} is a directory, expected a file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: {what} is not UTF-8 text (byte {err.start})") from None


def _parse_json(text: str, path: Path, what: str, expect, line: int | None = None):
    """``text`` of ``path`` (line ``line`` of it, for JSON lines) as JSON of type ``expect``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{(line or 1) + err.lineno - 1}:{err.colno}: {what} is not "
                         f"valid JSON ({err.msg})") from None
    if expect is not None and not isinstance(value, expect):
        where = f"{path}:{line}" if line else str(path)
        raise InputError(f"{where}: {what} must be {_expected(expect)}, "
                         f"found {type(value).__name__}")
    return value


def read_json(path: str | Path, what: str, expect: type | None = dict):
    """The JSON value of ``path``, which must be of type ``expect`` (None: any); a missing,
    unreadable or malformed file, or a value of another type, is an :class:`InputError`
    naming the file (and line and column), what it should hold and what was expected."""
    path = Path(path)
    return _parse_json(read_text(path, what), path, what, expect)


def read_jsonl(path: str | Path, what: str, expect: type | None = dict) -> list:
    """One JSON value per line (blank lines skipped); a broken line is named by its own number
    in the file, not by the parser's line 1 of that line."""
    path = Path(path)
    return [_parse_json(line, path, what, expect, number)
            for number, line in enumerate(read_text(path, what).splitlines(), 1)
            if line.strip()]


def json_field(record: dict, key: str, path: str | Path, expect: type | tuple = int):
    """``record[key]``, which must be there and of type ``expect`` (bool is not an int)."""
    value = record.get(key)
    wanted = expect if isinstance(expect, tuple) else (expect,)
    if value is None or (isinstance(value, bool) and bool not in wanted) or not isinstance(
            value, wanted):
        names = " or ".join(t.__name__ for t in wanted)
        found = "missing" if key not in record else f"{value!r}"
        raise InputError(f"{path}: key '{key}' must be {names}, found {found}")
    return value


def read_yaml(path: str | Path, what: str, expect: type | None = dict):
    """A YAML file read safely, refusing a key given twice in one mapping (PyYAML keeps the
    last one silently); errors name file, line and column."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # a complex key: SafeLoader's own checks apply
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {seen[key] + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep)

    path = Path(path)
    try:
        value = yaml.load(read_text(path, what), Loader=UniqueKeyLoader)
    except yaml.YAMLError as err:
        at, opened = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
        where = f"{path}:{at.line + 1}:{at.column + 1}" if at else str(path)
        context = f" ({err.context} at line {opened.line + 1})" if opened else (
            f" ({err.context})" if getattr(err, "context", None) else "")
        raise InputError(f"{where}: {getattr(err, 'problem', None) or err}{context}") from None
    if expect is not None and not isinstance(value, expect):
        raise InputError(f"{path}: {what} must be a mapping, found {type(value).__name__}")
    return value


# ---------------------------------------------------------------- writing

# A temporary file is `.<name>.tmp.<pid>@<host>.<random><suffix>`: the writer it belongs to
# can be told alive or dead (`stale_temp_files`), so that what a killed writer left is removed
# and a live writer's file is not.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp\.(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.)?"
                       r"[a-z0-9_]{8}")


def temp_prefix(name: str) -> str:
    return f".{name}.tmp.{os.getpid()}@{_HOST}."


def refuse_directory(path: str | Path, what: str = "output") -> Path:
    """``path`` names a file to write; an existing directory there is an input error (found
    before the work, not at the final rename)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path}: is a directory; give the file to write, "
                         f"e.g. {path / 'metrics.json'}")
    return path


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def full_disk_cause(err: BaseException | None) -> OSError | None:
    """The full-disk OSError that ``err`` is, or that it was raised while handling: torch.save
    reports a full disk as a RuntimeError about stream positions, raised over the OSError."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in FULL_DISK:
            return err
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def naming_full_disk(path: str | Path, *, temporary: str | Path | None = None) -> Iterator[None]:
    """A full disk while writing ``path`` (a file, or the folder a library writes into) is an
    OSError naming ``path``: a write error carries no file name. One that names another file
    (or ``temporary``, ours for ``path``) is left as it is."""
    try:
        yield
    except Exception as err:
        full = full_disk_cause(err)
        if full is None or full.filename not in (None, str(temporary)):
            raise
        raise OSError(full.errno, full.strerror, str(path)) from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only on success. A full
    disk while writing it names ``path``."""
    path = refuse_directory(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffix: some writers (mmengine Config.dump) pick the format from it
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; the finished file should get the usual umask-derived mode
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with naming_full_disk(path, temporary=tmp):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return True


def stale_temp_files(folder: str | Path, *, name: str | None = None,
                     no_live_writer: bool = False) -> list[Path]:
    """Temporary files of :func:`atomic_path` in ``folder`` (of the output ``name`` only, if
    given) whose writer is dead: its pid, on this host, is not running. ``no_live_writer``:
    the caller holds the lock every writer of this folder takes (a work dir), so every
    temporary file there is a dead writer's, those of other hosts and of older versions (no
    pid in the name) included."""
    found = []
    try:
        entries = list(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        match = TEMP_NAME.match(entry.name)
        # folders too: a sharded checkpoint is written into a temporary folder
        if not match or entry.is_symlink() or name not in (None, match["name"]):
            continue
        pid, host = match["pid"], match["host"]
        if no_live_writer or (pid and host == _HOST and not writer_alive(int(pid))):
            found.append(entry)
    return sorted(found)


def remove_path(path: Path) -> int:
    """Delete a file or a folder with everything in it; returns the bytes it held. A link is
    unlinked, never followed: its target is not ours to remove."""
    if path.is_dir() and not path.is_symlink():
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path)
        return size
    size = path.lstat().st_size
    path.unlink()
    return size


def remove_stale_temp_files(folder: str | Path, *, name: str | None = None,
                            no_live_writer: bool = False) -> list[Path]:
    """Delete :func:`stale_temp_files`, saying so; returns what was deleted."""
    stale = stale_temp_files(folder, name=name, no_live_writer=no_live_writer)
    for path in stale:
        try:
            size = remove_path(path)
        except FileNotFoundError:  # another cleaner was first
            continue
        logging.getLogger("internseg").warning(
            "removed %s (%d bytes), left by a writer that was killed", path, size)
    return stale


def check_writable(folder: str | Path, what: str) -> Path:
    """Create ``folder`` if needed and make sure a file can be written in it, so that a
    read-only work, output or cache folder fails at the start, not after hours of work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"{what} {folder}: not writable ({err.strerror or err})") from None
    return folder


def check_creatable(folder: str | Path, what: str) -> Path:
    """``folder`` can be made and written later, checked without leaving anything (a dry run
    must not create it): a probe folder is made and removed in the nearest part of its path
    that exists (``os.access`` says yes to root on a read-only mount). A read-only results
    folder then fails before any job, not when the first job's output folder is made."""
    folder = Path(folder)
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-test.", dir=existing))
    except OSError as err:
        raise InputError(f"{what} {folder}: cannot write in {existing} "
                         f"({err.strerror or err})") from None
    return folder


def check_output_file(path: str | Path, what: str) -> Path:
    """An output file named on the command line: not a directory, in a writable folder. What
    killed writers of this output left there is removed."""
    path = refuse_directory(path, what)
    check_writable(path.parent, f"{what} folder")
    remove_stale_temp_files(path.parent, name=path.name)
    return path


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(path: str | Path, obj) -> Path:
    import torch

    with atomic_path(path) as tmp:
        # through a Python file: a full disk is then an OSError with its errno, where
        # torch.save(path) reports a RuntimeError about stream positions
        with open(tmp, "wb") as f:
            torch.save(obj, f)
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
