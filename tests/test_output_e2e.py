"""End to end: the ndjson and HAR sinks, written by a real httptap run against a test host.

ndjson is checked against the schema in ``httptap/sinks/ndjson.py`` (keys, their order and
types); HAR is opened with a third-party library (``haralyzer``) and checked field by
field, including the ways out where it is easy to lose: the command failing and Ctrl-C.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest
from haralyzer import HarParser
from runner import httptap_argv, read_stdout_until, run_httptap
from servers import gzip_plain, pattern_bytes

pytestmark = pytest.mark.root

CURL = ("curl", "-sS", "--max-time", "30")
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
ADDR = re.compile(r"(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):\d+\Z")

HTTP_KEYS = ["type", "time", "exchange", "request", "response", "timings", "client", "server",
             "tls", "error"]
REQUEST_KEYS = ["method", "url", "version", "headers", "body_size"]
RESPONSE_KEYS = ["status", "reason", "version", "headers", "body_size", "decoded_size"]
TIMING_KEYS = ["total_ms", "send_ms", "wait_ms", "receive_ms"]
TCP_KEYS = ["type", "time", "transport", "client", "server", "bytes_sent", "bytes_received",
            "duration_ms"]


def json_size(obj: object) -> int:
    return len(json.dumps(obj).encode()) + 1


def check_http_record(rec: dict, test_host) -> None:
    """Every field of an ``http`` record has the documented key, order and type."""
    assert list(rec) == HTTP_KEYS
    assert rec["type"] == "http"
    assert ISO.match(rec["time"])
    assert isinstance(rec["exchange"], int)
    assert list(rec["request"]) == REQUEST_KEYS
    assert rec["request"]["version"] == "HTTP/1.1"
    for name, value in rec["request"]["headers"] + rec["response"]["headers"]:
        assert isinstance(name, str) and isinstance(value, str)
    assert list(rec["response"]) == RESPONSE_KEYS
    assert rec["response"]["version"] == "HTTP/1.1"
    assert list(rec["timings"]) == TIMING_KEYS
    t = rec["timings"]
    assert all(isinstance(v, (int, float)) and v >= 0 for v in t.values())
    assert t["total_ms"] == pytest.approx(t["send_ms"] + t["wait_ms"] + t["receive_ms"],
                                          abs=0.01)
    assert t["total_ms"] < 30_000
    assert ADDR.match(rec["client"]) and rec["client"].startswith("10.1.1.100:")
    assert rec["server"] == f"{test_host.ipv4}:80"
    assert rec["tls"] is None
    assert rec["error"] is None


def headers_dict(pairs: list[list[str]]) -> dict[str, str]:
    return {n.lower(): v for n, v in pairs}


# --------------------------------------------------------------------------- ndjson

def test_ndjson_on_stdout_one_line_per_request(test_host):
    urls = [test_host.url("/files/small"), test_host.url("/gzip/3000"),
            test_host.url("/status/404"), test_host.url("/chunked/777")]
    args = []
    for url in urls:
        args += ["-o", "/dev/null", url]
    r = run_httptap("--sink", "ndjson", "--", *CURL, "--compressed", *args, timeout=90)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    records = [json.loads(line) for line in lines]          # every stdout line is JSON
    http = [rec for rec in records if rec["type"] == "http"]
    assert len(http) == len(urls) == len(records)
    for rec in http:
        check_http_record(rec, test_host)
    assert [rec["request"]["url"] for rec in http] == urls
    assert [rec["request"]["method"] for rec in http] == ["GET"] * 4
    assert len({rec["exchange"] for rec in http}) == 4
    assert [rec["response"]["status"] for rec in http] == [200, 200, 404, 200]
    assert [rec["response"]["reason"] for rec in http] == ["OK", "OK", "Not Found", "OK"]
    assert [rec["response"]["decoded_size"] for rec in http] == \
        [1024, 3000, json_size({"status": 404}), 777]
    gz = http[1]["response"]
    assert gz["body_size"] == int(headers_dict(gz["headers"])["content-length"]) < 3000
    assert headers_dict(http[1]["request"]["headers"])["accept-encoding"]
    assert http[3]["response"]["body_size"] == 777                   # after de-chunking
    assert headers_dict(http[3]["response"]["headers"])["transfer-encoding"] == "chunked"
    assert all(rec["request"]["body_size"] == 0 for rec in http)
    assert headers_dict(http[0]["request"]["headers"])["host"] == test_host.ipv4


def test_ndjson_to_a_file_next_to_the_terminal(test_host, tmp_path):
    nd = tmp_path / "out.ndjson"
    body = b"x=" + b"y" * 500
    post, get = test_host.url("/upload"), test_host.url("/bytes/10")
    r = run_httptap("--stderr", "--sink", "terminal", "--sink", f"ndjson:{nd}", "--",
                    *CURL, "-o", "/dev/null", "--data-binary", body.decode(), post,
                    "--next", *CURL[1:], "-o", "/dev/null", get, timeout=90)
    assert r.returncode == 0, r.stderr
    answer = json_size({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    assert r.stderr.splitlines() == [
        f"---> POST {post}", f"<--- 200 {post} ({answer} bytes)",
        f"---> GET {get}", f"<--- 200 {get} (10 bytes)",
    ]
    assert r.stdout == ""
    raw = nd.read_bytes()
    assert raw.endswith(b"\n")
    records = [json.loads(line) for line in raw.splitlines()]
    assert [rec["type"] for rec in records] == ["http", "http"]
    for rec in records:
        check_http_record(rec, test_host)
    assert records[0]["request"]["method"] == "POST"
    assert records[0]["request"]["body_size"] == len(body)
    assert records[0]["response"]["decoded_size"] == answer
    assert records[1]["response"]["decoded_size"] == 10


def test_ndjson_path_with_quiet_prints_no_terminal_lines(test_host, tmp_path):
    """(Without -q the terminal stays on: the ndjson goes to a file, not to stdout.)"""
    nd = tmp_path / "out.ndjson"
    url = test_host.url("/files/small")
    r = run_httptap("-q", "--sink", f"ndjson:{nd}", "--", *CURL, "-o", "/dev/null", url,
                    timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    records = [json.loads(line) for line in nd.read_text().splitlines()]
    assert len(records) == 1 and records[0]["request"]["url"] == url


ECHO = """
import socket, sys
data = bytes(range(256)) * 40
s = socket.create_connection((sys.argv[1], 7), timeout=30)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = bytearray()
while chunk := s.recv(65536):
    got += chunk
