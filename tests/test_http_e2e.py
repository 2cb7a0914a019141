"""End to end: real HTTP/1.1 clients under httptap against a test host; the terminal lines,
compared exactly.

Every run uses ``--stderr`` so that httptap's lines (on stderr) never interleave with what
the command prints (on stdout); the whole of stderr is compared line by line. Colours are
off: stderr is a pipe here, not a terminal.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
from runner import run_httptap
from servers import ETAG, ETAG_BODY, gzip_plain, pattern_bytes

pytestmark = pytest.mark.root

PY = sys.executable
CURL = ("curl", "-sS", "--max-time", "30")


def tap(*args: str, cmd: tuple[str, ...] | list[str], timeout: float = 90,
        ok: bool = True) -> tuple[list[str], str]:
    """Run ``httptap --stderr ARGS -- CMD``; return (httptap's lines, the command's stdout)."""
    r = run_httptap("--stderr", *args, "--", *cmd, timeout=timeout)
    if ok:
        assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stderr.splitlines(), r.stdout


def json_size(obj: object) -> int:
    """Length of the body the test host sends for a JSON answer (``json.dumps`` + newline)."""
    return len(json.dumps(obj).encode()) + 1


def upload_answer(body: bytes) -> bytes:
    return json.dumps({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode() \
        + b"\n"


def ndjson_records(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# --------------------------------------------------------------------------- curl, wget, urllib

def test_curl_two_urls_over_one_kept_alive_connection(test_host, tmp_path):
    a, b = test_host.url("/files/small"), test_host.url("/bytes/100")
    nd = str(tmp_path / "out.ndjson")
    lines, _ = tap("--sink", "terminal", "--sink", f"ndjson:{nd}",
                   cmd=[*CURL, "-o", "/dev/null", "-o", "/dev/null", a, b])
    assert lines == [
        f"---> GET {a}",
        f"<--- 200 {a} (1024 bytes)",
        f"---> GET {b}",
        f"<--- 200 {b} (100 bytes)",
    ]
    records = [r for r in ndjson_records(nd) if r["type"] == "http"]
    assert [r["request"]["url"] for r in records] == [a, b]
    # One connection: both exchanges came from the same client port.
    assert records[0]["client"] == records[1]["client"]
    assert not [r for r in ndjson_records(nd) if r["type"] == "tcp"]


def test_curl_compressed_counts_decoded_length(test_host):
    url = test_host.url("/gzip/5000")
    lines, out = tap(cmd=[*CURL, "--compressed", url])
    assert lines == [f"---> GET {url}", f"<--- 200 {url} (5000 bytes)"]
    assert out.encode() == gzip_plain(5000)


def test_compressed_body_reaches_the_command_untouched(test_host, tmp_path):
    """Without --compressed curl saves the gzip bytes as the server sent them."""
    url = test_host.url("/gzip/20000")
    saved = tmp_path / "body.gz"
    os.chmod(tmp_path, 0o777)
    lines, _ = tap(cmd=[*CURL, "-o", str(saved), url])
    assert lines == [f"---> GET {url}", f"<--- 200 {url} (20000 bytes)"]
    assert saved.read_bytes() == gzip.compress(gzip_plain(20000), compresslevel=6, mtime=0)


def test_wget(test_host, tmp_path):
    url = test_host.url("/files/small")
    lines, _ = tap(cmd=["wget", "-q", "-T", "30", "-t", "1", "-O", "/dev/null", url])
    assert lines == [f"---> GET {url}", f"<--- 200 {url} (1024 bytes)"]


URLLIB_GET = """
import hashlib, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
    data = r.read()
print(r.status, len(data), hashlib.sha256(data).hexdigest())
"""


def test_python_urllib(test_host):
    url = test_host.url("/files/small")
    size, digest = test_host.files["small"]
    lines, out = tap(cmd=[PY, "-c", URLLIB_GET, url])
    assert lines == [f"---> GET {url}", f"<--- 200 {url} (1024 bytes)"]
    assert out.split() == ["200", str(size), digest]


URLLIB_POST = """
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST",
                             headers={"Content-Type": "text/plain; charset=utf-8"})
with urllib.request.urlopen(req, timeout=30) as r:
    sys.stdout.write(r.read().decode())
