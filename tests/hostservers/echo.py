"""The test hosts' TCP echo: everything echoed; on the client's EOF, the rest is written,
then the sending side shut down. (The UDP echo is ``plumbing.serve_udp`` answering
each datagram with itself.)
"""

from __future__ import annotations

import socket
import socketserver

from hostservers.content import IDLE_TIMEOUT
from hostservers.plumbing import _DualStackMixin, _QuietErrors

class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(IDLE_TIMEOUT)
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        while True:
            n = sock.recv_into(buf)
            if n == 0:                    # client half-closed: all it sent is echoed
                break
            sock.sendall(view[:n])
        sock.shutdown(socket.SHUT_WR)     # (socketserver closes the socket afterwards)


class EchoServer(_QuietErrors, _DualStackMixin, socketserver.ThreadingTCPServer):
    def __init__(self, family: socket.AddressFamily, address: tuple[str, int]):
        self.address_family = family
        super().__init__(address, EchoHandler)
