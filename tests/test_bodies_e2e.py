"""End to end: bodies of any size with ``--dump-har``, ``--body`` and ``--sink ndjson``.

Bodies travel from the proxy to the sink as ``BodyChunk`` messages, so no size of body can
produce a message over a ring's record limit; what is kept is bounded by
``--max-body-size`` (default 16M) and a cut is marked in every output: HAR
``content.comment`` (``postData.comment``), ndjson ``"truncated": true``, and a line after
the body with ``--body``. Every run ends with a small request, which must be recorded too
(a large body used to wedge the proxy's output, losing everything after it).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import time

import pytest
from haralyzer import HarParser
from runner import httptap_argv, run_httptap
from servers import gzip_plain, pattern_bytes

pytestmark = pytest.mark.root

MiB = 1 << 20
KEPT = 16 * MiB  # --max-body-size's default
CURL = "curl -sS --max-time 120 -o /dev/null"


def har_entries(path) -> list[dict]:  # noqa: ANN001
    """The entries of a HAR file, opened by haralyzer (which rejects an invalid HAR)."""
    return HarParser.from_file(str(path)).har_data["entries"]


def upload_file(tmp_path, size: int):  # noqa: ANN001, ANN201
    path = tmp_path / f"up-{size}.bin"
    path.write_bytes(pattern_bytes("up", size))
    return path


def run_with_every_output(test_host, tmp_path, command: str, *extra: str):  # noqa: ANN001, ANN201
    har, ndjson = tmp_path / "out.har", tmp_path / "out.ndjson"
    r = run_httptap("--stderr", "--body", "--sink", "terminal", "--sink", f"ndjson:{ndjson}",
                    "--dump-har", str(har), *extra, "--", "sh", "-c", command, timeout=240,
                    env={"SSL_CERT_FILE": str(test_host.ca_file)})
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in ndjson.read_text().splitlines()]
    return r, har_entries(har), [rec for rec in records if rec["type"] == "http"]


def b64(text: str) -> bytes:
    return base64.b64decode(text)


CASES = [
    pytest.param("http", "--http1.1", id="http"),
    pytest.param("https", "--http1.1", id="https-h1"),
    pytest.param("https", "--http2", id="https-h2"),
]
SIZES = [pytest.param(2 * MiB, id="2MiB"), pytest.param(20 * MiB, id="20MiB")]


def _url(test_host, scheme: str, path: str) -> str:  # noqa: ANN001
    return test_host.url(path) if scheme == "http" else test_host.https_url(path)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("scheme, version", CASES)
def test_a_large_download_then_a_small_one(test_host, tmp_path, scheme, version, size):
    big, small = _url(test_host, scheme, f"/bytes/{size}"), _url(test_host, scheme, "/files/small")
    r, entries, records = run_with_every_output(
        test_host, tmp_path, f"{CURL} {version} {big} && {CURL} {version} {small}")
    kept, cut = min(size, KEPT), size > KEPT
    expected = pattern_bytes("bytes", size)[:kept]
    alpn = "HTTP/2" if version == "--http2" else "HTTP/1.1"
    # HAR
    assert [(e["request"]["url"], e["response"]["status"]) for e in entries] == \
        [(big, 200), (small, 200)]
    assert entries[0]["response"]["httpVersion"] == alpn
    content = entries[0]["response"]["content"]
    assert content["size"] == size and content["encoding"] == "base64"
    assert b64(content["text"]) == expected
    if cut:
        assert content["comment"] == \
            f"truncated: the first {KEPT} of {size} bytes are kept (--max-body-size)"
    else:
        assert "comment" not in content
    assert "comment" not in entries[1]["response"]["content"]
    # ndjson
    assert [rec["request"]["url"] for rec in records] == [big, small]
    response = records[0]["response"]
    assert (response["decoded_size"], response["body_encoding"], response["truncated"]) == \
        (size, "base64", cut)
    assert b64(response["body"]) == expected
    assert records[1]["response"]["truncated"] is False and records[1]["error"] is None
    # --body on the terminal
    lines = r.stderr.splitlines()
    assert f"<--- 200 {big} ({size} bytes)" in lines and f"<--- 200 {small} (1024 bytes)" in lines
    assert f"<{kept} bytes of binary data>" in lines
    assert (f"<truncated: {KEPT} of {size} bytes shown>" in lines) == cut


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("scheme, version", CASES)
def test_a_large_upload_then_a_small_request(test_host, tmp_path, scheme, version, size):
    path = upload_file(tmp_path, size)
    up, small = _url(test_host, scheme, "/upload?hash=none"), _url(test_host, scheme, "/files/small")
    r, entries, records = run_with_every_output(
        test_host, tmp_path,
        f"{CURL} {version} -H 'Content-Type: application/octet-stream' "
        f"--data-binary @{shlex.quote(str(path))} {shlex.quote(up)} && {CURL} {version} {small}")
    kept, cut = min(size, KEPT), size > KEPT
    expected = path.read_bytes()[:kept]
    # HAR
    assert [(e["request"]["method"], e["request"]["url"]) for e in entries] == \
        [("POST", up), ("GET", small)]
    request = entries[0]["request"]
    assert request["bodySize"] == size
    assert request["httpVersion"] == ("HTTP/2" if version == "--http2" else "HTTP/1.1")
    post = request["postData"]
    assert post["mimeType"] == "application/octet-stream" and post["encoding"] == "base64"
    assert b64(post["text"]) == expected
    assert ("comment" in post) == cut
    assert json.loads(entries[0]["response"]["content"]["text"]) == {"size": size}
    # ndjson
    assert [rec["request"]["url"] for rec in records] == [up, small]
    req = records[0]["request"]
    assert (req["body_size"], req["body_encoding"], req["truncated"]) == (size, "base64", cut)
    assert b64(req["body"]) == expected
    assert json.loads(records[0]["response"]["body"]) == {"size": size}
    # --body on the terminal
    lines = r.stderr.splitlines()
    assert f"<{kept} bytes of binary data>" in lines and f"<--- 200 {small} (1024 bytes)" in lines
    assert (f"<truncated: {KEPT} of {size} bytes shown>" in lines) == cut


def test_a_large_gzip_download_is_kept_decoded_and_cut(test_host, tmp_path):
    """Content decoding and capture stream together: the HAR keeps the first 16 MiB of the
    decoded text of a 20 MiB gzip response, and says it was cut."""
    size = 20 * MiB
    har = tmp_path / "out.har"
    url = test_host.url(f"/gzip/{size}")
    r = run_httptap("--stderr", "--dump-har", str(har), "--", "sh", "-c",
                    f"{CURL} {url} && {CURL} {test_host.url('/files/small')}", timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    entries = har_entries(har)
    assert len(entries) == 2
    content = entries[0]["response"]["content"]
    assert content["size"] == size and "encoding" not in content
    assert content["text"].encode() == gzip_plain(size)[:KEPT]
    assert content["comment"].startswith(f"truncated: the first {KEPT} of {size} bytes")


def test_max_body_size_option_bounds_what_is_kept(test_host, tmp_path):
    """--max-body-size 100K: every output keeps the first 100 KiB and says so."""
    size = 300_000
    big = test_host.url(f"/bytes/{size}")
    r, entries, records = run_with_every_output(
        test_host, tmp_path, f"{CURL} {big}", "--max-body-size", "100K")
    content = entries[0]["response"]["content"]
    assert b64(content["text"]) == pattern_bytes("bytes", size)[:100 * 1024]
    assert content["comment"].startswith(f"truncated: the first {100 * 1024} of {size} bytes")
    assert records[0]["response"]["truncated"] is True
    assert f"<truncated: {100 * 1024} of {size} bytes shown>" in r.stderr.splitlines()


def test_max_body_size_above_the_default_keeps_more(test_host, tmp_path):
    size = 20 * MiB
    big = test_host.url(f"/bytes/{size}")
    _, entries, records = run_with_every_output(
        test_host, tmp_path, f"{CURL} {big}", "--max-body-size", "32M")
    assert records[0]["response"]["truncated"] is False
    assert len(b64(entries[0]["response"]["content"]["text"])) == size


def test_max_body_size_rejects_a_bad_size():
    r = run_httptap("--max-body-size", "lots", "--", "true")
    assert r.returncode == 125
    assert "'lots' is not a size" in r.stderr


# --------------------------------------------------------------------------- memory

def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _peak_rss(pid: int) -> tuple[str, int] | None:
    """(name, VmHWM in bytes) of a process: its peak resident memory so far."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    hwm = fields.get("VmHWM")
    return (fields["Name"].strip(), int(hwm.split()[0]) * 1024) if hwm else None