"""


def test_post_with_urllib(test_host):
    url = test_host.url("/upload")
    body = "a body sent by urllib"
    answer = upload_answer(body.encode())
    lines, out = tap(cmd=[PY, "-c", URLLIB_POST, url, body])
    assert lines == [f"---> POST {url}", f"<--- 200 {url} ({len(answer)} bytes)"]
    assert out.encode() == answer


def test_post_with_body_shows_both_bodies(test_host):
    url = test_host.url("/upload")
    body = b"hello=world&x=1"
    answer = upload_answer(body)
    lines, out = tap("--body", cmd=[*CURL, "--data-binary", body.decode(),
                                    "-H", "Content-Type: text/plain", url])
    assert lines == [
        f"---> POST {url}",
        body.decode(),
        f"<--- 200 {url} ({len(answer)} bytes)",
        answer.decode().rstrip("\n"),
    ]
    assert out.encode() == answer


def test_body_of_binary_data_is_summarised(test_host, tmp_path):
    os.chmod(tmp_path, 0o777)
    payload = tmp_path / "payload.bin"
    data = bytes(range(256)) * 8
    payload.write_bytes(data)
    url = test_host.url("/upload")
    answer = upload_answer(data)
    lines, _ = tap("--body", cmd=[*CURL, "-o", "/dev/null", "--data-binary", f"@{payload}",
                                  "-H", "Content-Type: application/octet-stream", url])
    assert lines == [
        f"---> POST {url}",
        f"<{len(data)} bytes of binary data>",
        f"<--- 200 {url} ({len(answer)} bytes)",
        answer.decode().rstrip("\n"),
    ]
    get = test_host.url("/bytes/300")
    lines, _ = tap("--body", cmd=[*CURL, "-o", "/dev/null", get])
    assert lines == [f"---> GET {get}", f"<--- 200 {get} (300 bytes)",
                     "<300 bytes of binary data>"]


def test_post_with_expect_100_continue(test_host, tmp_path):
    """The interim 100 Continue is not an exchange of its own: two lines, status 200."""
    os.chmod(tmp_path, 0o777)
    payload = tmp_path / "payload.bin"
    data = os.urandom(3000)
    payload.write_bytes(data)
    url = test_host.url("/upload")
    answer = upload_answer(data)
    lines, out = tap(cmd=[*CURL, "-H", "Expect: 100-continue", "--data-binary", f"@{payload}", url])
    assert lines == [f"---> POST {url}", f"<--- 200 {url} ({len(answer)} bytes)"]
    assert out.encode() == answer


def test_chunked_request_body(test_host, tmp_path):
    os.chmod(tmp_path, 0o777)
    payload = tmp_path / "payload.bin"
    data = os.urandom(100_000)
    payload.write_bytes(data)
    url = test_host.url("/upload")
    answer = upload_answer(data)
    lines, out = tap(cmd=[*CURL, "-H", "Transfer-Encoding: chunked", "--data-binary",
                          f"@{payload}", url])
    assert lines == [f"---> POST {url}", f"<--- 200 {url} ({len(answer)} bytes)"]
    assert out.encode() == answer


# --------------------------------------------------------------------------- framing cases

def test_chunked_responses(test_host):
    """Several chunked responses on one connection: each count is the de-chunked length,
    and what curl receives is the content intact."""
    sizes = [1, 100, 100_000, 1_000_000]
    urls = [test_host.url(f"/chunked/{n}") for n in sizes]
    script = ("curl -sS --max-time 30 " + " ".join(urls) +
              " | sha256sum")
    lines, out = tap(cmd=["sh", "-c", script])
    expected = []
    for url, n in zip(urls, sizes):
        expected += [f"---> GET {url}", f"<--- 200 {url} ({n} bytes)"]
    assert lines == expected
    whole = b"".join(pattern_bytes("chunked", n) for n in sizes)
    assert out.split()[0] == hashlib.sha256(whole).hexdigest()


def test_head(test_host):
    url = test_host.url("/files/small")
    lines, out = tap(cmd=[*CURL, "-I", url])
    assert lines == [f"---> HEAD {url}", f"<--- 200 {url} (0 bytes)"]
    assert "Content-Length: 1024" in out


def test_head_then_get_on_the_same_connection(test_host):
    """A HEAD response announces a body it does not have: the next response still decodes."""
    head, get = test_host.url("/files/small"), test_host.url("/chunked/5000")
    lines, _ = tap(cmd=[*CURL, "-o", "/dev/null", "-I", head, "--next",
                        *CURL[1:], "-o", "/dev/null", get])
    assert lines == [
        f"---> HEAD {head}",
        f"<--- 200 {head} (0 bytes)",
        f"---> GET {get}",
        f"<--- 200 {get} (5000 bytes)",
    ]


def test_304_not_modified(test_host):
    url, after = test_host.url("/etag"), test_host.url("/files/small")
    lines, out = tap(cmd=[*CURL, "-H", f"If-None-Match: {ETAG}", "-o", "/dev/null", url,
                          "-o", "/dev/null", after])
    assert lines == [
        f"---> GET {url}",
        f"<--- 304 {url} (0 bytes)",
        f"---> GET {after}",
        f"<--- 200 {after} (1024 bytes)",
    ]


def test_204_and_304_without_bodies_keep_the_connection_in_step(test_host):
    urls = [test_host.url(p) for p in ("/status/204", "/status/304", "/bytes/3")]
    lines, _ = tap(cmd=[*CURL, "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", *urls])
    assert lines == [
        f"---> GET {urls[0]}", f"<--- 204 {urls[0]} (0 bytes)",
        f"---> GET {urls[1]}", f"<--- 304 {urls[1]} (0 bytes)",
        f"---> GET {urls[2]}", f"<--- 200 {urls[2]} (3 bytes)",
    ]


def test_404(test_host):
    url = test_host.url("/status/404")
    lines, out = tap(cmd=[*CURL, url])
    assert lines == [f"---> GET {url}", f"<--- 404 {url} ({json_size({'status': 404})} bytes)"]
    assert json.loads(out) == {"status": 404}


def test_redirect_followed(test_host):
    url, to = test_host.url("/redirect?to=/files/small"), test_host.url("/files/small")
    lines, _ = tap(cmd=[*CURL, "-L", "-o", "/dev/null", url])
    assert lines == [f"---> GET {url}", f"<--- 302 {url} (0 bytes)",
                     f"---> GET {to}", f"<--- 200 {to} (1024 bytes)"]


PIPELINED = """
import socket, sys
host = sys.argv[1]
s = socket.create_connection((host, 80), timeout=30)
s.sendall(b"GET /bytes/100 HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n"
          b"GET /status/404 HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n"
          % (host.encode(), host.encode()))
