"""End to end: --user, --no-exit, --dump-tcp, environment options and clear setup errors."""

from __future__ import annotations

import http.server
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
from runner import UNPRIVILEGED_UID, httptap_argv, run_httptap, unprivileged_skip_reason

pytestmark = pytest.mark.root


def test_user_by_name_and_by_uid():
    r = run_httptap("--user", "nobody", "--", "sh", "-c", "id -u; id -g; echo $HOME")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["65534", "65534", "/nonexistent"]
    r = run_httptap("--user", "65534", "--", "id", "-u")
    assert r.stdout.strip() == "65534"


def test_unknown_user_is_a_clear_error():
    r = run_httptap("--user", "no-such-user-here", "--", "true")
    assert r.returncode == 125
    assert "no such user" in r.stderr


def test_options_from_the_environment():
    r = run_httptap("--", "ip", "-brief", "addr", env={"HTTPTAP_TUN": "envtun"})
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("envtun") for line in r.stdout.splitlines())


def test_version():
    r = run_httptap("--version")
    assert r.returncode == 0 and r.stdout.startswith("httptap ")


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_no_exit_keeps_a_daemon_online_until_interrupted():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    daemon = f"sleep 1; curl -s -o /dev/null http://host.httptap.local:{port}/daemon"
    command = f"setsid setsid sh -c {shlex.quote(daemon)} </dev/null >/dev/null 2>&1 & echo started"
    proc = subprocess.Popen(httptap_argv("--http", str(port), "--no-exit", "--", "sh", "-c", command),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        assert proc.stdout.readline() == f"---> GET http://host.httptap.local:{port}/daemon\n"
        assert proc.stdout.readline() == f"<--- 204 http://host.httptap.local:{port}/daemon (0 bytes)\n"
        time.sleep(0.2)
        assert proc.poll() is None  # the command is gone, httptap stays
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    finally:
        proc.kill()
        server.shutdown()
    assert proc.returncode == 0


def test_dump_tcp_prints_every_packet(test_host):
    r = run_httptap("--dump-tcp", "--", sys.executable, "-c",
                    "import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], 9), timeout=2)\n"
                    "except OSError:\n    pass", test_host.ipv4)
    lines = [l for l in r.stdout.splitlines() if f"{test_host.ipv4}:9" in l]
    assert any(l.startswith("in  IPv4 10.1.1.100:") and "TCP [S]" in l for l in lines), r.stdout
    # Nothing listens on port 9 of the test host: the command gets a reset.
    assert any(l.startswith(f"out IPv4 {test_host.ipv4}:9 >") and "[R" in l for l in lines), r.stdout


def _in_mount_namespace(setup: str, *args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
    inner = " ".join(shlex.quote(a) for a in httptap_argv(*args))
    if uid is not None:
        inner = f"setpriv --reuid={uid} --regid={uid} --clear-groups {inner}"
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{setup} && exec {inner}"],
                          capture_output=True, text=True, timeout=60)


def test_missing_tun_device_is_a_clear_error():
    r = _in_mount_namespace("mount -t tmpfs none /dev/net", "--", "true")
    assert r.returncode == 125
    assert "/dev/net/tun does not exist" in r.stderr
    assert r.stderr.count("\n") == 1  # one line


def test_tun_device_without_permission_is_a_clear_error():
    reason = unprivileged_skip_reason()
    if reason:
        pytest.skip(reason)
    r = _in_mount_namespace("mount -t tmpfs none /dev/net && mknod -m 0600 /dev/net/tun c 10 200",
                            "--", "true", uid=UNPRIVILEGED_UID)
    assert r.returncode == 125
    assert "no permission to open /dev/net/tun" in r.stderr


def test_dump_pcap_writes_both_directions(test_host, tmp_path):
    import dpkt

    path = tmp_path / "run.pcap"
    r = run_httptap("--dump-pcap", str(path), "--", "curl", "-s", "-o", "/dev/null",
                    test_host.url("/files/small"))
    assert r.returncode == 0, r.stderr
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == 101  # LINKTYPE_RAW
        tcp = [dpkt.ip.IP(buf) for _, buf in reader if buf[0] >> 4 == 4]
    server = bytes(map(int, test_host.ipv4.split(".")))
    assert any(p.dst == server and p.data.flags & dpkt.tcp.TH_SYN for p in tcp)
    assert sum(len(p.data.data) for p in tcp if p.src == server) > 1024  # the response


def test_disabled_user_namespaces_name_the_sysctl():
    # user.max_user_namespaces is per user namespace: 0 inside one of ours disables them
    # for httptap running there, without touching the host's setting.
    inner = " ".join(shlex.quote(a) for a in httptap_argv("--", "true"))
    r = subprocess.run(["unshare", "-U", "--map-root-user", "sh", "-c",
                        f"echo 0 > /proc/sys/user/max_user_namespaces && exec {inner}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 125
    assert r.stderr.count("\n") == 1
    assert "user namespace" in r.stderr and "sysctl -w user.max_user_namespaces" in r.stderr


def test_shards_read_the_device_where_the_kernel_keeps_flows_on_one_queue():
    from httptap.run.config import Config, kernel_steers_flows

    assert kernel_steers_flows("4.16.0") and kernel_steers_flows("6.18.44-fc")
    assert not kernel_steers_flows("4.15.18") and not kernel_steers_flows("3.10.0-1160.el7")
    assert not kernel_steers_flows("unknown")
    assert Config(command=("true",), dump_pcap="x.pcap").tun_stage
    assert not Config(command=("true",)).tun_stage  # one queue: nothing to steer
    assert Config(command=("true",), workers=2).tun_stage == (not kernel_steers_flows())


def test_quiet_prints_nothing_and_a_har_alone_keeps_the_terminal(test_host, tmp_path):
    url = test_host.url("/status/204")
    fetch = ["--", "curl", "-sS", "-o", "/dev/null", url]
    r = run_httptap("-q", "--dump-har", str(tmp_path / "q.har"), *fetch)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert url in (tmp_path / "q.har").read_text()
    r = run_httptap("--dump-har", str(tmp_path / "a.har"), "--sink",
                    f"ndjson:{tmp_path / 'b.ndjson'}", *fetch)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"---> GET {url}", f"<--- 204 {url} (0 bytes)"]
