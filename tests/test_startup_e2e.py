"""End to end: the command starts as soon as its namespace is ready, before httptap's stages
may be reading the device; what it sends first waits in the device's queue and is seen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from runner import read_stdout_until, stage_pids, start_httptap

pytestmark = pytest.mark.root


def wait_for(what: str, get, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s"
        time.sleep(0.02)


def snmp(pid: int, proto: str, counter: str) -> int:
    """A counter of /proc/net/snmp in the network namespace of ``pid``."""
    with open(f"/proc/{pid}/net/snmp") as f:
        names, values = [line.split() for line in f if line.startswith(proto + ":")][:2]
    return int(values[names.index(counter)])


UDP_ONCE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(30)
s.sendto(b"first", (sys.argv[1], int(sys.argv[2])))   # once: a lost datagram stays lost
print("echoed" if s.recvfrom(100)[0] == b"first" else "wrong", flush=True)
"""


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_what_the_command_sends_while_no_stage_reads_waits_in_the_device_and_is_seen(
        test_host, tmp_path, kind):
    """The tcp shard is stopped when the command sends its first packet (a SYN, or a UDP
    datagram sent once and never again): the packet waits in the device's queue, and
    the exchange completes once the shard runs again."""
    url = test_host.url("/files/small")
    if kind == "tcp":
        command, counter = f"curl -sS --max-time 30 -o /dev/null {url} && echo fetched", ("Tcp", "ActiveOpens")
    else:
        script = tmp_path / "udp_once.py"
        script.write_text(UDP_ONCE)
        command = f"{sys.executable} {script} {test_host.ipv4} {test_host.udp_echo_port}"
        counter = ("Udp", "OutDatagrams")
    go = tmp_path / "go"
    os.mkfifo(go)
    proc = start_httptap("--stderr", "--", "sh", "-c", f"read x < {go}; {command}",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stopped = None
    try:
        pids = wait_for("the tcp shard and the namespace's launcher",
                        lambda: (p := stage_pids(proc.pid)).get("httptap-tcp")
                        and p.get("httptap-ns") and p)
        stopped = pids["httptap-tcp"]
        os.kill(stopped, signal.SIGSTOP)  # nothing reads the device now
        before = snmp(pids["httptap-ns"], *counter)
        with open(go, "w") as f:
            f.write("go\n")
        # The command's first packet went to the device, where no one reads it ...
        wait_for("the first packet", lambda: snmp(pids["httptap-ns"], *counter) > before)
        os.kill(stopped, signal.SIGCONT)  # ... until the shard reads it, late
        stopped = None
        done = b"fetched" if kind == "tcp" else b"echoed"
        out = read_stdout_until(proc, lambda o: done in o, "the exchange", 60)
        _, err = proc.communicate(timeout=60)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert done in out
    if kind == "tcp":
        lines = err.decode().splitlines()
        assert f"---> GET {url}" in lines and f"<--- 200 {url} (1024 bytes)" in lines


def test_a_command_that_fetches_at_once_is_seen(test_host):
    """No waiting at all: the first thing the command does is the request."""
    from runner import run_httptap

    url = test_host.url("/files/small")
    r = run_httptap("--stderr", "--", "curl", "-sS", "--max-time", "30", "-o", "/dev/null", url)
    assert r.returncode == 0, r.stderr
    assert f"---> GET {url}" in r.stderr.splitlines()
    assert f"<--- 200 {url} (1024 bytes)" in r.stderr.splitlines()


def test_a_run_without_traffic_does_not_wait_for_a_proxy_that_is_not_ready(tmp_path):
    """The proxy stands still (as if still importing its modules) when the command exits
    having sent nothing: the drain ends it and finishes at once, with a clean exit."""
    go = tmp_path / "go"
    os.mkfifo(go)
    proc = start_httptap("-v", "--", "sh", "-c", f"read x < {go}; exit 3",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stopped = None
    try:
        pids = wait_for("the proxy", lambda: (p := stage_pids(proc.pid)).get("httptap-proxy")
                        and p.get("httptap-ns") and p)
        stopped = pids["httptap-proxy"]
        os.kill(stopped, signal.SIGSTOP)
        with open(go, "w") as f:
            f.write("go\n")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.returncode is None:
            if stopped is not None:
                os.kill(stopped, signal.SIGCONT)
            proc.kill()
            proc.communicate()
    text = err.decode()
    assert proc.returncode == 3, text
    assert "proxy ended: it was given nothing" in text
    assert "incomplete" not in text and "no progress" not in text
