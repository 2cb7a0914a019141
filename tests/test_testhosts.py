"""The test hosts themselves, checked from the host namespace (no httptap involved)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import importlib.util
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zipfile

import pytest

import servers
import testhosts
from servers import MiB, pattern_bytes

pytestmark = pytest.mark.root

TIMEOUT = 30.0
PYTHON = sys.executable            # the venv's interpreter, whose pip the index is tried with


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
    host = testhosts.TestHost({"tiny": 10})
    netns, link, pid, files_dir = host.netns, host.link, host.server_pid, host.files_dir
    assert netns and link and pid and files_dir
    ifindex = _ifindex(link)
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
        # Close only once it is in the namespace (``ip netns exec`` enters it, then execs
        # sleep under the same pid): before, close() could not have seen it.
        deadline = time.monotonic() + 10
        while stray.pid not in testhosts._netns_pids(netns) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stray.pid in testhosts._netns_pids(netns)
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
    # Our veth is gone. (Another run may have taken the same name since: not ours.)
    assert _ifindex(link) != ifindex
    assert not os.path.exists(files_dir)
    assert _processes_mentioning(files_dir) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _ifindex(link: str) -> int | None:
    """The interface index of ``link`` in this namespace, or None if there is none."""
    try:
        with open(f"/sys/class/net/{link}/ifindex") as f:
            return int(f.read())
    except OSError:
        return None


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


# --------------------------------------------------------------------------- HTTPS, HTTP extras

def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without proxies or pip/git configuration, plus ``extra``."""
    # (REQUESTS_CA_BUNDLE would even override pip's --cert: requests prefers it.)
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith(("PIP_", "GIT_"))
           and k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")
    env.update(extra)
    return env


def _curl(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "20", *args],
                          capture_output=True, timeout=timeout, env=_clean_env(),
                          stdin=subprocess.DEVNULL)


def _curl_has_http2() -> bool:
    out = subprocess.run(["curl", "-V"], capture_output=True, text=True, timeout=10).stdout
    return any(line.startswith("Features:") and "HTTP2" in line.split()
               for line in out.splitlines())


def _addr(test_host: testhosts.TestHost, family: int) -> str:
    addr = test_host.ipv4 if family == 4 else test_host.ipv6
    if addr is None:
        pytest.skip("IPv6 is disabled on this machine: the test host is IPv4 only")
    return addr


@pytest.mark.parametrize("family", [4, 6])
def test_https_http1(test_host: testhosts.TestHost, family: int) -> None:
    _addr(test_host, family)
    size, digest = test_host.files["1m"]
    r = _curl("--cacert", test_host.ca_file, "--http1.1", "-w", "%{http_version}",
              "-o", "/dev/stdout", "-g", test_host.https_url("/files/1m", family))
    assert r.returncode == 0, r.stderr
    body, version = r.stdout[:-3], r.stdout[-3:]
    assert version == b"1.1"
    assert (len(body), hashlib.sha256(body).hexdigest()) == (size, digest)


@pytest.mark.parametrize("name", ["test.httptap.test", "www.httptap.test"])
def test_https_by_name_and_other_port(test_host: testhosts.TestHost, name: str) -> None:
    for port in (test_host.https_port, test_host.tls_other_port):
        r = _curl("--cacert", test_host.ca_file, "--resolve", f"{name}:{port}:{test_host.ipv4}",
                  test_host.https_url("/status/200", name, port))
        assert r.returncode == 0, (port, r.stderr)
        assert json.loads(r.stdout) == {"status": 200}


def test_https_alpn(test_host: testhosts.TestHost) -> None:
    ctx = ssl.create_default_context(cafile=test_host.ca_file)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((test_host.ipv4, 443), timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname=test_host.ipv4) as tls:
        assert tls.selected_alpn_protocol() == ("h2" if test_host.has_h2 else "http/1.1")
    assert test_host.has_h2 == (importlib.util.find_spec("h2") is not None)


