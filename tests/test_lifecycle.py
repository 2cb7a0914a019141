"""End to end: the namespace, the command's exit status, signals, and nothing left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
from runner import (STARTED, UNPRIVILEGED_UID, leftovers, run_httptap, stage_pids,
                    start_httptap, unprivileged_skip_reason)


@pytest.fixture
def leaves_nothing(monkeypatch):
    """Fails the test if one of its httptap runs left a process, a run directory or a
    temporary file. Only this test's own runs are looked at (their sessions, their run
    directories, a TMPDIR of their own), so other runs on the machine do not count."""
    tmpdir = tempfile.mkdtemp(prefix="tapsuite-tmp-")
    os.chmod(tmpdir, 0o1777)  # some runs are as an unprivileged user
    monkeypatch.setenv("TMPDIR", tmpdir)
    first = len(STARTED)
    yield
    runs = STARTED[first:]
    try:
        deadline = time.monotonic() + 5  # stages die with the supervisor (PDEATHSIG): soon
        while (left := leftovers(runs, tmpdir)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    assert left == [], f"left behind: {left}"


def test_echo_hello(leaves_nothing):
    r = run_httptap("--", "echo", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n"


def test_exit_status_is_the_commands(leaves_nothing):
    assert run_httptap("--", "sh", "-c", "exit 7").returncode == 7


def test_missing_command_exits_127(leaves_nothing):
    r = run_httptap("--", "no-such-command-anywhere")
    assert r.returncode == 127
    assert "command not found: no-such-command-anywhere" in r.stderr


def test_not_executable_exits_126(leaves_nothing, tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    r = run_httptap("--", str(script))
    assert r.returncode == 126
    assert "permission denied" in r.stderr


def test_killed_by_signal_exits_128_plus_signal(leaves_nothing):
    assert run_httptap("--", "sh", "-c", "kill -TERM $$").returncode == 143


def test_tun_device_is_configured(leaves_nothing):
    r = run_httptap("--", "ip", "-brief", "addr")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("httptap"))
    assert "10.1.1.100/24" in line.split()
    routes = run_httptap("--", "ip", "route").stdout
    assert "default dev httptap" in routes


def test_options_for_the_device(leaves_nothing):
    r = run_httptap("--tun", "tap0", "--subnet", "10.9.8.7/16", "--gateway", "10.9.0.1", "--",
                    "sh", "-c", "ip -brief addr; cat /etc/resolv.conf")
    assert r.returncode == 0, r.stderr
    assert any(l.startswith("tap0") and "10.9.8.7/16" in l for l in r.stdout.splitlines())
    assert "nameserver 10.9.0.1" in r.stdout


def test_no_overlay_keeps_resolv_conf(leaves_nothing):
    with open("/etc/resolv.conf") as f:
        host = f.read()
    r = run_httptap("--no-overlay", "--", "cat", "/etc/resolv.conf")
    assert r.stdout == host


def test_bad_option_value_exits_125(leaves_nothing):
    r = run_httptap("--subnet", "nonsense", "--", "true")
    assert r.returncode == 125
    assert "httptap:" in r.stderr and "--subnet" in r.stderr
    r = run_httptap("--http", "80,x", "--", "true")
    assert r.returncode == 125


@pytest.mark.parametrize("args, code", [
    (("--help",), 0), (("-V",), 0), (("--bogus", "--", "true"), 125),
    (("--subnet", "nonsense", "--", "true"), 125), (("--sink", "har:", "--", "true"), 125),
])
def test_a_run_that_never_starts_leaves_no_process_when_it_exits(args, code, leaves_nothing):
    """The launcher and the trust maker are forked before the options are parsed
    (run.early): every way out that does not start them ends them before httptap
    exits, not after."""
    proc = start_httptap(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert leftovers([proc.pid], os.environ["TMPDIR"]) == []  # at once: no waiting


def test_stats_table_lists_every_stage(leaves_nothing):
    r = run_httptap("--stats", "--", "true")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0] for line in r.stdout.splitlines()[2:]}  # title, column heads
    assert rows == {"tcp", "proxy", "sink"}  # the shards read the device: no tun stage
    r = run_httptap("--stats", "--dump-pcap", "/dev/null", "--", "true")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0] for line in r.stdout.splitlines()[2:]}
    assert rows == {"tun", "tcp", "proxy", "sink"}  # one process writes the capture


def test_unprivileged_user_runs_as_itself(leaves_nothing):
    reason = unprivileged_skip_reason()
    if reason:
        pytest.skip(reason)
    r = run_httptap("--", "sh", "-c", "id -u; ip -brief addr", uid=UNPRIVILEGED_UID)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == str(UNPRIVILEGED_UID)
    assert any(l.startswith("httptap") and "10.1.1.100/24" in l for l in lines)


def _wait_for_stages(proc: subprocess.Popen[str], names: set[str]) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = stage_pids(proc.pid)
        if names <= set(pids):
            return pids
        time.sleep(0.05)
    raise AssertionError(f"stages never appeared: {stage_pids(proc.pid)}")


@pytest.mark.parametrize("stage", ["tun", "tcp", "proxy", "sink"])
def test_a_dead_stage_is_named_and_stops_the_command(stage, leaves_nothing, tmp_path):
    # A tun stage exists only with --dump-pcap.
    options = ["--dump-pcap", str(tmp_path / "x.pcap")] if stage == "tun" else []
    proc = start_httptap(*options, "--", "sh", "-c", "echo started; sleep 60",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        pids = _wait_for_stages(proc, {f"httptap-{stage}"})
        os.kill(pids[f"httptap-{stage}"], signal.SIGKILL)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 125
    assert f"the {stage} stage killed by SIGKILL" in err


def _init_rss_kb(httptap_pid: int) -> int | None:
    """The RSS of the namespace's PID 1, or None while it is not to be seen (exec'ing)."""
    try:
        launcher = stage_pids(httptap_pid)["httptap-ns"]
        init = stage_pids(launcher)["httptap-init"]
        with open(f"/proc/{init}/status") as f:
            return int(f.read().split("VmRSS:")[1].split()[0])
    except (KeyError, OSError, IndexError):
        return None


@pytest.mark.parametrize("sig, code, after_shrink", [(signal.SIGINT, 3, False),
                                                    (signal.SIGTERM, 5, True)])
def test_a_signal_to_httptap_reaches_the_command(sig, code, after_shrink, leaves_nothing):
    """Also once the launcher and the namespace's PID 1 have become small interpreters
    (after SHRINK_AFTER, httptap.run.signalrelay): the signal still reaches the command and
    its status comes back."""
    from httptap.run.namespace import SHRINK_AFTER

    script = f'trap "echo got-it; exit {code}" {sig.name[3:]}; echo ready; sleep 60 & wait'
    proc = start_httptap("--", "sh", "-c", script,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        if after_shrink:
            # Wait (with a deadline) for the shrink: a fresh interpreter, not a fork's copy.
            deadline = time.monotonic() + SHRINK_AFTER + 20
            while (_init_rss_kb(proc.pid) or 1 << 30) >= 16_000:
                assert time.monotonic() < deadline, "the namespace's PID 1 never shrank"
                time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert "got-it" in out
    assert proc.returncode == code, err


def test_stats_record_in_ndjson(leaves_nothing, tmp_path):
    import json

    path = tmp_path / "out.ndjson"
    r = run_httptap("--stats", "--sink", f"ndjson:{path}", "--", "true")
    assert r.returncode == 0, r.stderr
    # A file sink alone keeps the terminal (SPEC), on stdout: the table goes with it.
    assert "httptap stats after" in r.stdout, r
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["type"] == "stats"
    assert {s["name"] for s in record["stages"]} == {"tcp", "proxy", "sink"}
    # Written after the stages exited, from their rusage (microseconds): every stage
    # forked, set up its loop and ran it, which takes well over the 0.5 ms that rounds
    # to 0.001. A 0 here means a stage's CPU time was lost (not read, or the wrong pid).
    assert all(s["cpu_s"] > 0 for s in record["stages"]), record["stages"]


def test_stats_interval_records_in_ndjson(leaves_nothing, tmp_path):
    import json

    path = tmp_path / "out.ndjson"
    # ~10 intervals while the command runs; 3 are asked for, so a loaded machine passes.
    r = run_httptap("--stats-interval", "0.3", "--sink", f"ndjson:{path}", "--", "sleep", "3")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in path.read_text().splitlines()]
    stats = [rec for rec in records if rec["type"] == "stats"]
    assert len(stats) >= 3  # a few while running, and the final one
    assert [s["elapsed_s"] for s in stats] == sorted(s["elapsed_s"] for s in stats)
    assert all({st["name"] for st in s["stages"]} == {"tcp", "proxy", "sink"} for s in stats)
