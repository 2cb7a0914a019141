"""End to end: gRPC with grpcio both sides, over plaintext HTTP/2 (h2c) on a port nobody
named, and over TLS.

The server runs in this process on the host's loopback; the client runs under httptap and
reaches it as host.httptap.local. A grpcio server sends its SETTINGS before the client's
preface, which once made httptap relay the connection raw; the response line must also
carry each call's gRPC status, since a failed call still answers HTTP 200."""

from __future__ import annotations

import sys
from concurrent import futures

import pytest
from runner import run_httptap

grpc = pytest.importorskip("grpc")

pytestmark = pytest.mark.root

CLIENT = """
import grpc, sys
channel = grpc.insecure_channel(f"host.httptap.local:{sys.argv[1]}")
call = channel.unary_unary("/pkg.Svc/Get")
print(call(b"x", timeout=30).decode())
try:
    call(b"missing", timeout=30)
except grpc.RpcError as exc:
    print(exc.code().name)
print(len(list(channel.unary_stream("/pkg.Svc/Count")(b"3", timeout=30))))
"""


def _count(request: bytes, context: object):  # noqa: ANN201 - a generator of replies
    for i in range(int(request)):
        yield b"n%d" % i


def _get(request: bytes, context: object) -> bytes:
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")  # type: ignore[attr-defined]
    return b"got " + request


@pytest.fixture
def grpc_port():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "pkg.Svc", {"Get": grpc.unary_unary_rpc_method_handler(_get),
                    "Count": grpc.unary_stream_rpc_method_handler(_count)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None).wait(timeout=10)


def test_grpc_over_h2c_on_any_port_with_its_status(grpc_port):
    r = run_httptap("--stderr", "--", sys.executable, "-c", CLIENT, str(grpc_port), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["got", "x", "NOT_FOUND", "3"]
    url = f"http://host.httptap.local:{grpc_port}/pkg.Svc/Get"
    count = f"http://host.httptap.local:{grpc_port}/pkg.Svc/Count"
    lines = [line for line in r.stderr.splitlines() if line.startswith(("--->", "<---"))]
    assert lines == [
        f"---> POST {url}", f"<--- 200 {url} (10 bytes) grpc-status 0 OK",
        f"---> POST {url}", f"<--- 200 {url} (0 bytes) grpc-status 5 NOT_FOUND",
        f"---> POST {count}", f"<--- 200 {count} (21 bytes) grpc-status 0 OK",  # 3 x (5 + 2)
    ]


TLS_CLIENT = """
import grpc, sys
# No roots given: grpc reads GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, which httptap sets.
channel = grpc.secure_channel(f"host.httptap.local:{sys.argv[1]}", grpc.ssl_channel_credentials())
call = channel.unary_unary("/pkg.Svc/Get")
print(call(b"y", timeout=30).decode())
"""


def test_grpc_over_tls_is_intercepted_and_named(tmp_path):
    from testca import session_ca

    ca = session_ca()
    cert, key = ca.issue(["host.httptap.local"])
    ca_file = ca.write_ca(tmp_path / "ca.pem")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "pkg.Svc", {"Get": grpc.unary_unary_rpc_method_handler(_get)}),))
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    try:
        r = run_httptap("--stderr", "--", sys.executable, "-c", TLS_CLIENT, str(port),
                        timeout=120, env={"SSL_CERT_FILE": ca_file})
    finally:
        server.stop(grace=None).wait(timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["got", "y"]
    url = f"https://host.httptap.local:{port}/pkg.Svc/Get"
    lines = [line for line in r.stderr.splitlines() if line.startswith(("--->", "<---"))]
    assert lines == [f"---> POST {url}", f"<--- 200 {url} (10 bytes) grpc-status 0 OK"]
