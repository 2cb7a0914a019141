"""Socket plumbing every test-host server shares: quiet error handling for clients that go
away, the bind family (``::`` dual-stack or ``0.0.0.0``), and the UDP request/answer loop
that the UDP echo and DNS use.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import sys

def _is_disconnect(exc: BaseException | None) -> bool:
    """A client that went away, timed out, or failed a TLS handshake (wrong-name tests)."""
    return isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, BrokenPipeError,
                            ssl.SSLError))


class _QuietErrors:
    """Mixin: a client that goes away is normal; anything else goes to stderr once."""

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        exc = sys.exc_info()[1]
        if _is_disconnect(exc):
            return
        print(f"servers.py: error with {client_address}: {exc!r}", file=sys.stderr, flush=True)


def _bind_family(prefer_ipv6: bool) -> tuple[socket.AddressFamily, str]:
    if prefer_ipv6 and socket.has_ipv6:
        try:
            probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            pass
        else:
            probe.close()
            return socket.AF_INET6, "::"
    return socket.AF_INET, "0.0.0.0"


class _DualStackMixin:
    """Binds ``::`` with IPV6_V6ONLY off; never does name lookups (no getfqdn)."""

    address_family = socket.AF_INET
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        # http.server.HTTPServer.server_bind would call socket.getfqdn(): a DNS
        # lookup, which must not happen from a test host.
        self.server_name = "testhost"
        self.server_port = self.server_address[1]


# --------------------------------------------------------------------------- UDP answer loop

def _udp_socket(family: socket.AddressFamily, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


def serve_udp(sock: socket.socket, answer) -> None:  # noqa: ANN001
    """Answer each datagram with ``answer(data)`` (None: no reply), forever."""
    while True:
        try:
            data, peer = sock.recvfrom(65535)
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, peer)
        except OSError:
            continue