def run_measuring_memory(argv: list[str], env: dict[str, str], timeout: float):  # noqa: ANN201
    """Run httptap; return (exit status, stderr, {pid: (name, peak RSS)}) for httptap's own
    processes (the supervisor and every process under it that is httptap, not the command).
    VmHWM is each process's high-water mark, so sampling every 20 ms misses no peak of a
    process that is still alive at the next sample; the stages all live to the end."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **env})
    peaks: dict[int, tuple[str, int]] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        todo = [proc.pid]
        while todo:
            pid = todo.pop()
            todo += _children(pid)
            seen = _peak_rss(pid)
            if seen is not None and (pid == proc.pid or seen[0].startswith(("httptap", "python"))):
                peaks[pid] = max(peaks.get(pid, seen), seen, key=lambda p: p[1])
        try:
            proc.wait(0.02)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err.decode(errors="replace"), peaks


@pytest.mark.slow
def test_a_200mib_download_with_dump_har_keeps_memory_bounded(test_host, tmp_path):
    """Peak memory of every httptap process together stays far below the body's size
    (the proxy holds no body; the sink at most --max-body-size of it, and the HAR)."""
    size = 200 * MiB
    har = tmp_path / "out.har"
    big, small = test_host.url(f"/bytes/{size}"), test_host.url("/files/small")
    code, err, peaks = run_measuring_memory(
        httptap_argv("--stderr", "--dump-har", str(har), "--", "sh", "-c",
                     f"{CURL} {big} && {CURL} {small}"), {}, timeout=240)
    assert code == 0, err[-3000:]
    entries = har_entries(har)
    assert [e["request"]["url"] for e in entries] == [big, small]
    content = entries[0]["response"]["content"]
    assert content["size"] == size and len(b64(content["text"])) == KEPT
    assert "comment" in content
    total = sum(rss for _, rss in peaks.values())
    report = ", ".join(f"{name} {rss / MiB:.0f}" for name, rss in sorted(peaks.values()))
    print(f"peak RSS of httptap's processes: {total / MiB:.0f} MiB in all ({report})")
    by_name = {name: rss for name, rss in peaks.values()}
    # Measured: proxy 54, sink 96 (the HAR of a 16 MiB body, base64, encoded and indented
    # at close), 275 MiB in all. A proxy or sink that held the whole body would add 200.
    assert by_name["httptap-proxy"] < 100 * MiB, report
    assert by_name["httptap-sink"] < 190 * MiB, report
    assert total < 400 * MiB, report
