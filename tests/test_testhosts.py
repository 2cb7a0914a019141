"""The test hosts themselves, checked from the host namespace (no httptap involved)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import threading
import time

import pytest

import testhosts
from servers import MiB, pattern_bytes

pytestmark = pytest.mark.root

TIMEOUT = 30.0


def _get_sha256(addr: str, path: str) -> tuple[int, dict[str, str], int, str]:
    """GET ``path``: status, headers, body size and sha256 (streamed, not held in memory)."""
    conn = http.client.HTTPConnection(addr, 80, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        h = hashlib.sha256()
        size = 0
        for _ in range(1 << 20):
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
        return resp.status, dict(resp.getheaders()), size, h.hexdigest()
    finally:
        conn.close()


def _netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          timeout=15).stdout


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


# --------------------------------------------------------------------------- HTTP

@pytest.mark.parametrize("family", [4, 6])
def test_file_download_sha256(test_host: testhosts.TestHost, family: int) -> None:
    addr = test_host.ipv4 if family == 4 else test_host.ipv6
    if addr is None:
        pytest.skip("IPv6 is disabled on this machine: the test host is IPv4 only")
    size, digest = test_host.files["1m"]
    status, headers, got_size, got_digest = _get_sha256(addr, "/files/1m")
    assert status == 200
    assert int(headers["Content-Length"]) == size == MiB
    assert (got_size, got_digest) == (size, digest)


def test_generated_files_are_deterministic_and_distinct(test_host: testhosts.TestHost) -> None:
    size, digest = test_host.files["small"]
    assert size == 1024
    content = testhosts.file_bytes("small", size)
    assert hashlib.sha256(content).hexdigest() == digest
    assert {name: s for name, (s, _) in test_host.files.items()} == testhosts.SESSION_FILES
    assert len({d for _, d in test_host.files.values()}) == len(test_host.files)
    # every 4 KiB page differs, so the 1 MiB block repeats nowhere
    one_mib = testhosts.file_bytes("1m", 2 * MiB)
    assert one_mib[:MiB] != one_mib[MiB:]
    pages = {one_mib[i:i + 4096] for i in range(0, len(one_mib), 4096)}
    assert len(pages) == len(one_mib) // 4096


def test_head_and_keep_alive(test_host: testhosts.TestHost) -> None:
    conn = http.client.HTTPConnection(test_host.ipv4, 80, timeout=TIMEOUT)
    try:
        conn.request("HEAD", "/files/16m")
        resp = conn.getresponse()
        assert resp.status == 200
        assert int(resp.getheader("Content-Length")) == 16 * MiB
        assert resp.read() == b""
        sock = conn.sock
        conn.request("GET", "/bytes/100000")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == testhosts.expected_bytes(100000)
        conn.request("GET", "/files/small")
        resp = conn.getresponse()
        assert resp.read() == testhosts.file_bytes("small", 1024)
        assert conn.sock is sock, "the server closed a keep-alive connection"
    finally:
        conn.close()


@pytest.mark.parametrize("code", [200, 204, 302, 404, 418, 500, 503])
def test_status(test_host: testhosts.TestHost, code: int) -> None:
    conn = http.client.HTTPConnection(test_host.ipv4, 80, timeout=TIMEOUT)
    try:
        conn.request("GET", f"/status/{code}")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == code
        if code != 204:
            assert json.loads(body) == {"status": code}
    finally:
        conn.close()


def test_missing_file_is_404(test_host: testhosts.TestHost) -> None:
    for path in ("/files/nope", "/files/..", "/files/.servers.log", "/nothing"):
        status, _, _, _ = _get_sha256(test_host.ipv4, path)
        assert status == 404, path


@pytest.mark.parametrize("chunked", [False, True])
def test_upload_1m(test_host: testhosts.TestHost, chunked: bool) -> None:
    body = pattern_bytes("upload", MiB)
    conn = http.client.HTTPConnection(test_host.ipv4, 80, timeout=TIMEOUT)
    try:
        if chunked:
            parts = (body[i:i + 100_000] for i in range(0, len(body), 100_000))
            conn.request("POST", "/upload", body=parts, encode_chunked=True,
                         headers={"Transfer-Encoding": "chunked"})
        else:
            conn.request("POST", "/upload", body=body)
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read()) == {"size": MiB,
                                           "sha256": hashlib.sha256(body).hexdigest()}
    finally:
        conn.close()


def test_upload_without_hash_counts_bytes(test_host: testhosts.TestHost) -> None:
    conn = http.client.HTTPConnection(test_host.ipv4, 80, timeout=TIMEOUT)
    try:
        conn.request("PUT", "/upload?hash=none", body=b"x" * 300_000)
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read()) == {"size": 300_000}
    finally:
        conn.close()


# --------------------------------------------------------------------------- echo

@pytest.mark.parametrize("family", [4, 6])
def test_echo_half_close(test_host: testhosts.TestHost, family: int) -> None:
    addr = test_host.ipv4 if family == 4 else test_host.ipv6
    if addr is None:
        pytest.skip("IPv6 is disabled on this machine: the test host is IPv4 only")
    payload = pattern_bytes("echo", 4 * MiB)
    sock = socket.create_connection((addr, test_host.echo_port), timeout=TIMEOUT)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = bytearray()
    with sock:
        for _ in range(1 << 20):
            data = sock.recv(1 << 20)
            if not data:
                break
            received += data
        sender.join(TIMEOUT)
    assert not errors
    assert len(received) == len(payload)
    assert bytes(received) == payload


def test_echo_many_concurrent_connections(test_host: testhosts.TestHost) -> None:
    count = 150
    socks = [socket.create_connection((test_host.ipv4, test_host.echo_port), timeout=TIMEOUT)
             for _ in range(count)]
    try:
        for i, s in enumerate(socks):            # all open at once, then all talk
            s.sendall(f"hello {i}\n".encode() * 100)
            s.shutdown(socket.SHUT_WR)
        for i, s in enumerate(socks):
            got = b""
            for _ in range(10_000):
                data = s.recv(65536)
                if not data:
                    break
                got += data
            assert got == f"hello {i}\n".encode() * 100
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- lifecycle

def test_close_removes_namespace_and_servers() -> None:
    reason = testhosts.unavailable_reason()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    host = testhosts.TestHost({"tiny": 10})
    setup_seconds = time.monotonic() - started
    netns, link, pid, files_dir = host.netns, host.link, host.server_pid, host.files_dir
    assert netns and link and pid and files_dir
    stray: subprocess.Popen[bytes] | None = None
    try:
        assert netns in _netns_list().split()
        assert os.path.isdir(files_dir)
        assert _processes_mentioning(files_dir) == [pid]
        status, _, size, digest = _get_sha256(host.ipv4, "/files/tiny")
        assert (status, size, digest) == (200, *host.files["tiny"])
        # a stray process in the namespace must not survive close() either
        stray = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "60"],
                                 stdin=subprocess.DEVNULL)
    finally:
        host.close()
    assert stray is not None
    try:
        assert stray.wait(timeout=10) != 0
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait(timeout=10)
    host.close()                                  # idempotent
    assert netns not in _netns_list().split()
    assert subprocess.run(["ip", "link", "show", link], capture_output=True,
                          timeout=15).returncode != 0
    assert not os.path.exists(files_dir)
    assert _processes_mentioning(files_dir) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert setup_seconds < 5, f"a small test host took {setup_seconds:.1f} s to set up"


def test_close_after_failed_start_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = testhosts.unavailable_reason()
    if reason:
        pytest.skip(reason)
    before = set(_netns_list().split())
    monkeypatch.setattr(testhosts, "SERVERS_PY", testhosts.HERE / "no-such-servers.py")
    with pytest.raises(testhosts.TestHostError, match="failed to start|exited"):
        testhosts.TestHost({"tiny": 10}, ready_timeout=5)
    after = set(_netns_list().split())
    ours = f"{testhosts.NETNS_PREFIX}{os.getpid()}-"      # other test runs may be going on
    assert {n for n in after - before if n.startswith(ours)} == set()
