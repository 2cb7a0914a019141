"""End to end: protocol errors and HTTP/2 stream resets, named as they happen.

Real clients under httptap against the test host's broken answers (``/raw/...``: not
HTTP, bad chunked encoding, a response head over 64 KiB), requests no server should
follow (a head over 64 KiB, too many headers, a bad Content-Length) and an HTTP/2 server
that resets a stream (``/reset/<code>``). Each must be an ``http`` record with its error
in the terminal, ndjson and HAR, not a ``tcp`` record and not "the connection closed
before a response". The commands' own stderr goes to /dev/null; only httptap's lines
(by their prefixes) are compared.
"""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from runner import run_httptap
from testhosts import TestHost

pytestmark = pytest.mark.root

PREFIXES = ("---> ", "<--- ", "httptap:")
CURL = "curl -sS --max-time 30 -o /dev/null"

# Sends one request head as given, half-closes, reads the answer (bounded in time).
RAW_CLIENT = """
import socket, sys
host, port, head = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
with socket.create_connection((host, port), timeout=20) as s:
    s.sendall(head)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
"""


def _records(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _run(test_host: TestHost, tmp_path, script: str) -> tuple[list[str], list[dict], list[dict]]:
    """Run ``sh -c SCRIPT`` under httptap with ndjson and HAR; httptap's lines, the ndjson
    records and the HAR entries."""
    nd, har = str(tmp_path / "out.ndjson"), str(tmp_path / "out.har")
    r = run_httptap("--stderr", "--sink", "terminal", "--sink", f"ndjson:{nd}",
                    "--dump-har", har, "--", "sh", "-c", script + "\nexit 0",
                    timeout=120, env={"SSL_CERT_FILE": str(test_host.ca_file)})
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    lines = [line for line in r.stderr.splitlines() if line.startswith(PREFIXES)]
    with open(har, encoding="utf-8") as f:
        entries = json.load(f)["log"]["entries"]
    return lines, _records(nd), entries


def test_protocol_errors_are_named_http_records(test_host, tmp_path):
    raw = {name: test_host.url(f"/raw/{name}") for name in ("not-http", "bad-chunked",
                                                            "huge-head")}
    headers_url = test_host.url("/headers")
    upload_url = test_host.url("/upload")
    host = f"{test_host.ipv4}"
    many = "GET /headers HTTP/1.1\r\nHost: " + host + "\r\n" + "a: b\r\n" * 1001 + "\r\n"
    bad_length = "POST /upload HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 1x\r\n\r\n"
    raw_client = f"{shlex.quote(sys.executable)} -c {shlex.quote(RAW_CLIENT)} {host} 80"
    script = "\n".join([
        *(f"{CURL} {url} 2>/dev/null" for url in raw.values()),
        f"{CURL} -H X-Big:{'a' * (70 * 1024)} {headers_url} 2>/dev/null",
        f"{raw_client} {shlex.quote(many)} 2>/dev/null",
        f"{raw_client} {shlex.quote(bad_length)} 2>/dev/null",
    ])
    lines, records, entries = _run(test_host, tmp_path, script)
    expected = [
        ("GET", raw["not-http"], "response is not HTTP"),
        ("GET", raw["bad-chunked"], "invalid chunked encoding"),
        ("GET", raw["huge-head"], "response head over 64 KiB"),
        ("GET", headers_url, "request head over 64 KiB"),
        ("GET", headers_url, "too many headers"),
        ("POST", upload_url, "invalid Content-Length"),
    ]
    # The bad chunked answer had a status line: it is shown, with the error.
    assert lines == [
        f"---> GET {raw['not-http']}", f"<--- error {raw['not-http']}: response is not HTTP",
        f"---> GET {raw['bad-chunked']}",
        f"<--- 200 {raw['bad-chunked']} (5 bytes, error: invalid chunked encoding)",
        f"---> GET {raw['huge-head']}",
        f"<--- error {raw['huge-head']}: response head over 64 KiB",
        f"---> GET {headers_url}", f"<--- error {headers_url}: request head over 64 KiB",
        f"---> GET {headers_url}", f"<--- error {headers_url}: too many headers",
        f"---> POST {upload_url}", f"<--- error {upload_url}: invalid Content-Length",
    ]
    assert [r["type"] for r in records] == ["http"] * 6, records
    assert [(r["request"]["method"], r["request"]["url"], r["error"]) for r in records] == \
        expected
    assert sorted((e["request"]["method"], e["request"]["url"], e["_error"]) for e in entries) \
        == sorted(expected)


def test_http2_stream_reset_is_reported_when_it_happens(test_host, tmp_path):
    if not test_host.has_h2:
        pytest.skip("the test host serves no HTTP/2 (the h2 package does not import)")
    reset, small = test_host.https_url("/reset/2"), test_host.https_url("/bytes/5")
    # Two transfers on one connection: the reset is reported before the second
    # exchange, not when the connection ends.
    lines, records, entries = _run(test_host, tmp_path,
                                   f"{CURL} -o /dev/null --http2 {reset} {small} 2>/dev/null")
    error = "stream reset by the server (INTERNAL_ERROR)"
    assert lines == [f"---> GET {reset}", f"<--- error {reset}: {error}",
                     f"---> GET {small}", f"<--- 200 {small} (5 bytes)"]
    assert [(r["type"], r["request"]["url"], r["error"]) for r in records] == [
        ("http", reset, error), ("http", small, None)]
    assert records[0]["client"] == records[1]["client"]  # one connection
    assert sorted((e["request"]["url"], e.get("_error")) for e in entries) == sorted(
        [(reset, error), (small, None)])
