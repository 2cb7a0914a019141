"""End to end: what httptap refuses or hides before and around the command.

- output paths are checked before the command starts (one line, exit 125, command not run);
- the files that hold secrets are created 0600 whatever the umask;
- ``--ca DIR`` is hidden from the command;
- packets the command writes straight onto the TUN device towards the host's loopback
  are refused (a reset for TCP, nothing for UDP); the documented alias still works.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest
from runner import UNPRIVILEGED_UID, httptap_argv, run_httptap, unprivileged_skip_reason

pytestmark = pytest.mark.root


def _one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("httptap: "), stderr
    return stderr


# --- up-front checks -------------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["--dump-har", "/nonexistent/dir/x.har"], ["/nonexistent/dir/x.har", "No such file"]),
    (["--dump-har", "/proc/version"], ["/proc/version"]),
    (["--sink", "har:/proc/version"], ["/proc/version"]),
    (["--sink", "ndjson:/proc/version"], ["/proc/version", "Input/output error"]),
    (["--sink", "ndjson:/nonexistent/dir/x.ndjson"], ["/nonexistent/dir/x.ndjson", "No such file"]),
    (["--keylog", "/nonexistent/dir/keys"], ["/nonexistent/dir/keys", "No such file"]),
    (["--dump-pcap", "/proc"], ["/proc", "Is a directory"]),
    (["--user", "99999999999"], ["99999999999"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v[0].startswith("-") else None)
def test_bad_options_stop_before_the_command_runs(tmp_path, args, expected):
    marker = tmp_path / "ran"
    r = run_httptap(*args, "--", "touch", str(marker))
    assert r.returncode == 125
    line = _one_line(r.stderr)
    for text in expected:
        assert text in line
    assert not marker.exists()


def test_an_empty_command_is_one_line():
    r = run_httptap("-v", "--", "")
    assert r.returncode == 125
    assert "the command name is empty" in _one_line(r.stderr)


def test_an_unwritable_keylog_no_longer_breaks_tls_it_stops_the_run(tmp_path):
    r = run_httptap("--keylog", str(tmp_path), "--", "touch", str(tmp_path / "ran"))
    assert r.returncode == 125 and "Is a directory" in _one_line(r.stderr)
    assert not (tmp_path / "ran").exists()


# --- files holding secrets are 0600 ----------------------------------------------------------

def test_secret_files_are_created_0600_whatever_the_umask(test_host, tmp_path):
    har, ndjson, keys, pcap = (tmp_path / n for n in ("x.har", "x.ndjson", "keys", "x.pcap"))
    url = test_host.https_url("/files/small")
    r = subprocess.run(
        httptap_argv("--dump-har", str(har), "--sink", f"ndjson:{ndjson}", "--keylog", str(keys),
                     "--dump-pcap", str(pcap), "--", "curl", "-sS", "-o", "/dev/null", url),
        capture_output=True, text=True, timeout=120, umask=0,
        env={**os.environ, "SSL_CERT_FILE": str(test_host.ca_file)})
    assert r.returncode == 0, r.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (har, ndjson, keys, pcap)}
    assert modes == dict.fromkeys(("x.har", "x.ndjson", "keys", "x.pcap"), 0o600)
    assert keys.stat().st_size > 0 and pcap.stat().st_size > 0  # written, not just created
    assert json.loads(har.read_text())["log"]["entries"]


# --- --ca DIR is hidden ----------------------------------------------------------------------

def test_the_ca_directory_is_hidden_from_the_command(tmp_path):
    ca_dir = tmp_path / "ca"
    r = run_httptap("--ca", str(ca_dir), "--", "sh", "-c",
                    f"head -1 {ca_dir}/ca-key.pem; echo head=$?; ls -A {ca_dir}; echo ls=$?")
    assert r.returncode == 0, r.stderr
    assert "BEGIN" not in r.stdout
    assert r.stdout.split() == ["head=1", "ls=0"]  # the key unreadable, the directory empty
    assert (ca_dir / "ca-key.pem").read_bytes().startswith(b"-----BEGIN")  # still there


def test_the_ca_directory_is_hidden_from_an_unprivileged_run_too():
    """As ``nobody``, in a user namespace of its own. /dev/net/tun is made 0666 in a mount
    namespace of this test only (the host's device is left as it is)."""
    import shlex

    reason = unprivileged_skip_reason()
    if reason and "/dev/net/tun" not in reason:
        pytest.skip(reason)
    base = tempfile.mkdtemp(prefix="httptap-test-ca-")  # pytest's tmp_path is root's alone
    try:
        os.chown(base, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        ca_dir = os.path.join(base, "ca")
        inner = " ".join(shlex.quote(a) for a in httptap_argv(
            "--ca", ca_dir, "--", "sh", "-c", f"id -u; cat {ca_dir}/ca-key.pem; echo cat=$?"))
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c",
             "mount -t tmpfs none /dev/net && mknod -m 0666 /dev/net/tun c 10 200 && exec "
             f"setpriv --reuid={UNPRIVILEGED_UID} --regid={UNPRIVILEGED_UID} --clear-groups {inner}"],
            capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [str(UNPRIVILEGED_UID), "cat=1"]
        assert os.stat(os.path.join(ca_dir, "ca-key.pem")).st_uid == UNPRIVILEGED_UID
    finally:
        shutil.rmtree(base)


def test_a_command_started_inside_the_ca_directory_cannot_read_it(tmp_path):
    ca_dir = tmp_path / "ca"
    run_httptap("--ca", str(ca_dir), "--", "true")  # create the CA
    r = subprocess.run(httptap_argv("--ca", str(ca_dir), "--", "sh", "-c",
                                    "cat ca-key.pem; echo cat=$?; pwd"),
                       cwd=ca_dir, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "BEGIN" not in r.stdout
    assert r.stdout.split() == ["cat=1", str(ca_dir)]


# --- the host's loopback is refused ----------------------------------------------------------

# Runs inside the namespace as root (so it may open a packet socket on the TUN device): writes
# a SYN and a datagram towards the host's loopback straight onto the device, and prints the
# flags of the first TCP reply (R = reset, S = SYN-ACK), or "none" when none came.
_INJECT = textwrap.dedent("""
    import socket, sys, time
    from httptap.net.tcp.segment import Segment, SYN, RST, ACK
    from httptap.net.wire import build_tcp, build_udp, parse_ip, parse_tcp

    family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    src = socket.inet_pton(family, "10.1.1.100" if family == socket.AF_INET else "fd01:1:1::100")
    dst = socket.inet_pton(family, sys.argv[1])
    port, udp_port = int(sys.argv[2]), int(sys.argv[3])
    ethertype = 0x0800 if family == socket.AF_INET else 0x86DD
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ethertype))
    sock.bind(("httptap", ethertype))
    sock.sendto(build_udp(src, dst, 40001, udp_port, b"to the host's loopback", vnet=False),
                ("httptap", ethertype))
    sock.sendto(build_tcp(src, dst, 40000, port, Segment(1000, 0, SYN, 65535, b""), vnet=False),
                ("httptap", ethertype))
    deadline = time.monotonic() + 20
    reply = "none"
    while reply == "none" and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            pkt, addr = sock.recvfrom(65536)
        except socket.timeout:
            break
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        ip = parse_ip(pkt)
        if ip.proto == 6 and ip.src == dst:
            sport, _, seg = parse_tcp(ip.payload)
            if sport == port:
                reply = ("R" if seg.flags & RST else "") + ("S" if seg.flags & SYN else "")
    print("reply", reply)
""")


def _loopback_listeners(family: int, address: str) -> tuple[socket.socket, socket.socket]:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((address, 0))
    listener.listen(8)
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((address, 0))
    return listener, udp


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_packets_written_to_the_device_cannot_reach_the_host_loopback(tmp_path, address):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        listener, udp = _loopback_listeners(family, address)
    except OSError as exc:
        pytest.skip(f"no {address} on this host: {exc}")
    with listener, udp:
        script = tmp_path / "inject.py"
        script.write_text(_INJECT)
        ndjson = tmp_path / "out.ndjson"
        r = run_httptap("-v", "--sink", f"ndjson:{ndjson}", "--", sys.executable, str(script),
                        address, str(listener.getsockname()[1]), str(udp.getsockname()[1]))
        if "IPv6 not configured" in r.stderr and family == socket.AF_INET6:
            pytest.skip("IPv6 is not configured in the namespace here")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["reply", "R"]  # refused: a reset, not a SYN-ACK
        assert f"refused TCP to {address} port" in r.stderr or \
            f"refused UDP to {address} port" in r.stderr
        listener.setblocking(False)
        udp.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # httptap never connected
        with pytest.raises(BlockingIOError):
            udp.recv(100)      # nor relayed the datagram
    records = [json.loads(line) for line in ndjson.read_text().splitlines()]
    assert not [rec for rec in records if rec.get("type") in ("tcp", "http")
                and address in rec.get("server", "")], records
    assert not [rec for rec in records if rec.get("transport") == "udp"], records