data = bytearray()
while chunk := s.recv(65536):
    data += chunk
first, _, rest = bytes(data).partition(b"\\r\\n\\r\\n")
body1, rest = rest[:100], rest[100:]
second, _, body2 = rest.partition(b"\\r\\n\\r\\n")
print(first.split(b"\\r\\n")[0].decode(), "|", second.split(b"\\r\\n")[0].decode(), "|",
      len(body1), body2.decode().strip())
"""


def test_pipelined_pair_on_one_socket(test_host):
    a, b = test_host.url("/bytes/100"), test_host.url("/status/404")
    lines, out = tap(cmd=[PY, "-c", PIPELINED, test_host.ipv4])
    assert lines == [
        f"---> GET {a}",
        f"---> GET {b}",
        f"<--- 200 {a} (100 bytes)",
        f"<--- 404 {b} ({json_size({'status': 404})} bytes)",
    ]
    assert out.strip() == 'HTTP/1.1 200 OK | HTTP/1.1 404 Not Found | 100 {"status": 404}'


WEBSOCKET = """
import base64, hashlib, json, os, socket, struct, sys
host = sys.argv[1]
s = socket.create_connection((host, 80), timeout=30)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\\r\\nHost: %s\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
           "Sec-WebSocket-Key: %s\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n" % (host, key)).encode())
f = s.makefile("rb")
status = f.readline().decode().strip()
headers = {}
while (line := f.readline()) not in (b"\\r\\n", b""):
    name, _, value = line.decode().partition(":")
    headers[name.strip().lower()] = value.strip()
accept = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                          .digest()).decode()

