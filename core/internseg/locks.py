"""Exclusive locks between our processes, and who holds them.

Every lock is an ``flock`` on a file or a folder. Its holder writes a record (pid, host,
command) while it holds it, so that a process that finds the lock taken says at once whom it
waits for, or is refused by: a lock that is simply waited on looks like a hang (an orphaned
worker held a data root for as long as nobody found it). ``filelock`` records no holder.

Processes a holder forks share its lock: :func:`die_with_parent` is the initializer of every
worker pool we start, so that the lock goes when its holder is killed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

log = logging.getLogger("internseg")

# Between two tries of a lock that is held: the first "waiting" line comes after one try.
POLL_S = 0.5
# A wait says again that it is still waiting this often.
REMIND_S = 60.0
# Commands are recorded in full; messages show them up to this length.
SHOWN_CHARS = 120
HOST = socket.gethostname()
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class LockHeld(InputError):
    """A lock that may not be waited for is held by another process."""


def this_command() -> str:
    """How this process was started, as a user would type it (``internseg clean --remove``)."""
    first = sys.argv[0] if sys.argv else ""
    python = Path(sys.executable).name
    if first in ("", "-c"):
        first = f"{python} -c"
    elif Path(first).name == "__main__.py":
        first = f"{python} -m {Path(first).parent.name}"
    else:
        first = Path(first).name
    return " ".join([first, *sys.argv[1:]])


def holder(record: Path) -> str:
    """Who holds a lock, from its holder's record."""
    try:
        found = json.loads(record.read_text())
        pid, host, command = int(found["pid"]), str(found["host"]), str(found["command"])
    except (OSError, ValueError, KeyError, TypeError):
        # a holder of an older version, or one between taking the lock and writing this
        return f"a process that left no record of itself in {record}"
    if len(command) > SHOWN_CHARS:
        command = command[:SHOWN_CHARS - 3] + "..."
    said = f"`{command}` (pid {pid} on {host})"
    if host == HOST and not _alive(pid):
        said += (", which is no longer running: a process it started still holds the lock; "
                 "stop it")
    return said


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


@contextmanager
def exclusive(lock: str | Path, *, what: str, record: str | Path | None = None,
              wait: bool = True, report: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (a file, created if missing, or a folder).

    ``record``: the file naming the holder (default: the lock file itself; a folder's lock
    needs one beside its contents, which is removed on release). While another process holds
    the lock, ``wait`` says so at once naming it and keeps trying (again every
    :data:`REMIND_S`); without ``wait`` it is refused with :class:`LockHeld` naming it.
    """
    lock = Path(lock)
    report = report or log.warning
    own_file = record is None
    record = lock if own_file else Path(record)
    if lock.is_dir():
        fd, where = os.open(lock, os.O_RDONLY), ""
    else:
        fd, where = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666), f" (lock {lock})"
    try:
        started = said = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise LockHeld(f"{what} is in use by {holder(record)}{where}; wait for it "
                                   "or stop it") from None
                now = time.monotonic()
                started = started or now
                if said is None or now - said >= REMIND_S:
                    waited = f" for {now - started:.0f} s" if said is not None else ""
                    report(f"waiting{waited} for {what}: it is in use by {holder(record)}"
                           f"{where}")
                    said = now
                time.sleep(POLL_S)
        if started is not None:
            report(f"{what}: lock taken after {time.monotonic() - started:.0f} s of waiting")
        entry = json.dumps(dict(pid=os.getpid(), host=HOST, command=this_command(),
                                since=time.strftime("%Y-%m-%d %H:%M:%S")))
        recorded = True
        if own_file:
            os.ftruncate(fd, 0)
            os.pwrite(fd, entry.encode(), 0)
        else:
            try:
                record.write_text(entry)
            except OSError:
                # a read-only folder that only needs reading (a shared, prepared data root):
                # a waiter then says that the holder left no record
                recorded = False
        try:
            yield
        finally:
            # cleared while still held: no waiter reads the record of a holder that let go
            if own_file:
                os.ftruncate(fd, 0)
            elif recorded:
                record.unlink(missing_ok=True)
    finally:
        os.close(fd)  # also releases the lock


def die_with_parent(parent: int) -> None:
    """Initializer of a worker pool's processes: the kernel kills a worker when the process
    that started it dies. A worker forked while its parent holds a lock shares that lock; a
    parent killed alone (an out-of-memory kill) left workers that held it until someone found
    them. Linux only (``prctl``); elsewhere workers finish their queue first."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the kernel was told
        os._exit(1)
