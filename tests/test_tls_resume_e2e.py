"""End to end: a TLS client that makes several connections in a row under httptap (raw
sockets: Nagle on, its request in a write of its own after its Finished), resuming its
session or not: it resumes as it would directly (httptap sends one session ticket per
full handshake, ``tls.tlsterm.ServerTls``), and an upstream whose certificate does not
verify fails every handshake (httptap keeps upstream sessions and settings per server).

httptap trusts the test hosts' CA through ``SSL_CERT_FILE`` in its own environment; the
command trusts httptap's CA through what httptap injects (the default context)."""

from __future__ import annotations

import sys

import pytest
from runner import run_httptap
from testhosts import TestHost

pytestmark = pytest.mark.root

# Three GETs, each on a new connection; with "resume", each offers the session of the one
# before. Prints, per connection: whether it resumed, the status, the body size.
CLIENT = """
import http.client, ssl, sys
host, port, path, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "resume"
ctx = ssl.create_default_context()
session = None
for _ in range(3):
    sock = ctx.wrap_socket(__import__("socket").create_connection((host, port), timeout=30),
                           server_hostname=host, session=session)
    sock.sendall(f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    if resume:
        session = sock.session
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    print(sock.session_reused, head.split()[1].decode(), len(body))
    sock.close()
"""

FAILING = """
import socket, ssl, sys
ctx = ssl.create_default_context()
for _ in range(2):
    try:
        ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30),
                        server_hostname=sys.argv[1]).close()
    except ssl.SSLError as exc:
        print(exc.reason)
    else:
        print("handshake-completed")
"""


def _httptap(test_host: TestHost, *args: str):  # noqa: ANN202
    return run_httptap("--stderr", *args, timeout=120.0,
                       env={"SSL_CERT_FILE": str(test_host.ca_file)})


@pytest.mark.parametrize("resume", ["resume", "full"])
def test_connections_in_a_row_resume_as_they_would_directly(test_host, resume):
    size = test_host.files["small"][0]
    r = _httptap(test_host, "--", sys.executable, "-c", CLIENT, test_host.ipv4, "443",
                 "/files/small", resume)
    assert r.returncode == 0, r.stderr
    reused = ["True", "True"] if resume == "resume" else ["False", "False"]
    assert r.stdout.split() == ["False", "200", str(size)] + [
        word for again in reused for word in (again, "200", str(size))], r.stderr
    assert r.stderr.count("---> GET https://") == 3, r.stderr


def test_an_upstream_that_fails_verification_fails_each_handshake(test_host):
    ip, port = test_host.ipv4, test_host.expired_port
    r = _httptap(test_host, "--", sys.executable, "-c", FAILING, ip, str(port))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["SSLV3_ALERT_BAD_CERTIFICATE"] * 2, r.stdout + r.stderr
    assert r.stderr.count(f"httptap: TLS to {ip} ({ip}:{port}) failed: certificate has "
                          "expired") == 2, r.stderr
