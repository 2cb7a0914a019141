"""End to end: nothing observed is lost when a stage dies or the output's reader is slow.

- A stage SIGKILLed mid-run (proxy, a tcp shard, the sink): the HAR file still holds every
  exchange the sink had received, the one still open is there with an error, and httptap
  says what was lost and exits 125.
- A reader that starts late (an ndjson FIFO, stdout into a pipe): every line arrives, and
  the drain does not give up while it waits.

Every wait is on a condition the test can see (lines on httptap's stdout, a file the
command writes when it is done), with a deadline; the processes are found among the
children of this run's httptap process only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from haralyzer import HarParser  # type: ignore[import-untyped]
from runner import httptap_argv, read_stdout_until, stage_pids

from httptap.sinks.common import UNFINISHED
from httptap.run.supervisor import DRAIN_STALL

pytestmark = pytest.mark.root

# N keep-alive GETs of PATH?i=..., then (if "inflight") a POST whose body never
# completes, so that its exchange is still open; then touch DONE and stay alive a while.
CLIENT = r"""
import http.client, socket, sys, time
host, port, n, path, inflight, done = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1", sys.argv[6]
c = http.client.HTTPConnection(host, port, timeout=30)
for i in range(n):
    c.request("GET", f"{path}?i={i}")
    c.getresponse().read()
