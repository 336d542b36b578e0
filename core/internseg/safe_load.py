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

import pickle
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


def safe_load(path: str | Path, map_location="cpu", *, mmap: bool | None = None):
    """``torch.load(path, weights_only=True)``; any failure is a :class:`CheckpointError`
    naming the file: refused (the pickle wants to build objects or call functions, named in
    the message) or unreadable (truncated, corrupt, not a checkpoint).

    ``mmap``: the tensors are views of the memory-mapped file, not a copy read into the
    process, for a caller that copies them into a model and lets them go: the pages stay in
    the page cache, shared by the ranks of a node. Files in torch's pre-1.6 format cannot be
    mapped and are read. None: as torch's serialization config says (``config.load.mmap``,
    which :func:`verify_checkpoint` and the resumes set; a False passed on to torch.load
    would override it and read a 70 GB checkpoint into memory)."""
    import torch
    from torch.utils.serialization import config

    if mmap is None:
        mmap = config.load.mmap
    path = check_local(path)
    if path.is_dir() and (path / DCP_METADATA).is_file():
        raise CheckpointError(f"{path}: a sharded run's checkpoint folder, which only a "
                              "sharded run (--gpus 2 or more) resumes")
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
    once, so a 70 GB checkpoint needs no memory for this, only the time to read it. A sharded
    run's checkpoint folder is checked by :func:`verify_dcp_folder`.
    """
    from torch.utils.serialization import config

    path = Path(path)
    if path.is_dir():
        verify_dcp_folder(path)
        return
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


# ---------------------------------------------------------------- distributed checkpoints
#
# A sharded run's periodic checkpoint is a folder written by torch.distributed.checkpoint
# (DCP): ``.metadata`` (which rank's file holds which chunk of which tensor), one
# ``__<rank>_0.distcp`` file of tensors per rank, and ``extra.pth`` (everything that is not a
# sharded tensor: meta, message hub, schedulers, the optimizer's parameter groups), written by
# rank 0 with ``torch.save`` and read weights-only like every other file.
#
# torch 2.13's FileSystemReader reads ``.metadata`` with plain ``pickle.load``, and its
# DefaultLoadPlanner reads non-tensor entries of the ``.distcp`` files with
# ``torch.load(weights_only=False)``: either would run code from a crafted folder.
# :class:`SafeFileSystemReader` reads the metadata through :class:`MetadataUnpickler`, which
# builds only the checkpoint metadata types; :func:`check_dcp_metadata` then refuses any
# non-tensor entry (we never write one), so the planner's byte path is never reached, and
# :class:`TensorsOnlyLoadPlanner` refuses it besides.

DCP_METADATA = ".metadata"
DCP_EXTRA = "extra.pth"


def _metadata_types() -> dict[tuple[str, str], object]:
    import pathlib

    import torch
    from torch.distributed.checkpoint import filesystem, metadata

    allowed = {("torch.distributed.checkpoint.metadata", name): getattr(metadata, name)
               for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata",
                            "ChunkStorageMetadata", "TensorProperties", "StorageMeta",
                            "MetadataIndex", "_MEM_FORMAT_ENCODING")}
    allowed[("torch.distributed.checkpoint.filesystem", "_StorageInfo")] = filesystem._StorageInfo
    allowed[("torch", "Size")] = torch.Size
    # a lookup of torch's layout objects by name (torch.strided), nothing else
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout
    # StorageMeta.checkpoint_id: the folder it was written to
    allowed[("pathlib", "PosixPath")] = pathlib.PosixPath
    return allowed


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles a DCP ``.metadata`` file and nothing else: a global outside the metadata's
    own types (and torch's dtypes) is refused before anything is called."""

    def find_class(self, module: str, name: str):
        import torch

        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        found = _metadata_types().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not a checkpoint metadata type")
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not checkpoint metadata")