assert got == data
"""


def test_ndjson_tcp_record_for_a_connection_that_is_not_http(test_host):
    r = run_httptap("--sink", "ndjson", "--", sys.executable, "-c", ECHO, test_host.ipv4,
                    timeout=60)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(records) == 1
    tcp = records[0]
    assert list(tcp) == TCP_KEYS
    assert tcp["type"] == "tcp" and tcp["transport"] == "tcp"
    assert ISO.match(tcp["time"])
    assert tcp["client"].startswith("10.1.1.100:")
    assert tcp["server"] == f"{test_host.ipv4}:7"
    assert tcp["bytes_sent"] == tcp["bytes_received"] == 256 * 40
    assert 0 <= tcp["duration_ms"] < 30_000


def test_ndjson_stats_record(test_host):
    """``--stats`` with ndjson on stdout: the stream stays pure JSON and ends with a
    ``stats`` record (the text table goes to stderr)."""
    url = test_host.url("/files/small")
    r = run_httptap("--stats", "--sink", "ndjson", "--", *CURL, "-o", "/dev/null", url,
                    timeout=60)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["type"] for rec in records] == ["http", "stats"]
    check_http_record(records[0], test_host)
    stats = records[1]
    assert stats["elapsed_s"] > 0
    stages = {s["name"]: s for s in stats["stages"]}
    assert set(stages) == {"tcp", "proxy", "sink"}
    for s in stages.values():
        for key in ("packets_in", "packets_out", "msgs_in", "msgs_out", "bytes_in",
                    "bytes_out", "ring_waits"):
            assert isinstance(s[key], int) and s[key] >= 0, (key, s)
        for key in ("cpu_s", "ring_high_water", "ring_wait_s"):
            assert isinstance(s[key], (int, float)) and s[key] >= 0, (key, s)
    assert stages["sink"]["msgs_in"] >= 2             # at least the request and the response
    assert stages["tcp"]["packets_in"] > 0 and stages["tcp"]["packets_out"] > 0
    assert "httptap stats after" in r.stderr


# --------------------------------------------------------------------------- HAR

def load_har(path) -> tuple[HarParser, list]:
    parser = HarParser.from_file(str(path))
    assert parser.version == "1.2"
    assert parser.creator["name"] == "httptap"
    pages = parser.pages
    assert len(pages) == 1 and pages[0].page_id == "unknown"   # entries without pageref
    return parser, pages[0].entries


def check_timings(entry) -> None:
    t = entry.timings
    assert set(t) >= {"blocked", "dns", "connect", "send", "wait", "receive", "ssl"}
    for key in ("send", "wait", "receive"):
        assert t[key] >= 0
    for key in ("blocked", "dns", "connect", "ssl"):
        assert t[key] == -1 or t[key] >= 0
    assert entry.time == pytest.approx(t["send"] + t["wait"] + t["receive"], abs=0.01)
    assert entry.time < 30_000


def read_through_response_line(proc: subprocess.Popen[bytes], timeout: float = 30) -> bytes:
    """What httptap printed up to the end of its first ``<---`` line (within ``timeout``)."""
    return read_stdout_until(proc, lambda out: b"<---" in out and out.endswith(b"\n"),
                             "no response line", timeout)


def test_har_field_by_field(test_host, tmp_path):
    har = tmp_path / "out.har"
    post = test_host.url("/upload?x=1&y=two%20words")
    form = "a=1&b=hello"
    gz, binary = test_host.url("/gzip/300"), test_host.url("/bytes/50")
    missing, redirect = test_host.url("/status/404"), test_host.url("/redirect?to=/status/200")
    started = time.time()
    r = run_httptap("--stderr", "--dump-har", str(har), "--",
                    *CURL, "-o", "/dev/null", "--data-binary", form,
                    "-H", "Content-Type: application/x-www-form-urlencoded",
                    "-H", "Cookie: c1=v1; c2=v2", post,
                    "--next", *CURL[1:], "--compressed", "-o", "/dev/null", gz,
                    "--next", *CURL[1:], "-o", "/dev/null", binary,
                    "--next", *CURL[1:], "-o", "/dev/null", missing,
                    "--next", *CURL[1:], "-o", "/dev/null", redirect, timeout=90)
    assert r.returncode == 0, r.stderr
    assert len(r.stderr.splitlines()) == 10                  # --dump-har keeps the terminal
    assert os.listdir(tmp_path) == ["out.har"]               # no temporary file left
    _, entries = load_har(har)
    assert [e.request.url for e in entries] == [post, gz, binary, missing, redirect]
    for e in entries:
        assert e.serverAddress == test_host.ipv4
        assert e.request.httpVersion == "HTTP/1.1" and e.response.httpVersion == "HTTP/1.1"
        assert e.request.host == test_host.ipv4
        assert e.request.userAgent.startswith("curl/")
        start = e.startTime.timestamp()
        assert started - 1 <= start <= time.time() + 1
        assert e.startTime.tzinfo is not None
        check_timings(e)
        assert 0 < e.port < 65536                                 # "connection": client port
        assert e.raw_entry["cache"] == {}
        assert "_error" not in e.raw_entry
    assert [e.startTime for e in entries] == sorted(e.startTime for e in entries)

    p, g, b, m, rd = entries
    # POST: method, cookies, query string, post data, sizes.
    assert p.request.method == "POST"
    assert p.request.cookies == [{"name": "c1", "value": "v1"}, {"name": "c2", "value": "v2"}]
    assert p.request.queryString == [{"name": "x", "value": "1"},
                                     {"name": "y", "value": "two words"}]
    assert p.request.mimeType == "application/x-www-form-urlencoded"
    assert p.request.text == form
    assert p.request.bodySize == len(form)
    assert p.request.get_header_value("Content-Length") == str(len(form))
    answer = json.dumps({"size": len(form),
                         "sha256": hashlib.sha256(form.encode()).hexdigest()}) + "\n"
    assert p.response.status == 200 and p.response.statusText == "OK"
    assert p.response.mimeType == "application/json"
    assert p.response.contentType == "application/json"
    assert p.response.text == answer
    assert p.response.textEncoding is None
    assert p.response.contentSize == p.response.bodySize == len(answer)
    assert p.response.get_header_value("Server") == "httptap-testhost/1"
    assert p.response.raw_entry["cookies"] == []
    assert p.response.redirectURL == ""
    # gzip: content is the decoded text, bodySize the bytes on the wire.
    assert g.request.method == "GET" and g.request.bodySize == 0
    assert "postData" not in g.request.raw_entry
    assert g.request.queryString == [] and g.request.cookies == []
    assert g.response.get_header_value("Content-Encoding") == "gzip"
    assert g.response.contentSize == 300
    assert g.response.text == gzip_plain(300).decode()
    wire = int(g.response.get_header_value("Content-Length"))
    assert g.response.bodySize == wire
    assert g.response.raw_entry["content"]["compression"] == 300 - wire
    # binary: base64.
    assert b.response.mimeType == "application/octet-stream"
    assert b.response.textEncoding == "base64"
    assert base64.b64decode(b.response.text) == pattern_bytes("bytes", 50)
    assert b.response.contentSize == b.response.bodySize == 50
    # 404
    assert m.response.status == 404 and m.response.statusText == "Not Found"
    assert json.loads(m.response.text) == {"status": 404}
    # redirect
    assert rd.response.status == 302 and rd.response.statusText == "Found"
    assert rd.response.redirectURL == "/status/200"
    assert rd.response.contentSize == 0


def test_har_sink_spec_writes_the_same(test_host, tmp_path):
    """``-q --sink har:PATH``: the HAR and no terminal lines."""
    har = tmp_path / "out.har"
    url = test_host.url("/files/small")
    r = run_httptap("-q", "--sink", f"har:{har}", "--", *CURL, "-o", "/dev/null", url,
                    timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    _, entries = load_har(har)
    assert [e.request.url for e in entries] == [url]
    assert entries[0].response.status == 200
    assert entries[0].response.contentSize == 1024
    assert entries[0].response.textEncoding == "base64"
    assert len(base64.b64decode(entries[0].response.text)) == 1024


def test_har_written_when_the_command_fails(test_host, tmp_path):
    har = tmp_path / "out.har"
    url = test_host.url("/status/500")
    r = run_httptap("--stderr", "--dump-har", str(har), "--", "sh", "-c",
                    f"curl -sS --max-time 30 -o /dev/null {url}; exit 3", timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stderr.splitlines() == [f"---> GET {url}",
                                     f"<--- 500 {url} ({json_size({'status': 500})} bytes)"]
    assert os.listdir(tmp_path) == ["out.har"]
    _, entries = load_har(har)
    assert [(e.request.url, e.response.status, e.response.statusText) for e in entries] == \
        [(url, 500, "Internal Server Error")]


def wait_for_process(name: str, session: int, timeout: float = 30) -> int:
    """Pid of a process called ``name`` in session ``session``, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            if comm == name and int(fields[3]) == session:    # state ppid pgrp session
                return int(entry)
        time.sleep(0.02)
    raise AssertionError(f"no {name} process in session {session} after {timeout} s")


