"""Fetch pinned files (the InternViT-6B checkpoint, published logs) and verify them before use.

Files come from the Hugging Face Hub at a fixed commit, or from a local folder holding the
same files (the demo, offline machines). Either way the file is checked against the pinned
size and sha256 and only then placed at its destination, atomically.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from internseg.errors import InputError, MissingFileError
from internseg.io import atomic_path, hash_file, write_sidecar

log = logging.getLogger(__name__)

DEFAULT_REPO_ID = "OpenGVLab/InternVL"

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ChecksumError(InputError):
    """The fetched file is not the pinned one."""

    def __init__(self, filename: str, check: str, expected, actual):
        super().__init__(f"{filename}: {check} mismatch: expected {expected}, got {actual}")
        self.filename, self.check, self.expected, self.actual = filename, check, expected, actual


class PinError(InputError):
    """A revision or checksum that cannot pin a file reproducibly."""


def check_revision(revision: str | None) -> None:
    if revision is not None and _COMMIT.fullmatch(revision):
        return
    raise PinError(
        f"revision {revision!r} is not a full 40-character lowercase commit hash; a branch or tag can"
        " move, so results would not be reproducible. Pass the commit id (see the repo's history)."
    )


def check_repo_id(repo_id: str) -> None:
    """huggingface_hub's own rule, before anything is asked of the Hub (it raised it as a
    traceback from deep inside the download)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PinError(f"--repo-id {repo_id!r}: not a Hub repo id ({str(err).split(': ')[0]})"
                       ) from None


def fetch_file(
    filename: str,
    *,
    repo_id: str = DEFAULT_REPO_ID,
    revision: str | None,
    dest: str | Path,
    sha256: str | None,
    size: int | None,
    local_dir: str | Path | None = None,
) -> Path:
    """Place the verified ``filename`` at ``dest`` and return ``dest``.

    With ``local_dir`` the file is taken from ``local_dir/filename`` and the Hub is not contacted.
    Otherwise it is downloaded into the Hugging Face cache (``HF_HUB_CACHE``) from ``repo_id`` at
    ``revision``, which must be a commit hash.
    ``sha256``/``size`` of None mean "not pinned": the file is accepted with a warning that
    reports the actual value so it can be pinned.

    Raises ChecksumError (dest untouched or removed, bad cache entry evicted), PinError, or
    FileNotFoundError when ``local_dir`` lacks the file.
    """
    dest = Path(dest)
    if sha256 is not None:
        sha256 = sha256.lower()
        if not _SHA256.fullmatch(sha256):
            raise PinError(f"{filename}: pinned sha256 {sha256!r} is not 64 hex digits")
    if local_dir is None:
        check_repo_id(repo_id)
        check_revision(revision)

    # Re-verifying an existing dest costs one read; re-downloading it costs 12 GB when the cache was pruned.
    if sha256 is not None and dest.is_file():
        try:
            _record(dest, _verify(dest, filename, sha256, size))
            log.info("%s: %s already verified", filename, dest)
            return dest
        except ChecksumError as err:
            log.warning("replacing %s: %s", dest, err)
            dest.unlink()

    if local_dir is not None:
        src = Path(local_dir) / filename
        if not src.is_file():
            raise MissingFileError(f"{filename}: not found in local dir: {src}")
        # A bad file in the user's own folder is reported, not deleted: it is theirs.
        actual = _verify(src, filename, sha256, size)
    else:
        src = _download(filename, repo_id=repo_id, revision=revision)
        try:
            actual = _verify(src, filename, sha256, size)
        except ChecksumError:
            _evict(src)
            raise

    _place(src, dest)
    _record(dest, actual)
    return dest


def _record(dest: Path, sha256: str) -> None:
    """The digest as verified, which a run's identity reads instead of hashing 12 GB again
    (``io.recorded_sha256`` trusts it while it is newer than the file)."""
    write_sidecar(dest, sha256)


