"""End to end: real programs under httptap talk TCP to test hosts through the userspace stack."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from runner import run_httptap

pytestmark = pytest.mark.root


def _under_httptap(script: str, *args: str, timeout: float = 120) -> str:
    r = run_httptap("--stderr", "--", sys.executable, "-c", script, *args, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def test_download_256m_intact(test_host):
    size, digest = test_host.files["256m"]
    r = run_httptap("--stderr", "--", "sh", "-c", f"curl -sS {test_host.url('/files/256m')} | sha256sum",
                    timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == digest


def test_a_stalled_download_does_not_hold_up_another(test_host):
    """The tcp stage keeps large payloads in the proxy's ring until the command has them
    (tcp.HOLD_LEAST), and ring space is freed in order: a command that stops reading one
    download must not stall another. Here the stalled reader waits for the other download
    to finish first; both arrive intact."""
    _, slow_digest = test_host.files["16m"]
    _, fast_digest = test_host.files["256m"]
    script = (
        'd=$(mktemp -d); '
        f'(curl -sS {test_host.url("/files/16m")} | '
        '(for i in $(seq 2400); do [ -e "$d/go" ] && break; sleep 0.05; done; sha256sum) '
        '> "$d/slow") & '
        f'curl -sS {test_host.url("/files/256m")} | sha256sum; touch "$d/go"; wait; '
        'cat "$d/slow"; rm -r "$d"')
    r = run_httptap("--stderr", "--", "sh", "-c", script, timeout=180)
    assert r.returncode == 0, r.stderr
    fast, slow = (line.split()[0] for line in r.stdout.splitlines()[-2:])
    assert (fast, slow) == (fast_digest, slow_digest)


def test_download_over_ipv6_intact(test_host):
    if test_host.ipv6 is None:
        pytest.skip("IPv6 is disabled on this host")
    size, digest = test_host.files["16m"]
    r = run_httptap("--stderr", "--", "sh", "-c",
                    f"curl -sS -g {test_host.url('/files/16m', family=6)} | sha256sum")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == digest


UPLOAD = """
import hashlib, http.client, json, sys
size = int(sys.argv[2])
block = hashlib.sha256(b"upload").digest() * 2048          # 64 KiB, deterministic
body = (block * (size // len(block) + 1))[:size]
conn = http.client.HTTPConnection(sys.argv[1], 80, timeout=60)
conn.request("POST", "/upload", body=body, headers={"Content-Type": "application/octet-stream"})
reply = json.loads(conn.getresponse().read())
print(json.dumps({"sent": hashlib.sha256(body).hexdigest(), **reply}))
"""


def test_upload_100m_intact(test_host):
    out = json.loads(_under_httptap(UPLOAD, test_host.ipv4, str(100 << 20)))
    assert out["size"] == 100 << 20
    assert out["sha256"] == out["sent"]


HALF_CLOSE = """
import socket, sys
data = bytes(range(256)) * 4096                            # 1 MiB
s = socket.create_connection((sys.argv[1], 7), timeout=30)
s.sendall(data)
s.shutdown(socket.SHUT_WR)                                 # half-close: we still read
got = bytearray()
while chunk := s.recv(1 << 16):
    got += chunk
print(len(got), got == data)
"""


def test_echo_with_half_close(test_host):
    assert _under_httptap(HALF_CLOSE, test_host.ipv4).split() == [str(1 << 20), "True"]


CONCURRENT = """
import socket, sys, threading
results = []
def one(i):
    data = (b"%04d" % i) * 4096                            # 16 KiB each
    with socket.create_connection((sys.argv[1], 7), timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
    results.append(got == data)
threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
for t in threads: t.start()
for t in threads: t.join()
print(len(results), all(results))
"""


def test_100_concurrent_connections(test_host):
    assert _under_httptap(CONCURRENT, test_host.ipv4).split() == ["100", "True"]


# Refused (a RST), not timed out: a timeout raises TimeoutError instead (no time measured).
REFUSED = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=10)
    print("connected")
except ConnectionRefusedError:
    print("refused")
"""


def test_refused_port_is_refused_quickly(test_host):
    assert _under_httptap(REFUSED, test_host.ipv4).split() == ["refused"]


def test_ping_is_answered_locally(test_host):
    if shutil.which("ping") is None:
        pytest.skip("ping is not installed (Debian package iputils-ping)")
    r = run_httptap("--", "ping", "-c", "1", "-W", "2", test_host.ipv4)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 received" in r.stdout


@pytest.mark.parametrize("capture", [False, True])
def test_two_workers_share_the_connections(test_host, capture, tmp_path):
    # With --dump-pcap a tun stage reads the device and steers packets to the shards (as
    # on kernels before 4.16 without it); otherwise each shard reads its own queue.
    options = ["--dump-pcap", str(tmp_path / "c.pcap")] if capture else []
    r = run_httptap("--workers", "2", *options, "--stats", "--stderr", "--", sys.executable,
                    "-c", CONCURRENT, test_host.ipv4, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["100", "True"]
    rows = {line.split()[0]: line.split() for line in r.stderr.splitlines()[1:] if line.strip()}
    # Both tcp shards saw packets: flows were steered across them (by the kernel, to
    # their own queues of the device).
    assert {"tcp0", "tcp1", "proxy0", "proxy1"} <= set(rows)
    from httptap.run.config import kernel_steers_flows
    assert ("tun" in rows) == (capture or not kernel_steers_flows())
    assert rows["tcp0"][1] != "0" and rows["tcp1"][1] != "0"


HOSTILE = """
import os, random, socket, struct, sys
rnd = random.Random(7)
target = socket.inet_aton(sys.argv[1])
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # we write IP headers
sent = 0
for i in range(3000):
    proto = rnd.choice([6, 17, 1, 0, 255])
    body = os.urandom(rnd.randrange(0, 200))
    if proto == 6 and len(body) >= 20 and rnd.random() < 0.5:
        # a TCP header with a plausible shape but nonsense flags, offsets and options
        body = struct.pack("!HHIIBBHHH", rnd.randrange(65536), rnd.choice([80, 7, 443]),
                           rnd.getrandbits(32), rnd.getrandbits(32), rnd.randrange(256),
                           rnd.randrange(256), rnd.randrange(65536), 0, 0) + body[20:]
    if proto == 17 and len(body) >= 4:
        body = body[:2] + struct.pack("!H", 7) + body[4:]  # never port 53: no real DNS lookups
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), i & 0xFFFF,
                         rnd.choice([0, 0x4000, 0x2000, 0x1FFF]), 64, proto, 0,
                         socket.inet_aton("10.1.1.100"), target)
    try:
        raw.sendto(header + body, (sys.argv[1], 0))
        sent += 1
    except OSError:
        pass
# The stack is still a working peer afterwards:
s = socket.create_connection((sys.argv[1], 7), timeout=10)
s.sendall(b"still alive"); s.shutdown(socket.SHUT_WR)
print(sent > 0, s.recv(100).decode())
"""


def test_malformed_packets_from_a_hostile_program(test_host):
    r = run_httptap("--stderr", "--", sys.executable, "-c", HOSTILE, test_host.ipv4, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True still alive"
    assert "stage" not in r.stderr  # no stage died


RESET_CLIENT = """
import socket, sys
s = socket.create_connection(("host.httptap.local", int(sys.argv[1])), timeout=10)
s.sendall(b"hello")
try:
    while s.recv(65536):
        pass
    print("eof")
except ConnectionResetError:
    print("reset")
"""


def test_an_upstream_reset_reaches_the_command():
    import socket
    import struct
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve_once() -> None:
        conn, _ = server.accept()
        conn.recv(5)
        conn.sendall(b"partial answer")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    try:
        out = _under_httptap(RESET_CLIENT, str(port), timeout=60)
    finally:
        server.close()
    assert out.strip() == "reset"
