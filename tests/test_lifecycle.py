"""End to end: the namespace, the command's exit status, signals, and nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from runner import UNPRIVILEGED_UID, httptap_argv, run_httptap, unprivileged_skip_reason


def _snapshot() -> tuple[set[str], set[str], set[int]]:
    tmp = {n for n in os.listdir("/tmp") if "httptap" in n and not n.startswith("httptap-th-")}
    return set(os.listdir("/dev/shm")), tmp, set(_httptap_pids())


def _httptap_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().startswith("httptap"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


@pytest.fixture
def leaves_nothing():
    """Fails the test if a run left a process, a /dev/shm segment or a temp file."""
    before = _snapshot()
    yield
    deadline = time.monotonic() + 5
    while True:
        after = _snapshot()
        leftovers = [a - b for a, b in zip(after, before)]
        if not any(leftovers) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert leftovers == [set(), set(), set()], f"left behind: {leftovers}"


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


def _stage_pids(httptap_pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{httptap_pid}/task/{httptap_pid}/children") as f:
        for pid in map(int, f.read().split()):
            try:
                with open(f"/proc/{pid}/comm") as c:
                    out[c.read().strip()] = pid
            except OSError:
                pass
    return out


def _wait_for_stages(proc: subprocess.Popen[str], names: set[str]) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = _stage_pids(proc.pid)
        if names <= set(pids):
            return pids
        time.sleep(0.05)
    raise AssertionError(f"stages never appeared: {_stage_pids(proc.pid)}")


@pytest.mark.parametrize("stage", ["tun", "tcp", "proxy", "sink"])
def test_a_dead_stage_is_named_and_stops_the_command(stage, leaves_nothing, tmp_path):
    # A tun stage exists only with --dump-pcap.
    options = ["--dump-pcap", str(tmp_path / "x.pcap")] if stage == "tun" else []
    proc = subprocess.Popen(httptap_argv(*options, "--", "sh", "-c", "echo started; sleep 60"),
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


def _init_rss_kb(httptap_pid: int) -> int:
    launcher = _stage_pids(httptap_pid)["httptap-ns"]
    init = _stage_pids(launcher)["httptap-init"]
    with open(f"/proc/{init}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


@pytest.mark.parametrize("sig, code, after_shrink", [(signal.SIGINT, 3, False),
                                                    (signal.SIGTERM, 5, True)])
def test_a_signal_to_httptap_reaches_the_command(sig, code, after_shrink, leaves_nothing):
    """Also once the launcher and the namespace's PID 1 have become small interpreters
    (after SHRINK_AFTER, httptap.run.signalrelay): the signal still reaches the command and
    its status comes back."""
    from httptap.run.namespace import SHRINK_AFTER

    script = f'trap "echo got-it; exit {code}" {sig.name[3:]}; echo ready; sleep 60 & wait'
    proc = subprocess.Popen(httptap_argv("--", "sh", "-c", script),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        if after_shrink:
            time.sleep(SHRINK_AFTER + 0.5)
            assert _init_rss_kb(proc.pid) < 16_000  # a fresh interpreter, not a fork's copy
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert "got-it" in out
    assert proc.returncode == code, err


def test_stats_record_in_ndjson(leaves_nothing, tmp_path):
    import json

    path = tmp_path / "out.ndjson"
    r = run_httptap("-q", "--stats", "--sink", f"ndjson:{path}", "--", "true")
    assert r.returncode == 0, r.stderr
    assert "httptap stats after" in r.stderr  # no terminal sink (-q): the table goes to stderr
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["type"] == "stats"
    assert {s["name"] for s in record["stages"]} == {"tcp", "proxy", "sink"}
    assert all(s["cpu_s"] >= 0 for s in record["stages"])


def test_stats_interval_records_in_ndjson(leaves_nothing, tmp_path):
    import json

    path = tmp_path / "out.ndjson"
    r = run_httptap("--stats-interval", "0.3", "--sink", f"ndjson:{path}", "--", "sleep", "1.2")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in path.read_text().splitlines()]
    stats = [rec for rec in records if rec["type"] == "stats"]
    assert len(stats) >= 3  # a few while running, and the final one
    assert [s["elapsed_s"] for s in stats] == sorted(s["elapsed_s"] for s in stats)
    assert all({st["name"] for st in s["stages"]} == {"tcp", "proxy", "sink"} for s in stats)