def test_https_http2(test_host: testhosts.TestHost, tmp_path) -> None:  # noqa: ANN001
    if not test_host.has_h2:
        pytest.skip("the h2 package is not installed: the test host serves no HTTP/2")
    if not _curl_has_http2():
        pytest.skip("this curl has no HTTP/2 support")
    size, digest = test_host.files["16m"]
    r = _curl("--cacert", test_host.ca_file, "--http2", "-w", "%{http_version}",
              "-o", str(tmp_path / "16m"), test_host.https_url("/files/16m"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"2"
    data = (tmp_path / "16m").read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest)
    # two streams on one connection, then an upload
    r = _curl("--cacert", test_host.ca_file, "--http2", test_host.https_url("/bytes/100000"),
              test_host.https_url("/status/418"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == testhosts.expected_bytes(100000) + b'{"status": 418}\n'
    upload = pattern_bytes("upload", 3 * MiB)
    (tmp_path / "up").write_bytes(upload)
    r = _curl("--cacert", test_host.ca_file, "--http2", "--data-binary", f"@{tmp_path / 'up'}",
              test_host.https_url("/upload"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"size": len(upload),
                                    "sha256": hashlib.sha256(upload).hexdigest()}


@pytest.mark.parametrize("which, message", [("wrong_name_port", "subject name"),
                                            ("expired_port", "expired")])
def test_bad_certificates_fail_verification(test_host: testhosts.TestHost, which: str,
                                            message: str) -> None:
    port = getattr(test_host, which)
    r = _curl("--cacert", test_host.ca_file, test_host.https_url("/status/200", 4, port))
    assert r.returncode == 60, r.stderr            # CURLE_PEER_FAILED_VERIFICATION
    assert message in r.stderr.decode()
    # ... and only for that reason: without verification they serve the app
    r = _curl("--insecure", test_host.https_url("/status/200", 4, port))
    assert r.returncode == 0, r.stderr
    if which == "wrong_name_port":
        name = testhosts.WRONG_NAME
        r = _curl("--cacert", test_host.ca_file, "--resolve", f"{name}:{port}:{test_host.ipv4}",
                  test_host.https_url("/status/200", name, port))
        assert r.returncode == 0, r.stderr


def test_http_alt_port(test_host: testhosts.TestHost) -> None:
    r = _curl(test_host.url("/bytes/1000", port=test_host.http_alt_port))
    assert r.returncode == 0, r.stderr
    assert r.stdout == testhosts.expected_bytes(1000)


def test_gzip(test_host: testhosts.TestHost) -> None:
    conn = http.client.HTTPConnection(test_host.ipv4, 80, timeout=TIMEOUT)
    try:
        conn.request("GET", "/gzip/100000")
        resp = conn.getresponse()
        raw = resp.read()
        assert resp.status == 200
        assert resp.getheader("Content-Encoding") == "gzip"
        assert int(resp.getheader("Content-Length")) == len(raw) < 100000
        assert gzip.decompress(raw) == servers.gzip_plain(100000)
    finally:
        conn.close()
    r = _curl("--compressed", test_host.url("/gzip/5000"))
    assert r.stdout == servers.gzip_plain(5000)


def test_chunked(test_host: testhosts.TestHost) -> None:
    n = 100_000
    with socket.create_connection((test_host.ipv4, 80), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /chunked/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % n)
        raw = b""
        for _ in range(100_000):
            data = sock.recv(65536)
            if not data:
                break
            raw += data
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    body, sizes = b"", []
    while True:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            assert rest == b"\r\n"
            break
        sizes.append(size)
        body += rest[:size]
        assert rest[size:size + 2] == b"\r\n"
        rest = rest[size + 2:]
    assert sizes == servers.chunk_sizes(n) and len(sizes) >= 3
    assert body == pattern_bytes("chunked", n)


def test_etag_and_redirect(test_host: testhosts.TestHost) -> None:
    conn = http.client.HTTPConnection(test_host.ipv4, 80, timeout=TIMEOUT)
    try:
        conn.request("GET", "/etag")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, servers.ETAG_BODY)
        etag = resp.getheader("ETag")
        assert etag == servers.ETAG
        conn.request("GET", "/etag", headers={"If-None-Match": etag})
        resp = conn.getresponse()
        assert (resp.status, resp.read(), resp.getheader("ETag")) == (304, b"", etag)
        conn.request("GET", "/redirect?to=/files/small")
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("Location"), resp.read()) == \
            (302, "/files/small", b"")
    finally:
        conn.close()
    r = _curl("-L", test_host.url("/redirect"))
    assert json.loads(r.stdout) == {"status": 200}


def _ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack(">BB", first, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", first, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _ws_read(f) -> tuple[int, int, bytes]:  # noqa: ANN001
    b0, b1 = f.read(2)
    assert not b1 & 0x80, "server frames must not be masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", f.read(8))[0]
    return b0 & 0x80, b0 & 0x0F, f.read(n)


def test_websocket_echo(test_host: testhosts.TestHost) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((test_host.ipv4, 80), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET /ws HTTP/1.1\r\nHost: {test_host.ipv4}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        f = sock.makefile("rb")
        status = f.readline()
        assert status.startswith(b"HTTP/1.1 101 "), status
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        accept = base64.b64encode(hashlib.sha1(
            key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
        assert headers["sec-websocket-accept"] == accept
        big = pattern_bytes("ws", 70_000)
        sock.sendall(_ws_frame(1, "héllo".encode()) + _ws_frame(2, big[:200]) +
                     _ws_frame(2, big) + _ws_frame(9, b"ping!"))
        assert _ws_read(f) == (0x80, 1, "héllo".encode())
        assert _ws_read(f) == (0x80, 2, big[:200])
        assert _ws_read(f) == (0x80, 2, big)
        assert _ws_read(f) == (0x80, 0xA, b"ping!")
        sock.sendall(_ws_frame(8, struct.pack(">H", 1000) + b"bye"))
        assert _ws_read(f) == (0x80, 8, struct.pack(">H", 1000))
        assert f.read() == b""                      # the server closed the connection


# --------------------------------------------------------------------------- git, pip

@pytest.mark.parametrize("family, version", [(4, "HTTP/2"), (4, "HTTP/1.1"), (6, "HTTP/2")])
def test_git_clone_over_https(test_host: testhosts.TestHost, tmp_path, family: int,  # noqa: ANN001
                              version: str) -> None:
    _addr(test_host, family)
    dest = tmp_path / "demo"
    r = subprocess.run(["git", "-c", f"http.version={version}", "clone", "-q",
                        test_host.git_url(family), str(dest)],
                       capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                       env=_clean_env(GIT_SSL_CAINFO=test_host.ca_file))
    assert r.returncode == 0, r.stderr
    for name, text in testhosts.GIT_FILES.items():
        assert (dest / name).read_text() == text
    head = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=TIMEOUT, env=_clean_env()).stdout.strip()
    assert head == test_host.git_head
    count = subprocess.run(["git", "-C", str(dest), "rev-list", "--count", "HEAD"],
                           capture_output=True, text=True, timeout=TIMEOUT, env=_clean_env())
    assert count.stdout.strip() == str(len(testhosts.GIT_COMMITS))


def test_git_clone_needs_the_ca(test_host: testhosts.TestHost, tmp_path) -> None:  # noqa: ANN001
    r = subprocess.run(["git", "clone", "-q", test_host.git_url(), str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                       env=_clean_env())
    assert r.returncode != 0
    assert "certificate" in r.stderr.lower()


def test_pip_index_pages(test_host: testhosts.TestHost) -> None:
    args = ["--cacert", test_host.ca_file] + (["--http2"] if test_host.has_h2 else [])
    r = _curl(*args, test_host.pip_index_url + "demo-pkg/")
    assert r.returncode == 0, r.stderr
    digest = hashlib.sha256(_curl(*args, test_host.https_url(
        f"/packages/{test_host.wheel_name}")).stdout).hexdigest()
    assert f'href="/packages/{test_host.wheel_name}#sha256={digest}"' in r.stdout.decode()
    assert 'href="demo-pkg/"' in _curl(*args, test_host.pip_index_url).stdout.decode()


def test_pip_download_from_index(test_host: testhosts.TestHost, tmp_path) -> None:  # noqa: ANN001
    r = subprocess.run([PYTHON, "-m", "pip", "--isolated", "download", "--no-deps",
                        "--no-cache-dir", "--disable-pip-version-check", "--retries", "0",
                        "--timeout", "20", "--index-url", test_host.pip_index_url,
                        "--cert", test_host.ca_file, "-d", str(tmp_path), "demo-pkg"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env=_clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    wheel = tmp_path / test_host.wheel_name
    assert os.listdir(tmp_path) == [test_host.wheel_name]
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("demo_pkg/__init__.py").decode() == testhosts.WHEEL_INIT
        record = zf.read("demo_pkg-1.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if digest:
                content = zf.read(name)
                expect = base64.urlsafe_b64encode(
                    hashlib.sha256(content).digest()).rstrip(b"=").decode()
                assert (digest, int(size)) == (f"sha256={expect}", len(content))


# --------------------------------------------------------------------------- DNS, UDP

def _dns_query(name: str, qtype: int, qid: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)


def _dns_parse(msg: bytes) -> tuple[int, int, list[tuple[int, int, bytes]]]:
    """(id, rcode, [(type, ttl, rdata)]) of a response whose answers use name pointers."""
    qid, flags, qd, an = struct.unpack(">HHHH", msg[:8])
    assert flags & 0x8000 and qd == 1
    pos = 12
    while msg[pos]:
        pos += 1 + msg[pos]
    pos += 5
    answers = []
    for _ in range(an):
        assert msg[pos] & 0xC0 == 0xC0
        rtype, _, ttl, rdlen = struct.unpack(">HHIH", msg[pos + 2:pos + 12])
        answers.append((rtype, ttl, msg[pos + 12:pos + 12 + rdlen]))
        pos += 12 + rdlen
    return qid, flags & 0xF, answers


def _dns_udp(addr: str, query: bytes) -> bytes:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, (addr, 53))
        return sock.recv(4096)


def _dns_tcp(addr: str, queries: list[bytes]) -> list[bytes]:
    with socket.create_connection((addr, 53), timeout=5) as sock:
        sock.sendall(b"".join(struct.pack(">H", len(q)) + q for q in queries))
        f = sock.makefile("rb")
        return [f.read(struct.unpack(">H", f.read(2))[0]) for _ in queries]


TXT_ANSWER = (16, 300, bytes([len(testhosts.DNS_TXT)]) + testhosts.DNS_TXT)


@pytest.mark.parametrize("family", [4, 6])
def test_dns_udp(test_host: testhosts.TestHost, family: int) -> None:
    addr = _addr(test_host, family)
    assert _dns_parse(_dns_udp(addr, _dns_query("hello.httptap.test.", 16, 7))) == \
        (7, 0, [TXT_ANSWER])
    assert _dns_parse(_dns_udp(addr, _dns_query("A.HTTPTAP.test", 1))) == \
        (0x1234, 0, [(1, 300, socket.inet_aton(test_host.ipv4))])
    assert _dns_parse(_dns_udp(addr, _dns_query("nope.httptap.test", 1))) == (0x1234, 3, [])
    assert _dns_parse(_dns_udp(addr, _dns_query("hello.httptap.test", 1))) == (0x1234, 0, [])


def test_dns_tcp(test_host: testhosts.TestHost) -> None:
    got = _dns_tcp(test_host.ipv4, [_dns_query("hello.httptap.test", 16, 1),
                                    _dns_query("example.com", 16, 2)])
    assert [_dns_parse(m) for m in got] == [(1, 0, [TXT_ANSWER]), (2, 3, [])]


@pytest.mark.parametrize("family", [4, 6])
def test_udp_echo(test_host: testhosts.TestHost, family: int) -> None:
    addr = _addr(test_host, family)
    with socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for payload in (b"x", os.urandom(1400), os.urandom(8000)):
            sock.sendto(payload, (addr, test_host.udp_echo_port))
            assert sock.recv(65535) == payload


def test_without_h2_alpn_offers_only_http1(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    reason = testhosts.unavailable_reason()
    if reason:
        pytest.skip(reason)
    (tmp_path / "h2").mkdir()
    (tmp_path / "h2" / "__init__.py").write_text("raise ImportError('h2 hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))    # the servers' interpreter sees this
    with testhosts.TestHost({"tiny": 10}) as host:
        assert not host.has_h2
        ctx = ssl.create_default_context(cafile=host.ca_file)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection((host.ipv4, host.https_port), timeout=TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname="test.httptap.test") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
            tls.sendall(b"GET /files/tiny HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        assert data.endswith(testhosts.file_bytes("tiny", 10))