def send(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big"))
    s.sendall(head + mask + (masked.to_bytes(n, "big") if n else b""))

def recv():
    b0, b1 = f.read(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", f.read(8))[0]
    return b0 & 0x0F, f.read(n)

results = {}
send(1, b"hello websocket")
results["text"] = recv() == (1, b"hello websocket")
big = os.urandom(200_000)
send(2, big)
results["binary"] = recv() == (2, big)
# Bytes that look like HTTP must not be decoded after the switch.
send(1, b"GET /files/small HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
results["http-like"] = recv() == (1, b"GET /files/small HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
send(9, b"ping")
results["ping"] = recv() == (10, b"ping")
send(8, struct.pack(">H", 1000))
results["close"] = recv() == (8, struct.pack(">H", 1000))
results["eof"] = f.read(1) == b""
print(json.dumps({"status": status, "accept": headers.get("sec-websocket-accept") == accept,
                  **results}))
"""


def test_websocket_handshake_then_frames_both_ways(test_host, tmp_path):
    url = test_host.url("/ws")
    nd = str(tmp_path / "out.ndjson")
    lines, out = tap("--sink", "terminal", "--sink", f"ndjson:{nd}",
                     cmd=[PY, "-c", WEBSOCKET, test_host.ipv4])
    ws = "ws" + url[len("http"):]
    http_like = len(b"GET /files/small HTTP/1.1\r\nHost: x\r\n\r\n")
    assert lines == [f"---> GET {url}", f"<--- 101 {url} (0 bytes)",
                     f"---> WS text {ws} (15 bytes)", f"<--- WS text {ws} (15 bytes)",
                     f"---> WS binary {ws} (200000 bytes)", f"<--- WS binary {ws} (200000 bytes)",
                     f"---> WS text {ws} ({http_like} bytes)",
                     f"<--- WS text {ws} ({http_like} bytes)",  # not decoded as HTTP
                     f"---> WS close {ws} (code 1000)", f"<--- WS close {ws} (code 1000)"]
    assert json.loads(out) == {"status": "HTTP/1.1 101 Switching Protocols", "accept": True,
                               "text": True, "binary": True, "http-like": True, "ping": True,
                               "close": True, "eof": True}
    http = [r for r in ndjson_records(nd) if r["type"] == "http"]
    assert len(http) == 1
    assert http[0]["response"]["status"] == 101
    assert http[0]["error"] is None


# --------------------------------------------------------------------------- --head

DATE = re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\Z")


def test_head_option_prints_headers_in_received_order(test_host):
    url = test_host.url("/etag")
    lines, _ = tap("--head", cmd=[*CURL, "-o", "/dev/null", "-H", "X-Test: one",
                                  "-H", "X-Test: two", url])
    date = [i for i, line in enumerate(lines) if line.startswith("< Date: ")]
    assert len(date) == 1 and DATE.match(lines[date[0]][len("< Date: "):]), lines
    lines[date[0]] = "< Date: <date>"
    assert lines == [
        f"---> GET {url}",
        f"> Host: {test_host.ipv4}",
        f"> User-Agent: {curl_user_agent()}",
        "> Accept: */*",
        "> X-Test: one",
        "> X-Test: two",
        f"<--- 200 {url} ({len(ETAG_BODY)} bytes)",
        "< Server: httptap-testhost/1",
        "< Date: <date>",
        f"< ETag: {ETAG}",
        "< Content-Type: text/plain",
        f"< Content-Length: {len(ETAG_BODY)}",
    ]


def curl_user_agent() -> str:
    import subprocess
    version = subprocess.run(["curl", "--version"], capture_output=True, text=True,
                             timeout=10).stdout.split()[1]
    return f"curl/{version}"


# --------------------------------------------------------------------------- --http

@pytest.mark.parametrize("form", [
    ["--http", "8080"],                 # the list replaces the default 80
    ["--http", "80,8080"],
    ["--http", "80", "--http", "8080"],
    ["--http", "80", "8080"],
    [],                                 # HTTP is recognised on any port anyway
], ids=["8080", "80,8080", "80 --http 8080", "80 8080", "none"])
def test_http_ports_option(test_host, form):
    alt = test_host.url("/status/200", port=test_host.http_alt_port)
    std = test_host.url("/status/201")
    lines, _ = tap(*form, cmd=[*CURL, "-o", "/dev/null", alt, "-o", "/dev/null", std])
    size = json_size({"status": 200})
    assert lines == [f"---> GET {alt}", f"<--- 200 {alt} ({size} bytes)",
                     f"---> GET {std}", f"<--- 201 {std} ({size} bytes)"]


def echo_client(data: str) -> str:
    """A client script: sends ``data`` (a Python bytes expression) to the echo port,
    half-closes, reads everything back, prints the size and whether it came back intact."""
    return f"""
import socket, sys
data = {data}
s = socket.create_connection((sys.argv[1], 7), timeout=30)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = bytearray()
while chunk := s.recv(65536):
    got += chunk
print(len(data), got == data)
"""


NON_HTTP = echo_client('b"\\x00\\x01\\x02 this is not HTTP \\xff\\xfe\\r\\n\\r\\n" + bytes(range(256)) * 256')


def test_non_http_bytes_on_an_http_port_are_relayed_and_reported_as_tcp(test_host, tmp_path):
    nd = str(tmp_path / "out.ndjson")
    lines, out = tap("--http", "7", "--sink", "terminal", "--sink", f"ndjson:{nd}",
                     cmd=[PY, "-c", NON_HTTP, test_host.ipv4])
    size = len(b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n") + 256 * 256
    assert out.split() == [str(size), "True"]
    assert lines == []
    records = ndjson_records(nd)
    assert [r["type"] for r in records] == ["tcp"]
    tcp = records[0]
    assert tcp["server"] == f"{test_host.ipv4}:7"
    assert tcp["transport"] == "tcp"
    assert tcp["bytes_sent"] == size
    assert tcp["bytes_received"] == size


# HTTP-looking start, then garbage: the decoder must give up and relay the rest untouched;
# the request it could read is reported, with what was wrong, as an http record.
GREETING_FIRST = echo_client('b"GET / HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: zz\\r\\n\\r\\n" '
                             '+ bytes(range(256)) * 64')


def test_malformed_http_on_an_http_port_is_relayed_untouched(test_host, tmp_path):
    nd = str(tmp_path / "out.ndjson")
    lines, out = tap("--http", "7", "--sink", "terminal", "--sink", f"ndjson:{nd}",
                     cmd=[PY, "-c", GREETING_FIRST, test_host.ipv4])
    size = int(out.split()[0])
    assert out.split() == [str(size), "True"]
    assert lines == ["---> GET http://x/", "<--- error http://x/: invalid Content-Length"]
    records = ndjson_records(nd)
    assert [(r["type"], r["request"]["url"], r["error"]) for r in records] == [
        ("http", "http://x/", "invalid Content-Length")]


# --------------------------------------------------------------------------- the URL shown

NO_HOST = """
import socket, sys
for port in (80, 8080):
    s = socket.create_connection((sys.argv[1], port), timeout=30)
    s.sendall(b"GET /bytes/5 HTTP/1.0\\r\\n\\r\\n")           # HTTP/1.0: no Host header
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    print(data.split(b"\\r\\n")[0].decode())
"""


def test_url_without_host_header_uses_the_destination(test_host):
    lines, out = tap("--http", "80,8080", cmd=[PY, "-c", NO_HOST, test_host.ipv4])
    assert out.splitlines() == ["HTTP/1.1 200 OK"] * 2
    a = f"http://{test_host.ipv4}/bytes/5"
    b = f"http://{test_host.ipv4}:8080/bytes/5"
    assert lines == [f"---> GET {a}", f"<--- 200 {a} (5 bytes)",
                     f"---> GET {b}", f"<--- 200 {b} (5 bytes)"]


def test_url_uses_the_host_header(test_host):
    url = "http://www.example.test/files/small?q=1"
    lines, _ = tap(cmd=[*CURL, "-o", "/dev/null", "-H", "Host: www.example.test",
                        test_host.url("/files/small?q=1")])
    assert lines == [f"---> GET {url}", f"<--- 200 {url} (1024 bytes)"]


HEAD_CHUNKED = """
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=30)
s.sendall(b"HEAD /chunked/100 HTTP/1.1\\r\\nHost: h.test\\r\\n\\r\\n"
          b"GET /bytes/7 HTTP/1.1\\r\\nHost: h.test\\r\\nConnection: close\\r\\n\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.count(b"HTTP/1.1 200 OK"), len(data.rpartition(b"\\r\\n\\r\\n")[2]))
"""


def test_head_of_a_chunked_resource_then_a_pipelined_get(test_host):
    """The HEAD response says Transfer-Encoding: chunked but has no body at all."""
    lines, out = tap(cmd=[PY, "-c", HEAD_CHUNKED, test_host.ipv4])
    assert out.split() == ["2", "7"]
    assert lines == [
        "---> HEAD http://h.test/chunked/100",
        "---> GET http://h.test/bytes/7",
        "<--- 200 http://h.test/chunked/100 (0 bytes)",
        "<--- 200 http://h.test/bytes/7 (7 bytes)",
    ]


def test_lines_on_stdout_without_stderr_option(test_host):
    url = test_host.url("/files/small")
    r = run_httptap("--", *CURL, "-o", "/dev/null", url, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"---> GET {url}", f"<--- 200 {url} (1024 bytes)"]
    assert "\x1b[" not in r.stdout


def test_http2_with_prior_knowledge_on_an_http_port(test_host):
    """h2c: the client opens with the HTTP/2 preface on port 80; the exchange is decoded.
    (One request: the test host's h2c server does not take a second on one connection,
    with or without httptap.)"""
    if "HTTP2" not in subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout:
        pytest.skip("this curl has no HTTP/2")
    url = test_host.url("/files/small")
    r = run_httptap("--stderr", "--", "curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
                    "-w", "%{http_version}", url, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "2"
    assert [l for l in r.stderr.splitlines() if l.startswith(("--->", "<---"))] == [
        f"---> GET {url}", f"<--- 200 {url} (1024 bytes)"]