if inflight:
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(b"POST /upload?inflight HTTP/1.1\r\nHost: " + host.encode()
              + b"\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
open(done, "w").close()
if inflight:
    time.sleep(60)
"""


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Whatever happens in the block, the run's whole process group is gone after it."""
    try:
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def client(url: str, n: int, done: os.PathLike[str], inflight: bool) -> list[str]:
    parts = urlsplit(url)
    return [sys.executable, "-c", CLIENT, parts.hostname or "", str(parts.port or 80), str(n),
            parts.path, "1" if inflight else "0", str(done)]


def read_until(proc: subprocess.Popen[bytes], lines: list[bytes], timeout: float = 60) -> bytes:
    """What httptap printed until every line in ``lines`` is there."""
    return read_stdout_until(proc, lambda out: all(line in out.splitlines() for line in lines),
                             "missing lines", timeout)


def wait_for(condition, what: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"httptap ended while waiting for {what}: {err.decode()[-2000:]}")
        assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s"
        time.sleep(0.02)


@pytest.mark.parametrize("stage, options", [
    ("proxy", []), ("tcp", []), ("sink", []),
    # With shards, the other shard's exchanges still complete or are reported.
    ("proxy1", ["--workers", "2"]), ("tcp1", ["--workers", "2"]),
    # With a tun stage (--dump-pcap) in front of the tcp shards.
    ("tun", ["--dump-pcap", "PCAP"]), ("tcp", ["--dump-pcap", "PCAP"]),
], ids=lambda v: " ".join(v).replace("PCAP", "pcap") if isinstance(v, list) else v)
def test_a_stage_killed_mid_run_loses_no_completed_exchange(stage, options, test_host, tmp_path):
    n = 20
    options = [str(tmp_path / "x.pcap") if o == "PCAP" else o for o in options]
    har = tmp_path / "out.har"
    url = test_host.url("/files/small")
    post = test_host.url("/upload?inflight")
    # The HAR sink comes first: once the terminal shows an event, the HAR spool has it.
    proc = subprocess.Popen(
        httptap_argv(*options, "--sink", f"har:{har}", "--sink", "terminal", "--",
                     *client(url, n, tmp_path / "done", inflight=True)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    with reaped(proc):
        expected = [f"<--- 200 {url}?i={i} (1024 bytes)".encode() for i in range(n)]
        read_until(proc, [*expected, f"---> POST {post}".encode()])
        os.kill(stage_pids(proc.pid)[f"httptap-{stage}"], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == 125, stderr
    assert f"the {stage} stage killed by SIGKILL" in stderr
    lost = [line for line in stderr.splitlines() if "output is incomplete" in line]
    assert len(lost) == 1 and lost[0].endswith(f": the {stage} stage killed by SIGKILL"), stderr
    assert "stage failed" not in stderr  # no stage reports our own SIGTERM as a failure

    with open(har, encoding="utf-8") as f:
        raw = json.load(f)
    HarParser(raw)  # a HAR a third-party reader accepts
    entries = raw["log"]["entries"]
    done = [(e["request"]["url"], e["response"]["status"], e["response"]["content"]["size"])
            for e in entries if e["request"]["method"] == "GET"]
    assert done == [(f"{url}?i={i}", 200, 1024) for i in range(n)]
    open_ones = [e for e in entries if e["request"]["method"] == "POST"]
    assert [e["request"]["url"] for e in open_ones] == [post]
    if "--workers" not in options:  # else its shard may live on and see the server's answer
        assert open_ones[0]["response"]["status"] == 0 and open_ones[0]["_error"]
        if stage in ("proxy", "sink"):  # with a live proxy, the proxy says why it ended
            assert open_ones[0]["_error"] == UNFINISHED
    assert {"done", "out.har"} <= set(os.listdir(tmp_path))
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def late(proc: subprocess.Popen[bytes], done: os.PathLike[str]) -> None:
    """Return once the command has finished and then longer than the drain's patience
    without progress has passed, httptap still waiting for its reader all along."""
    wait_for(lambda: os.path.exists(done), "end of the command", proc, timeout=120)
    until = time.monotonic() + DRAIN_STALL + 1
    wait_for(lambda: time.monotonic() > until, "the late reader's turn", proc)


def http_urls(lines: list[bytes]) -> list[str]:
    records = [json.loads(line) for line in lines]
    return [r["request"]["url"] for r in records if r["type"] == "http"]


N_SLOW = 3000  # their events fit the proxy -> sink ring: the command ends without a reader


@pytest.mark.slow
def test_an_ndjson_fifo_read_late_gets_every_line(test_host, tmp_path):
    fifo, done = tmp_path / "out.fifo", tmp_path / "done"
    os.mkfifo(fifo)
    url = test_host.url("/status/204")  # one write: no Nagle/delayed-ACK pause per request
    proc = subprocess.Popen(
        # -q: no terminal lines on stdout, which this test reads only at the end
        httptap_argv("-q", "--sink", f"ndjson:{fifo}", "--",
                     *client(url, N_SLOW, done, inflight=False)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    with reaped(proc):
        late(proc, done)
        with open(fifo, "rb") as f:  # EOF once httptap is done with it
            lines = f.read().splitlines()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert http_urls(lines) == [f"{url}?i={i}" for i in range(N_SLOW)]
    assert b"incomplete" not in err and b"drain" not in err


@pytest.mark.slow
def test_stdout_into_a_pipe_read_late_gets_every_line(test_host, tmp_path):
    done = tmp_path / "done"
    url = test_host.url("/status/204")  # one write: no Nagle/delayed-ACK pause per request
    proc = subprocess.Popen(
        httptap_argv("--sink", "ndjson", "--", *client(url, N_SLOW, done, inflight=False)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    with reaped(proc):
        late(proc, done)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert http_urls(out.splitlines()) == [f"{url}?i={i}" for i in range(N_SLOW)]
    assert b"incomplete" not in err and b"drain" not in err


def test_a_signal_during_the_drain_ends_it_at_once_writing_the_har(test_host, tmp_path):
    """A reader that never comes: a second Ctrl-C (any of the forwarded signals) during the
    drain stops it, the HAR file keeps what the sink had, and httptap says what it lost."""
    done, har = tmp_path / "done", tmp_path / "out.har"
    url = test_host.url("/status/204")
    proc = subprocess.Popen(
        httptap_argv("--sink", f"har:{har}", "--sink", "ndjson", "--",
                     *client(url, N_SLOW, done, inflight=False)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    with reaped(proc):
        wait_for(lambda: "httptap-ns" in stage_pids(proc.pid), "the launcher", proc)
        launcher = stage_pids(proc.pid)["httptap-ns"]
        wait_for(lambda: os.path.exists(done), "end of the command", proc, timeout=120)
        # Reaped by httptap: the command is gone and the drain has begun.
        wait_for(lambda: not os.path.exists(f"/proc/{launcher}"), "end of the launcher", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == 125, stderr
    lost = [line for line in stderr.splitlines() if "output is incomplete" in line]
    assert len(lost) == 1 and "interrupted by SIGINT" in lost[0], stderr
    assert "stage failed" not in stderr
    with open(har, encoding="utf-8") as f:
        urls = [e["request"]["url"] for e in json.load(f)["log"]["entries"]]
    assert urls and urls == [f"{url}?i={i}" for i in range(len(urls))]
    complete_lines = out.split(b"\n")[:-1]  # the sink may be killed mid-line
    assert len(http_urls(complete_lines)) <= len(urls)


@pytest.mark.parametrize("command_status", [0, 3])
def test_a_failed_write_is_said_and_fails_a_successful_run(command_status, test_host, tmp_path):
    """The ndjson file is a FIFO whose reader has gone before the first event: every
    write fails (EPIPE)."""
    fifo, go = tmp_path / "out.fifo", tmp_path / "go"
    os.mkfifo(fifo)
    url = test_host.url("/status/204")
    script = (f"i=0; while [ ! -e {go} ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done; "
              f"curl -sS --max-time 30 -o /dev/null {url}; exit {command_status}")
    proc = subprocess.Popen(httptap_argv("-q", "--sink", f"ndjson:{fifo}", "--", "sh", "-c", script),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    with reaped(proc):
        with open(fifo, "rb"):  # returns once the sink has opened it; closed at once
            pass
        go.touch()
        _, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == (125 if command_status == 0 else command_status), stderr
    assert stderr.count("writing output failed") == 1, stderr  # once, not per event
    lost = [line for line in stderr.splitlines() if "output is incomplete" in line]
    assert len(lost) == 1 and "failed" in lost[0], stderr


@pytest.mark.slow
def test_a_stuck_drain_is_ended_and_said(test_host, tmp_path):
    """A stage that stops moving (here: the proxy, SIGSTOPped) ends the drain after
    DRAIN_STALL seconds without progress; the sink still writes what it had."""
    n, har, go = 10, tmp_path / "out.har", tmp_path / "go"
    url = test_host.url("/files/small")
    script = (f"{shlex.join(client(url, n, tmp_path / 'done', inflight=False))}; "
              f"i=0; while [ ! -e {go} ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done")
    proc = subprocess.Popen(
        httptap_argv("--sink", f"har:{har}", "--sink", "terminal", "--", "sh", "-c", script),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    with reaped(proc):
        read_until(proc, [f"<--- 200 {url}?i={i} (1024 bytes)".encode() for i in range(n)])
        os.kill(stage_pids(proc.pid)["httptap-proxy"], signal.SIGSTOP)
        go.touch()
        _, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == 125, stderr
    assert f"made no progress for {DRAIN_STALL:.0f}s" in stderr
    lost = [line for line in stderr.splitlines() if "output is incomplete" in line]
    assert len(lost) == 1 and "the drain did not finish" in lost[0] and "proxy" in lost[0], stderr
    assert "stage failed" not in stderr
    with open(har, encoding="utf-8") as f:
        entries = json.load(f)["log"]["entries"]
    assert [(e["request"]["url"], e["response"]["status"]) for e in entries] == [
        (f"{url}?i={i}", 200) for i in range(n)]
