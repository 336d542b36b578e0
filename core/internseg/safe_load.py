"""The one way a checkpoint enters the process: ``torch.load(weights_only=True)``.

A ``.pth`` file is a pickle, and a pickle can name any function to call while it is read.
``weights_only=True`` only rebuilds tensors and plain containers. mmengine 0.10.12's loader
catches that refusal and silently retries with ``weights_only=False``, which runs the
payload: :func:`install` replaces every scheme of mmengine's ``CheckpointLoader`` (the path
of the Runner's ``load_from``/``resume``, the strategies' ``load_checkpoint`` and
``init_cfg=Pretrained``) by :func:`load_from_local_weights_only`, so that retry cannot be reached from our code.

Our own checkpoints load without any extra allowed global: the Runner's message hub, the one
part that pickles objects (mmengine's ``HistoryBuffer``, with numpy arrays and bound methods
reached through ``getattr``), is stored as plain tensors (:class:`PlainMessageHubHook`).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from .errors import InputError


class CheckpointError(InputError):
    """A checkpoint that cannot be read safely or adapted to the model; names file and key."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle would call or build what a weights-only load refuses: not
    damage from a crash, so never skipped over in favour of an older checkpoint."""


def unsafe_globals(path: str | Path) -> list[str]:
    """The globals a file's pickle would need beyond what ``weights_only`` allows. Reads the
    pickle's opcodes only; nothing in the file is executed."""
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a readable torch zip at all: no globals to name
        return []


REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_local(path: str | Path, what: str = "checkpoint") -> Path:
    """A checkpoint given by address (``https://``, ``s3://``) is refused with what to do:
    nothing is downloaded unverified. (``Path`` would fold ``https://x`` into ``https:/x``
    and call it missing.)"""
    if REMOTE.match(str(path)):
        raise remote_refused(path, what)
    return Path(path)


def remote_refused(path, what: str = "checkpoint") -> CheckpointError:
    return CheckpointError(f"{what} {path}: only local checkpoint files are loaded; fetch it "
                           "with `internseg fetch` (which verifies it) and pass the path")


def safe_load(path: str | Path, map_location="cpu", *, mmap: bool = False):
    """``torch.load(path, weights_only=True)``; any failure is a :class:`CheckpointError`
    naming the file: refused (the pickle wants to build objects or call functions, named in
    the message) or unreadable (truncated, corrupt, not a checkpoint).

    ``mmap``: the tensors are views of the memory-mapped file, not a copy read into the
    process, for a caller that copies them into a model and lets them go: the pages stay in
    the page cache, shared by the ranks of a node. Files in torch's pre-1.6 format cannot be
    mapped and are read."""
    import torch

    path = check_local(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True,
                          mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:
        unsafe = unsafe_globals(path)
        if unsafe:
            raise UnsafeCheckpointError(
                f"{path}: refused: loading it would call or build {', '.join(unsafe[:5])}, "
                "which a weights-only load does not allow (a checkpoint from an untrusted "
                "source, or written before internseg stored plain tensors only)") from None
        # torch's own message opens with advice to load it with weights_only=False, which
        # would run whatever the pickle holds: only what its unpickler objected to is kept
        text = str(err).split("WeightsUnpickler error:")[-1].strip()
        reason = text.splitlines()[0] if text else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason[:200]})") from None


def verify_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete checkpoint that loads
    with ``weights_only=True``: its pickle reads, and every zip entry matches its CRC-32.

    Tensors are memory-mapped, not read, while unpickling; the CRC pass streams the file
    once, so a 70 GB checkpoint needs no memory for this, only the time to read it.
    """
    from torch.utils.serialization import config

    path = Path(path)
    previous = config.load.mmap
    config.load.mmap = True
    try:
        safe_load(path)
    finally:
        config.load.mmap = previous
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if len(set(names)) != len(names):
                raise CheckpointError(f"{path}: duplicate entries in its zip directory")
            bad = zf.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: entry {bad} fails its CRC-32 check (corrupt data)")


# mmengine logs a loader's name from its 11th character on as the backend: "local_weights_only"
def load_from_local_weights_only(filename, map_location=None):
    """mmengine's local scheme, without its ``weights_only=False`` retry."""
    return safe_load(Path(filename).expanduser(), map_location=map_location)


def load_from_remote_refused(filename, map_location=None):
    raise remote_refused(filename)


def install() -> None:
    """Route every checkpoint mmengine loads for us through :func:`load_from_local_weights_only`."""
    from mmengine.runner.checkpoint import CheckpointLoader

    for prefix in list(CheckpointLoader._schemes):
        loader = load_from_local_weights_only if prefix == "" else load_from_remote_refused
        CheckpointLoader.register_scheme(prefix, loader, force=True)
    CheckpointLoader.register_scheme("", load_from_local_weights_only, force=True)
