"""download(): resumable HTTP against a local server on 127.0.0.1 that misbehaves on request
(tests/http_server.py)."""

from __future__ import annotations

import fcntl
import hashlib
import socket

import pytest
from http_server import serving

from internseg.download import DownloadError, download, part_path
from internseg.errors import InputError

BODY = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(BODY).hexdigest()
FAST = dict(progress=False, backoff=0.0, chunk=4096)


@pytest.fixture
def server():
    with serving(BODY) as srv:
        yield srv


def test_full_download_is_checked_and_renamed(server, tmp_path):
    dest = tmp_path / "sub" / "file.zip"
    assert download(server.url(), dest, sha256=SHA, size=len(BODY), **FAST) == dest
    assert dest.read_bytes() == BODY
    assert not part_path(dest).exists()
    assert server.ranges == [None]


def test_dropped_connections_resume_with_range(server, tmp_path):
    server.cut = len(BODY) // 3 + 1  # every response stops a third of the way
    lines = []
    dest = download(server.url(), tmp_path / "file.zip", sha256=SHA, report=lines.append,
                    **FAST)
    assert dest.read_bytes() == BODY
    step = len(BODY) // 3 + 1
    assert server.ranges == [None, f"bytes={step}-", f"bytes={2 * step}-"]
    assert any("connection closed at byte" in line for line in lines)


def test_a_killed_runs_part_is_resumed(server, tmp_path):
    dest = tmp_path / "file.zip"
    part_path(dest).write_bytes(BODY[:40000])
    lines = []
    download(server.url(), dest, sha256=SHA, size=len(BODY), report=lines.append, **FAST)
    assert dest.read_bytes() == BODY
    assert server.ranges == ["bytes=40000-"]
    assert any("resuming" in line and "40000" in line for line in lines)


def test_a_complete_part_is_only_renamed(server, tmp_path):
    dest = tmp_path / "file.zip"
    part_path(dest).write_bytes(BODY)  # killed between the last byte and the rename
    download(server.url(), dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == BODY
    assert server.ranges == [f"bytes={len(BODY)}-"]


def test_a_server_ignoring_range_starts_over_and_says_so(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "file.zip"
    part_path(dest).write_bytes(b"\xff" * 5000)  # would corrupt the file if appended to
    lines = []
    download(server.url(), dest, sha256=SHA, report=lines.append, **FAST)
    assert dest.read_bytes() == BODY
    assert any("ignored the Range request; starting over" in line for line in lines)


def test_http_500_is_named_after_the_retries(server, tmp_path):
    server.status = 500
    dest = tmp_path / "file.zip"
    with pytest.raises(DownloadError) as err:
        download(server.url(), dest, retries=2, **FAST)
    message = str(err.value)
    assert message.startswith(f"file.zip: HTTP 500 from {server.url()}")
    assert "3 attempts in a row" in message and "\n" not in message
    assert len(server.ranges) == 3
    assert not dest.exists() and not part_path(dest).exists()


def test_http_404_is_not_retried(server, tmp_path):
    server.status = 404
    with pytest.raises(DownloadError, match=r"file.zip: HTTP 404 .* from http://127\.0\.0\.1"):
        download(server.url(), tmp_path / "file.zip", **FAST)
    assert len(server.ranges) == 1


def test_connection_refused_is_named(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=f"file.zip: connection refused by 127.0.0.1:{port}"):
        download(f"http://127.0.0.1:{port}/file.zip", tmp_path / "file.zip", retries=1, **FAST)


def test_no_dns_is_offline_or_host_not_found(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DownloadError,
                       match=r"file.zip: offline or host not found: images.example.org"):
        download("http://images.example.org/file.zip", tmp_path / "file.zip", **FAST)


def test_truncated_after_all_retries_keeps_the_part(server, tmp_path):
    server.cut = 0  # headers, then nothing, every time
    dest = tmp_path / "file.zip"
    part_path(dest).write_bytes(BODY[:1000])
    with pytest.raises(DownloadError) as err:
        download(server.url(), dest, retries=2, **FAST)
    message = str(err.value)
    assert f"connection closed at byte 1000 of {len(BODY)}" in message
    assert "run again to resume" in message
    assert part_path(dest).read_bytes() == BODY[:1000]


def test_wrong_sha256_is_refused_and_deleted(server, tmp_path):
    dest = tmp_path / "file.zip"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        download(server.url(), dest, sha256=wrong, **FAST)
    message = str(err.value)
    assert message.startswith("file.zip: sha256 mismatch")
    assert wrong in message and SHA in message
    assert not dest.exists() and not part_path(dest).exists()


def test_a_server_with_another_size_is_refused_before_downloading(server, tmp_path):
    dest = tmp_path / "file.zip"
    with pytest.raises(DownloadError, match=f"serves {len(BODY)} bytes, expected 123"):
        download(server.url(), dest, size=123, **FAST)
    assert not part_path(dest).exists() and not dest.exists()


def test_malformed_sha256_is_an_input_error(server, tmp_path):
    with pytest.raises(InputError, match="64 hex digits"):
        download(server.url(), tmp_path / "file.zip", sha256="abc", **FAST)
    assert server.ranges == []


def test_a_second_downloader_is_refused(server, tmp_path):
    dest = tmp_path / "file.zip"
    with open(part_path(dest), "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DownloadError, match="another process is downloading"):
            download(server.url(), dest, **FAST)
    assert server.ranges == []


def test_a_sha1_is_checked_like_a_sha256(server, tmp_path):
    dest = tmp_path / "file.zip"
    sha1 = hashlib.sha1(BODY).hexdigest()
    with pytest.raises(DownloadError, match=f"file.zip: sha1 mismatch: expected {'0' * 40}, "
                                            f"actual {sha1};"):
        download(server.url(), dest, sha1="0" * 40, **FAST)
    assert not dest.exists() and not part_path(dest).exists()
    assert download(server.url(), dest, sha1=sha1.upper(), **FAST).read_bytes() == BODY


@pytest.mark.parametrize("digests,named", [
    (dict(sha1="abc"), "expected sha1 must be 40 hex digits"),
    (dict(sha1="0" * 40, sha256="0" * 64), "the expected sha256 or sha1, not both"),
])
def test_a_malformed_or_doubled_digest_is_an_input_error(server, tmp_path, digests, named):
    with pytest.raises(InputError, match=named):
        download(server.url(), tmp_path / "file.zip", **digests, **FAST)
    assert server.ranges == []
