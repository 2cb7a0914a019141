"""End to end: DNS, UDP and the host's loopback from inside httptap.

httptap runs in a mount namespace this test makes, with a private /etc/hosts and an
/etc/resolv.conf naming the test host's DNS server: so "the host's resolver" is fully
under the test's control and no query leaves the machine.
"""

from __future__ import annotations

import http.server
import os
import shlex
import subprocess
import sys
import threading

import pytest
from runner import httptap_argv
from servers import DNS_A_NAME, DNS_TXT, DNS_TXT_NAME

pytestmark = pytest.mark.root

PRIVATE_NAME = "private.httptap.test"


@pytest.fixture
def private_resolver(test_host, tmp_path):
    """Run httptap with a private /etc/hosts and resolv.conf (in its own mount namespace)."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{test_host.ipv4} {PRIVATE_NAME}\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {test_host.ipv4}\n")
    os.chmod(tmp_path, 0o755)

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        inner = " ".join(shlex.quote(a) for a in httptap_argv(*args))
        script = (f"mount --bind {hosts} /etc/hosts && mount --bind {resolv} /etc/resolv.conf"
                  f" && exec {inner}")
        return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                              text=True, timeout=timeout)
    return run


def test_getent_sees_the_host_side_answer(private_resolver, test_host):
    # In the host's /etc/hosts (copied into the namespace) ...
    r = private_resolver("--", "getent", "hosts", PRIVATE_NAME)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [test_host.ipv4, PRIVATE_NAME]
    # ... and only in DNS, through httptap's resolver and the host's nameserver.
    r = private_resolver("--", "getent", "ahostsv4", DNS_A_NAME)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == test_host.ipv4


def test_unknown_name_is_nxdomain_not_a_timeout(private_resolver):
    # EAI_NONAME is an answer (NXDOMAIN); a resolver that timed out gives EAI_AGAIN.
    script = ("import socket\n"
              "try:\n    socket.getaddrinfo('nosuch.httptap.test', 80)\n"
              "except socket.gaierror as e:\n    print(e.errno == socket.EAI_NONAME)\n")
    r = private_resolver("--", sys.executable, "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True"]


def _query(name: str, qtype: int) -> bytes:
    import struct
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


RAW_DNS = """
import socket, struct, sys
query = bytes.fromhex(sys.argv[1]); tcp = sys.argv[2] == "tcp"
if tcp:
    s = socket.create_connection(("10.1.1.1", 53), timeout=5)
    s.sendall(struct.pack("!H", len(query)) + query)
    n = struct.unpack("!H", s.recv(2))[0]
    reply = b""
    while len(reply) < n:
        reply += s.recv(n - len(reply))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(query, ("10.1.1.1", 53))
    reply = s.recv(4096)
print(reply.hex())
"""


def _answers(reply: bytes) -> tuple[int, list[tuple[int, int, bytes]]]:
    """(rcode, [(type, ttl, rdata)]) of a reply to a single question, parsed by hand."""
    import struct
    rcode = reply[3] & 0xF
    ancount = struct.unpack_from("!H", reply, 6)[0]
    pos = 12
    while reply[pos]:
        pos += reply[pos] + 1
    pos += 5
    out = []
    for _ in range(ancount):
        pos += 2 if reply[pos] & 0xC0 == 0xC0 else 0  # answers name the question by pointer
        rtype, _, ttl, rdlen = struct.unpack_from("!HHIH", reply, pos)
        out.append((rtype, ttl, reply[pos + 10:pos + 10 + rdlen]))
        pos += 10 + rdlen
    return rcode, out


def test_raw_query_over_tcp(private_resolver, test_host):
    r = private_resolver("--", sys.executable, "-c", RAW_DNS, _query(DNS_A_NAME, 1).hex(), "tcp")
    assert r.returncode == 0, r.stderr
    rcode, answers = _answers(bytes.fromhex(r.stdout.strip()))
    assert rcode == 0
    assert [(t, bytes(d)) for t, _, d in answers] == [(1, bytes(map(int, test_host.ipv4.split("."))))]


def test_txt_query_is_forwarded_with_its_ttl(private_resolver):
    r = private_resolver("--", sys.executable, "-c", RAW_DNS, _query(DNS_TXT_NAME, 16).hex(), "udp")
    assert r.returncode == 0, r.stderr
    rcode, answers = _answers(bytes.fromhex(r.stdout.strip()))
    assert rcode == 0
    (rtype, ttl, rdata), = answers
    assert rtype == 16 and ttl == 300
    assert rdata[1:] == DNS_TXT


def test_print_dns_lines(private_resolver, test_host):
    r = private_resolver("--print-dns", "--", sys.executable, "-c",
                         f"import socket; socket.getaddrinfo('{DNS_A_NAME}', 80, socket.AF_INET)")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"---> DNS {DNS_A_NAME}. (A)" in lines
    assert f"<--- {test_host.ipv4}" in lines


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
for i in range(3):
    s.sendto(b"ping %d" % i, (sys.argv[1], 7))
    print(s.recv(100).decode())
"""


def test_udp_echo_to_a_test_host(test_host):
    r = subprocess.run(httptap_argv("--", sys.executable, "-c", UDP_ECHO, test_host.ipv4),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["ping 0", "ping 1", "ping 2"]


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"from the host's loopback\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_host_loopback_is_host_httptap_local():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        r = subprocess.run(httptap_argv("--http", str(port), "--", "curl", "-sS",
                                        f"http://host.httptap.local:{port}/x"),
                           capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()  # the command's output and httptap's interleave freely
    request = f"---> GET http://host.httptap.local:{port}/x"
    response = f"<--- 200 http://host.httptap.local:{port}/x (25 bytes)"
    assert sorted(lines) == sorted([request, "from the host's loopback", response])
    assert lines.index(request) < lines.index(response)
