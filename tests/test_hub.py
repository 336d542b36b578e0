"""internseg.hub against a local stand-in for the Hub's file endpoint: no network needed."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from internseg.hub import ChecksumError, HubError, PinError, fetch_file

REPO = "OpenGVLab/InternVL"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
NAME = "intern_vit_6b_224px.pth"
DATA = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
TOKEN = "hf_testsecret_Zq81kLm"


class FakeHub:
    """Answers HEAD/GET on ``/{repo}/resolve/{rev}/{file}`` with the headers huggingface_hub needs.

    huggingface_hub 2.4.0 requires ``X-Repo-Commit`` and an ETag (``X-Linked-Etag`` or ``ETag``) on
    the HEAD reply, takes the size from ``X-Linked-Size``/``Content-Length``, and resumes a broken GET
    with ``Range: bytes=N-``. No ``X-Xet-Hash`` header is sent, so it never switches to Xet.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.cut_first_get_at: int | None = None
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def gets(self):
        return [r for r in self.requests if r[0] == "GET"]

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((h.command, h.path, {k.lower(): v for k, v in h.headers.items()}))
        m = re.fullmatch(rf"/{REPO}/resolve/([^/]+)/(.+)", h.path)
        if not m or m[1] not in (COMMIT, "main"):
            h.send_response(404)
            h.send_header("X-Error-Code", "RevisionNotFound")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = self.files.get(m[2])
        if data is None:
            h.send_response(404)
            h.send_header("X-Error-Code", "EntryNotFound")
            h.send_header("X-Repo-Commit", COMMIT)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = 0
        if body and (rng := h.headers.get("Range")):
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("X-Linked-Size", str(len(data)))
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        if not body:
            return
        if self.cut_first_get_at is not None and not start:
            # Headers promised the whole file; closing early is a dropped connection to the client.
            h.wfile.write(data[: self.cut_first_get_at])
            self.cut_first_get_at = None
            return
        h.wfile.write(data[start:])


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """A private HF home, no token, online, no Xet: nothing of the user's setup leaks in."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub copies these from the environment once, at import.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    return home / "hub"


@pytest.fixture
def hub(hf_env, monkeypatch):
    server = FakeHub({NAME: DATA, "log.json": b'{"mIoU": 58.9}\n'})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


def fetch(dest, **kw):
    kw = {"repo_id": REPO, "revision": COMMIT, "sha256": SHA, "size": len(DATA), **kw}
    return fetch_file(NAME, dest=dest, **kw)


def cached_blobs(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("blobs/*") if p.is_file()]


def test_download_verifies_and_lands_at_dest(hub, hf_env, tmp_path):
    dest = tmp_path / "weights" / NAME
    assert fetch(dest) == dest
    assert dest.read_bytes() == DATA
    assert {r[0] for r in hub.requests} == {"HEAD", "GET"}
    assert all(r[1] == f"/{REPO}/resolve/{COMMIT}/{NAME}" for r in hub.requests)
    # dest shares the cache blob's inode: the checkpoint is stored once.
    (blob,) = cached_blobs(hf_env)
    assert os.stat(blob).st_ino == os.stat(dest).st_ino
    # no temp file left over; the verified sha256 recorded beside it, sha256sum-style
    sidecar = dest.with_name(f"{NAME}.sha256")
    assert sorted(dest.parent.iterdir()) == sorted([dest, sidecar])
    assert sidecar.read_text() == f"{hashlib.sha256(DATA).hexdigest()}  {NAME}\n"


def test_copies_when_hard_link_fails(hub, tmp_path, monkeypatch):
    def no_link(*a, **k):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    dest = tmp_path / NAME
    fetch(dest)
    assert dest.read_bytes() == DATA and not dest.is_symlink()


def test_dropped_connection_resumes_with_range(hub, hf_env, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # Resume works in whole chunks (10 MB by default); small chunks let a small file show it.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    cut = len(DATA) // 2
    hub.cut_first_get_at = cut
    dest = tmp_path / NAME
    fetch(dest)
    assert dest.read_bytes() == DATA
    first, second = hub.gets()
    assert "range" not in first[2]
    start = int(re.fullmatch(r"bytes=(\d+)-", second[2]["range"])[1])
    assert 0 < start <= cut


def test_wrong_bytes_raise_and_are_evicted(hub, hf_env, tmp_path):
    hub.files[NAME] = bytes(len(DATA))  # right size, wrong content
    dest = tmp_path / NAME
    with pytest.raises(ChecksumError) as exc:
        fetch(dest)
    msg = str(exc.value)
    assert NAME in msg and "sha256" in msg and SHA in msg
    assert hashlib.sha256(bytes(len(DATA))).hexdigest() in msg
    assert not dest.exists()
    assert cached_blobs(hf_env) == []
    assert not any(p.is_symlink() or p.is_file() for p in hf_env.rglob(f"snapshots/*/{NAME}"))
    # With the bad copy gone, fixing the server is enough: the next call downloads again.
    hub.files[NAME] = DATA
    fetch(dest)
    assert dest.read_bytes() == DATA
    assert len(hub.gets()) == 2


def test_wrong_size_raises(hub, tmp_path):
    dest = tmp_path / NAME
    with pytest.raises(ChecksumError) as exc:
        fetch(dest, size=len(DATA) + 1)
    assert exc.value.check == "size"
    assert f"{NAME}: size mismatch: expected {len(DATA) + 1}, got {len(DATA)}" in str(exc.value)
    assert not dest.exists()


def test_unpinned_file_is_accepted_with_its_hash_reported(hub, tmp_path, caplog, monkeypatch):
    import internseg.io

    monkeypatch.setattr(internseg.io, "PROGRESS_MIN_BYTES", 0)  # hash through the progress-bar path
    caplog.set_level(logging.WARNING, logger="internseg.hub")
    dest = tmp_path / NAME
    fetch(dest, sha256=None, size=None)
    assert dest.read_bytes() == DATA
    assert SHA in caplog.text and "not pinned" in caplog.text
    assert str(len(DATA)) in caplog.text


def test_offline_mode_uses_the_filled_cache(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    fetch(tmp_path / "a" / NAME)
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    dest = tmp_path / "b" / NAME
    fetch(dest)
    assert dest.read_bytes() == DATA


def test_offline_without_cache_fails_cleanly(hf_env, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="offline"):
        fetch(tmp_path / NAME)
    assert not (tmp_path / NAME).exists()
    assert run_cli(["fetch", NAME, "--out", str(tmp_path / NAME), "--revision", COMMIT]) == 2
    err = capsys.readouterr().err
    assert f"error: {NAME} from {REPO}" in err and "offline (HF_HUB_OFFLINE" in err


def test_verified_dest_is_reused_without_the_hub(hub, hf_env, tmp_path):
    import shutil

    dest = tmp_path / NAME
    fetch(dest)
    hub.stop()
    shutil.rmtree(hf_env)  # a pruned cache must not force a re-download
    assert fetch(dest) == dest
    assert dest.read_bytes() == DATA


def test_corrupt_dest_is_removed_then_replaced(hub, tmp_path):
    dest = tmp_path / NAME
    dest.write_bytes(b"truncated")
    hub.files[NAME] = bytes(len(DATA))
    with pytest.raises(ChecksumError):
        fetch(dest)
    assert not dest.exists()  # a failed refetch must not leave the old bad file for a loader to find
    dest.write_bytes(b"truncated")
    hub.files[NAME] = DATA
    fetch(dest)
    assert dest.read_bytes() == DATA


def test_local_dir_source(hf_env, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the Hub must not be asked
    src = tmp_path / "pre"
    src.mkdir()
    (src / NAME).write_bytes(DATA)
    dest = tmp_path / "out" / NAME
    assert fetch(dest, local_dir=src, revision=None) == dest
    assert dest.read_bytes() == DATA

    (src / NAME).unlink()  # dest is a hard link to it: rewriting in place would change dest too
    (src / NAME).write_bytes(DATA[:-1] + b"\0")
    bad_dest = tmp_path / "out2" / NAME
    with pytest.raises(ChecksumError, match="sha256"):
        fetch(bad_dest, local_dir=src, revision=None)
    assert not bad_dest.exists()
    assert (src / NAME).exists()  # the user's own file is reported, not deleted
    assert dest.read_bytes() == DATA


def test_local_dir_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        fetch(tmp_path / NAME, local_dir=tmp_path / "pre")
    assert str(tmp_path / "pre" / NAME) in str(exc.value)


def test_token_reaches_server_but_is_never_shown(hub, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fetch(tmp_path / NAME, sha256=None)
    assert all(r[2].get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)
    with pytest.raises(ChecksumError):
        fetch(tmp_path / "other" / NAME, sha256="0" * 64)
    out, err = capsys.readouterr()
    assert TOKEN not in out + err + caplog.text


@pytest.mark.parametrize("revision", ["main", "v1.0", COMMIT[:12], COMMIT.upper(), None])
def test_moving_revision_is_refused(hub, tmp_path, revision):
    with pytest.raises(PinError, match="commit"):
        fetch(tmp_path / NAME, revision=revision)
    assert hub.requests == []
    fetch(tmp_path / NAME)
    with pytest.raises(PinError):  # even when dest is already there and verifies
        fetch(tmp_path / NAME, revision=revision)


def test_malformed_sha256_is_refused(hub, tmp_path):
    with pytest.raises(PinError, match="64 hex"):
        fetch(tmp_path / NAME, sha256="abc")
    assert hub.requests == []


def run_cli(argv: list[str]) -> int:
    from internseg.cli import main

    return main(argv)


def test_cli_fetch(hub, tmp_path, capsys):
    dest = tmp_path / NAME
    rc = run_cli(["fetch", NAME, "--out", str(dest), "--repo-id", REPO, "--revision", COMMIT,
                  "--sha256", SHA, "--size", str(len(DATA))])
    assert rc == 0
    assert dest.read_bytes() == DATA
    assert capsys.readouterr().out.strip() == str(dest)


def test_cli_checksum_mismatch_exits_2(hub, tmp_path, capsys):
    dest = tmp_path / NAME
    rc = run_cli(["fetch", NAME, "--out", str(dest), "--revision", COMMIT, "--sha256", "f" * 64])
    assert rc == 2
    err = capsys.readouterr().err
    assert NAME in err and "sha256" in err and "Traceback" not in err
    assert not dest.exists()


def test_cli_missing_local_file_and_branch_exit_2(hf_env, tmp_path, capsys):
    pre = tmp_path / "pre"
    assert run_cli(["fetch", NAME, "--out", str(tmp_path / NAME), "--local-dir", str(pre)]) == 2
    assert str(pre / NAME) in capsys.readouterr().err
    assert run_cli(["fetch", NAME, "--out", str(tmp_path / NAME), "--revision", "main"]) == 2
    assert "'main'" in capsys.readouterr().err


def test_cli_missing_remote_file_exits_2(hub, tmp_path, capsys):
    rc = run_cli(["fetch", "nope.pth", "--out", str(tmp_path / "nope.pth"), "--revision", COMMIT])
    assert rc == 2
    assert "nope.pth" in capsys.readouterr().err


def test_cli_read_only_cache_is_one_line(hub, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    # /sys is read-only even for root, where a chmod'ed folder would still be writable
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/sys/internseg-test-cache")
    from internseg.cli import main

    rc = main(["fetch", NAME, "--out", str(tmp_path / NAME), "--repo-id", REPO,
               "--revision", COMMIT, "--sha256", SHA])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "/sys/internseg-test-cache" in err[-1] and "Traceback" not in err, err
    assert not (tmp_path / NAME).exists()


class FailingHub(FakeHub):
    """Answers every request with HTTP 500, as an overloaded Hub or a broken proxy does."""

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((h.command, h.path, {}))
        h.send_response(500)
        h.send_header("Content-Length", "0")
        h.end_headers()


class CuttingHub(FakeHub):
    """Promises the whole file, then closes the connection after 1000 bytes of it, every time
    (resumed requests too): a proxy that cuts long bodies."""

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        if not body:
            return super()._answer(h, body)
        self.requests.append((h.command, h.path, {}))
        start = int(re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "bytes=0-")[1])
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        h.send_header("Content-Length", str(len(DATA) - start))
        h.end_headers()
        h.wfile.write(DATA[start:start + 1000])
        h.close_connection = True


def closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it closes


@pytest.mark.parametrize("failure", ["http 500", "connection refused", "offline", "cut bodies"])
def test_each_way_the_hub_fails_is_its_own_line(hf_env, tmp_path, monkeypatch, capsys,
                                                  failure):
    """huggingface_hub folds these into one "check your connection"; what to do differs:
    wait for the Hub, fix the address or proxy, or fill the cache / go online."""
    import logging
    import types

    from huggingface_hub import constants
    from huggingface_hub import file_download
    from huggingface_hub.utils import _http

    # its five retries, without their 23 s of backoff (5 s for a cut body)
    for module in (_http, file_download):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    # log handlers on this test's stderr, not on an earlier test's (closed) one
    for name in (None, "huggingface_hub"):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [])
    server = (FailingHub({}) if failure == "http 500" else
              CuttingHub({NAME: DATA}) if failure == "cut bodies" else None)
    if server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
    elif failure == "connection refused":
        monkeypatch.setenv("HF_ENDPOINT", closed_port())
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    try:
        code = run_cli(["fetch", NAME, "--out", str(tmp_path / NAME), "--repo-id", REPO,
                        "--revision", COMMIT, "--sha256", SHA])
    finally:
        if server:
            server.stop()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err[-2000:]
    expected = {"http 500": "HTTP 500 from http://127.0.0.1:",
                "connection refused": "connection refused by http://127.0.0.1:",
                "offline": "offline (HF_HUB_OFFLINE is set)",
                "cut bodies": "the connection closed before the end of the file"}[failure]
    assert lines[-1].startswith(f"internseg fetch: error: {NAME} from {REPO} at {COMMIT}: "
                                f"{expected}"), lines[-1]
    assert not (tmp_path / NAME).exists()


@pytest.mark.parametrize("repo_id", ["OpenGVLab InternVL", "OpenGVLab/InternVL/extra", ""])
def test_a_malformed_repo_id_is_one_line_before_the_hub_is_asked(hub, tmp_path, capsys,
                                                                  repo_id):
    code = run_cli(["fetch", NAME, "--out", str(tmp_path / NAME), "--repo-id", repo_id,
                    "--revision", COMMIT])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    said = f"internseg fetch: error: --repo-id {repo_id!r}: not a Hub repo id ("
    assert err.startswith(said), err
    assert hub.requests == []
