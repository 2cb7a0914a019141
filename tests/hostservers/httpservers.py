"""The test hosts' HTTP listeners: plain HTTP (HTTP/1.1, or h2c when the client starts with
the HTTP/2 preface) and HTTPS (TLS; ALPN ``h2`` goes to ``http2.H2Session``, anything
else to ``http1.HTTPHandler``), and the server TLS context.
"""

from __future__ import annotations

import http.server
import socket
import ssl

from hostservers.content import HANDSHAKE_TIMEOUT, IDLE_TIMEOUT
from hostservers.gitpip import Site
from hostservers.http1 import HTTPHandler
from hostservers.http2 import H2_PREFACE, HAS_H2, H2Session
from hostservers.plumbing import _DualStackMixin, _QuietErrors

class HostHTTPServer(_QuietErrors, _DualStackMixin, http.server.ThreadingHTTPServer):
    def __init__(self, family: socket.AddressFamily, address: tuple[str, int],
                 site: Site | str):
        self.address_family = family
        self.site = site if isinstance(site, Site) else Site(site)
        self.files_dir = self.site.files_dir
        super().__init__(address, HTTPHandler)

    def finish_request(self, request, client_address) -> None:  # noqa: ANN001
        # HTTP/2 with prior knowledge (h2c, `curl --http2-prior-knowledge`): the client
        # starts with the connection preface instead of a request line.
        if HAS_H2 and not isinstance(request, ssl.SSLSocket):
            request.settimeout(IDLE_TIMEOUT)
            try:
                first = request.recv(len(H2_PREFACE), socket.MSG_PEEK | socket.MSG_WAITALL)
            except OSError:
                first = b""
            if first == H2_PREFACE:
                H2Session(request, self.site).run()
                return
        super().finish_request(request, client_address)


class HostHTTPSServer(HostHTTPServer):
    """The same app over TLS; ALPN ``h2`` hands the connection to ``H2Session``."""

    def __init__(self, family: socket.AddressFamily, address: tuple[str, int],
                 site: Site, context: ssl.SSLContext):
        self.context = context
        super().__init__(family, address, site)

    def finish_request(self, request, client_address) -> None:  # noqa: ANN001
        request.settimeout(HANDSHAKE_TIMEOUT)
        tls = self.context.wrap_socket(request, server_side=True)   # takes over the fd
        try:
            tls.settimeout(IDLE_TIMEOUT)
            if tls.selected_alpn_protocol() == "h2":
                H2Session(tls, self.site).run()
            else:
                self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def tls_context(cert: str, key: str, h2: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"] if h2 else ["http/1.1"])
    return ctx