@pytest.mark.parametrize("how, sig, tail", [
    # A terminal's Ctrl-C: SIGINT to the whole foreground process group (the command too).
    ("group", signal.SIGINT, "sleep 300"),
    # `kill -INT <httptap>`: httptap passes it on to the command. (`exec`: a shell waiting
    # for a foreground job defers SIGINT until that job ends, with or without httptap.)
    ("pid", signal.SIGINT, "exec sleep 300"),
    ("pid", signal.SIGTERM, "exec sleep 300"),
], ids=["ctrl-c", "sigint", "sigterm"])
def test_har_written_after_ctrl_c(test_host, tmp_path, how, sig, tail):
    har = tmp_path / "out.har"
    url = test_host.url("/files/small")
    proc = subprocess.Popen(
        httptap_argv("--dump-har", str(har), "--", "sh", "-c",
                     f"curl -sS --max-time 30 -o /dev/null {url}; {tail}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out = read_through_response_line(proc)
        assert not har.exists()                     # written at exit, not before
        # Signal only once `sleep` runs: a shell that gets SIGINT while it waits for curl
        # (which exits normally) goes on to the next command, terminal or not.
        wait_for_process("sleep", session=proc.pid)
        if how == "group":
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        rest, err = proc.communicate(timeout=60)  # long before the sleep would end
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    lines = (out + rest).decode().splitlines()
    assert lines == [f"---> GET {url}", f"<--- 200 {url} (1024 bytes)"]
    assert proc.returncode == 128 + sig, err.decode()
    assert os.listdir(tmp_path) == ["out.har"]
    with open(har, encoding="utf-8") as f:
        json.load(f)                                # complete, valid JSON
    _, entries = load_har(har)
    assert [(e.request.url, e.response.status) for e in entries] == [(url, 200)]
    assert entries[0].response.contentSize == 1024


def test_har_started_date_time_is_iso_8601(test_host, tmp_path):
    har = tmp_path / "out.har"
    url = test_host.url("/status/200")
    r = run_httptap("--sink", f"har:{har}", "--", *CURL, "-o", "/dev/null", url, timeout=60)
    assert r.returncode == 0, r.stderr
    raw = json.loads(har.read_text())
    when = raw["log"]["entries"][0]["startedDateTime"]
    assert ISO.match(when)
    parsed = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
    assert abs(parsed.timestamp() - time.time()) < 120


def test_har_written_when_no_exit_is_interrupted(test_host, tmp_path):
    har = tmp_path / "out.har"
    url = test_host.url("/files/small")
    proc = subprocess.Popen(
        httptap_argv("--no-exit", "--dump-har", str(har), "--", *CURL, "-o", "/dev/null", url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out = read_through_response_line(proc)
        time.sleep(0.5)
        assert proc.poll() is None                  # curl is done, httptap stays
        assert not har.exists()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert (out + rest).decode().splitlines() == [f"---> GET {url}",
                                                  f"<--- 200 {url} (1024 bytes)"]
    assert proc.returncode == 0, err.decode()        # the command's status
    assert os.listdir(tmp_path) == ["out.har"]
    _, entries = load_har(har)
    assert [(e.request.url, e.response.status) for e in entries] == [(url, 200)]


# --------------------------------------------------------------------------- colours

def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run httptap with stdout on a pseudo-terminal; return (exit status, what it wrote)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(httptap_argv(*args), stdout=slave, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env={**os.environ, **env},
                                start_new_session=True)
    finally:
        os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 60
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"httptap did not finish: {out!r}"
            ready, _, _ = select.select([master], [], [], min(left, 1.0))
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:                     # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        os.close(master)
        assert proc.stderr is not None
        proc.stderr.close()
    return proc.returncode, out.decode().replace("\r\n", "\n")


@pytest.mark.parametrize("no_color", ["", "1"], ids=["colour", "NO_COLOR"])
def test_colours_only_on_a_terminal_without_no_color(test_host, no_color):
    ok, missing = test_host.url("/files/small"), test_host.url("/status/404")
    env = {"NO_COLOR": no_color}                    # set but empty counts as unset
    status, out = _run_on_a_terminal(
        ["--", *CURL, "-o", "/dev/null", ok, "-o", "/dev/null", missing], env)
    assert status == 0, out
    size = json_size({"status": 404})
    if no_color:
        assert out.splitlines() == [f"---> GET {ok}", f"<--- 200 {ok} (1024 bytes)",
                                    f"---> GET {missing}", f"<--- 404 {missing} ({size} bytes)"]
    else:
        blue, green, yellow, reset = "\x1b[34m", "\x1b[32m", "\x1b[33m", "\x1b[0m"
        assert out.splitlines() == [
            f"{blue}---> GET {ok}{reset}",
            f"{green}<--- 200 {ok} (1024 bytes){reset}",
            f"{blue}---> GET {missing}{reset}",
            f"{yellow}<--- 404 {missing} ({size} bytes){reset}",
        ]


def test_a_slow_reader_loses_no_lines():
    """httptap's stdout is a pipe nobody reads for a while: events wait, none is lost."""
    import http.server
    import threading

    class Quick(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            # One write: head and body in separate writes meet Nagle and delayed ACKs
            # (40 ms a request, with or without httptap).
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quick)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    client = ("import http.client, sys\n"
              "c = http.client.HTTPConnection('host.httptap.local', int(sys.argv[1]), timeout=10)\n"
              "for i in range(1500):\n"
              "    c.request('GET', '/%d' % i); c.getresponse().read()\n")
    proc = subprocess.Popen(httptap_argv("--http", str(port), "--", sys.executable, "-c", client,
                                         str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(3)  # the pipe (64 KiB) fills long before 3,000 lines are read
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        server.shutdown()
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == 3000
    assert lines[-1] == f"<--- 200 http://host.httptap.local:{port}/1499 (2 bytes)"