def _download(filename: str, *, repo_id: str, revision: str | None) -> Path:
    """Download into the HF cache and return the snapshot path (a symlink to the blob).

    Why the cache rather than ``hf_hub_download(local_dir=...)``: the cache is what
    ``HF_HUB_OFFLINE=1`` reads, what other tools share, and the blob is named by its etag, so a
    bad one can be evicted precisely. ``_place`` then hard-links the blob to ``dest``, so the
    12 GB exist once on disk (a copy is made only across filesystems).

    On resume: huggingface_hub 2.4.0 streams into a per-process ``<etag>.<random>.incomplete``
    file, retries a dropped connection up to 5 times with a ``Range`` request inside the same
    call, and deletes the partial file if the call fails. So a broken connection is resumed, a
    killed process is not, whichever destination mode is used.
    """
    from huggingface_hub import hf_hub_download

    # Read at call time: huggingface_hub reads HF_ENDPOINT once, when it is first imported.
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    # token=None: huggingface_hub takes HF_TOKEN (or the saved login) itself; it never passes through here.
    try:
        path = hf_hub_download(
            repo_id, filename, revision=revision, endpoint=endpoint,
            library_name="internseg",
        )
    except Exception as err:
        reason = hub_failure(err, endpoint or "https://huggingface.co")
        if reason is None:
            raise
        raise HubError(f"{filename} from {repo_id} at {revision}: {reason}") from None
    return Path(path)


class HubError(InputError):
    """The Hub did not give the file; the message says which failure it was."""


def _causes(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def hub_failure(err: BaseException, endpoint: str) -> str | None:
    """Why a download failed, in words that tell offline, refused, a server error and a
    missing file apart (huggingface_hub folds most into one 'check your connection'); None
    for a failure that is not the network's or the repo's (keeps its traceback)."""
    import socket

    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RemoteEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    for cause in _causes(err):
        if isinstance(cause, RemoteEntryNotFoundError):
            return "no such file in the repo at that revision"
        if isinstance(cause, RevisionNotFoundError):
            return "no such revision in the repo"
        if isinstance(cause, GatedRepoError):
            return "the repo is gated: accept its terms and set HF_TOKEN"
        if isinstance(cause, RepositoryNotFoundError):
            return "no such repo (or a private one: set HF_TOKEN)"
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            return f"HTTP {cause.response.status_code} from {endpoint} (the Hub or a proxy failed)"
        if isinstance(cause, OfflineModeIsEnabled):
            return "offline (HF_HUB_OFFLINE is set) and the file is not in the cache"
        if isinstance(cause, socket.gaierror) or "Name or service not known" in str(cause) or (
                "nodename nor servname" in str(cause)):
            return f"cannot resolve the host of {endpoint}: this machine looks offline"
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return f"connection refused by {endpoint}"
        if type(cause).__name__ == "RemoteProtocolError":  # httpx's, however it is packaged
            return (f"the connection closed before the end of the file, on every retry "
                    f"({cause}): {endpoint} or a proxy cuts the download")
        if "timed out" in str(cause).lower() or type(cause).__name__.endswith("Timeout"):
            return f"{endpoint} did not answer in time"
    if isinstance(err, LocalEntryNotFoundError):
        return f"{endpoint} cannot be reached and the file is not in the cache ({err})"
    return None


def _verify(path: Path, filename: str, sha256: str | None, size: int | None) -> str:
    actual_size = path.stat().st_size
    if size is None:
        log.warning("%s: size is not pinned (actual %d bytes)", filename, actual_size)
    elif actual_size != size:
        raise ChecksumError(filename, "size", size, actual_size)
    actual = hash_file(path, "sha256")
    if sha256 is None:
        log.warning("%s: sha256 is not pinned; computed sha256 %s (pin it to make this check strict)",
                    filename, actual)
    elif actual != sha256:
        raise ChecksumError(filename, "sha256", sha256, actual)
    return actual


def _evict(snapshot_path: Path) -> None:
    """Drop a bad cached file so the next call downloads it again instead of reusing it."""
    blob = Path(os.path.realpath(snapshot_path))
    blob.unlink(missing_ok=True)
    snapshot_path.unlink(missing_ok=True)
    log.warning("removed the bad cached copy %s", blob)


def _place(src: Path, dest: Path) -> None:
    # A hard link shares the inode, so a source rewritten in place would change dest too. HF blobs
    # are only ever replaced by rename, and fetch_file re-verifies dest, so the 12 GB saved win.
    src = Path(os.path.realpath(src))
    with atomic_path(dest) as tmp:
        tmp.unlink()  # os.link refuses an existing target
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or one without hard links
            log.info("copying %s to %s", src, dest)
            shutil.copyfile(src, tmp)