def read_dcp_metadata(path: str | Path):
    """The ``Metadata`` of a DCP folder's ``.metadata`` file, read by
    :class:`MetadataUnpickler`; :class:`UnsafeCheckpointError` if it names anything else,
    :class:`CheckpointError` if it is not readable."""
    from torch.distributed.checkpoint.metadata import Metadata

    path = Path(path)
    try:
        with open(path, "rb") as f:
            metadata = MetadataUnpickler(f).load()
    except pickle.UnpicklingError as err:
        if "checkpoint metadata" in str(err):
            raise UnsafeCheckpointError(f"{path}: refused: {err} (a checkpoint folder from an "
                                        "untrusted source, or not one of ours)") from None
        raise CheckpointError(f"{path}: not readable checkpoint metadata ({err})") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not readable checkpoint metadata ({err})") from None
    if not isinstance(metadata, Metadata):
        raise CheckpointError(f"{path}: holds a {type(metadata).__name__}, not checkpoint "
                              "metadata")
    return metadata


def check_dcp_metadata(folder: Path, metadata) -> None:
    """Tensors only, each in a file of the folder itself that is long enough for it."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    others = [fqn for fqn, item in metadata.state_dict_metadata.items()
              if not isinstance(item, TensorStorageMetadata)]
    if others:
        raise UnsafeCheckpointError(f"{folder}: refused: {others[:3]} are not tensors (our "
                                    "checkpoint folders hold tensors only; other entries "
                                    "would be unpickled with code execution allowed)")
    sizes: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        name = getattr(info, "relative_path", None)
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise UnsafeCheckpointError(f"{folder}: refused: its metadata names a data file "
                                        f"outside the folder ({name!r})")
        if not (isinstance(info.offset, int) and isinstance(info.length, int)):
            raise CheckpointError(f"{folder}: its metadata gives {name} a position that is "
                                  "not a number")
        if name not in sizes:
            try:
                sizes[name] = (folder / name).stat().st_size
            except FileNotFoundError:
                raise CheckpointError(f"{folder}: {name} is missing") from None
        if info.offset + info.length > sizes[name]:
            raise CheckpointError(f"{folder}: {name} is shorter than its metadata says "
                                  f"({sizes[name]} < {info.offset + info.length} bytes)")


def verify_dcp_folder(folder: str | Path) -> None:
    """A complete checkpoint folder: safe metadata naming tensors only, every data file
    there and long enough, and ``extra.pth`` a readable weights-only checkpoint. (The data
    files carry no checksums: their bytes are not read here. A folder only gets its name
    once every rank has written its file, so a killed writer leaves no such folder.)"""
    folder = Path(folder)
    if not (folder / DCP_METADATA).is_file():
        raise CheckpointError(f"{folder}: a checkpoint folder without {DCP_METADATA}")
    check_dcp_metadata(folder, read_dcp_metadata(folder / DCP_METADATA))
    verify_checkpoint(folder / DCP_EXTRA)


def _safe_reader_class():
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeFileSystemReader(FileSystemReader):
        """torch's FileSystemReader with the metadata read safely and checked."""

        def read_metadata(self, *args, **kwargs):
            path = Path(self._get_metadata_path(kwargs.get("rank")))
            metadata = read_dcp_metadata(path)
            check_dcp_metadata(path.parent, metadata)
            # what torch's own read_metadata sets after unpickling
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeFileSystemReader


def _tensors_only_planner_class():
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class TensorsOnlyLoadPlanner(DefaultLoadPlanner):
        """torch's load planner without its path for non-tensor entries, which unpickles
        them with ``weights_only=False``."""

        def load_bytes(self, read_item, value) -> None:
            raise UnsafeCheckpointError(f"refused: {read_item.dest_index.fqn} is not a tensor")

    return TensorsOnlyLoadPlanner


def safe_dcp_load(state_dict: dict, folder: str | Path) -> None:
    """``torch.distributed.checkpoint.load`` of a checkpoint folder into ``state_dict`` (its
    tensors, possibly sharded DTensors, are filled in place; resharded where the folder was
    written by another rank count), reading nothing that could run code."""
    import torch.distributed.checkpoint as dcp

    # refused here, as itself: inside dcp.load the reader's refusal comes back wrapped in a
    # CheckpointException of every rank's traceback
    folder = Path(folder)
    check_dcp_metadata(folder, read_dcp_metadata(folder / DCP_METADATA))
    reader = _safe_reader_class()(str(folder))
    dcp.load(state_dict, storage_reader=reader, planner=_tensors_only_planner_class()())
