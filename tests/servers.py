"""Servers that run inside a test host's network namespace (see ``testhosts.py``).

Standard library only (plus ``h2`` for HTTP/2 when it is importable), no httptap
imports: this file is started as ``ip netns exec NAME <python> tests/servers.py
--files DIR ...``.

* HTTP/1.1 (keep-alive) on ``--http-port`` (80) and ``--http-alt-port`` (8080):
  - ``GET|HEAD /files/<name>``  a file from ``--files DIR``, with Content-Length (sendfile)
  - ``POST|PUT /upload``        reads the body (Content-Length or chunked), answers
                                ``{"size": N, "sha256": "<hex>"}``; with ``?hash=none``
                                only ``{"size": N}`` (sha256 caps near 800 MB/s here)
  - ``GET|HEAD /bytes/<n>``     ``pattern_bytes("bytes", n)``: n deterministic bytes
  - ``GET|HEAD /status/<code>`` answers with that status
  - ``GET /headers``            the request line and headers as JSON
  - ``GET|HEAD /gzip/<n>``      ``gzip_plain(n)`` (n bytes of text) sent gzip-compressed
                                with ``Content-Encoding: gzip`` and Content-Length
  - ``GET /chunked/<n>``        ``pattern_bytes("chunked", n)`` in ``chunk_sizes(n)`` chunks
                                (``Transfer-Encoding: chunked``)
  - ``GET|HEAD /etag``          ``ETAG_BODY`` with ``ETag: ETAG``; 304 if If-None-Match matches
  - ``GET|HEAD /redirect``      302 to ``?to=/path`` (default ``/status/200``)
  - ``GET /raw/<name>``         a broken answer from ``RAW_ANSWERS``, then close: not HTTP,
                                bad chunked encoding, a head over 64 KiB
  - ``GET /ws``                 WebSocket echo (RFC 6455): text/binary frames echoed
                                unmasked, ping answered with pong, close answered and closed.
                                permessage-deflate (RFC 7692) when the client offers it:
                                then whole messages are echoed, compressed; ``?deflate=off``
                                declines it, ``?deflate=fresh`` answers with both
                                ``*_no_context_takeover``, ``?window=N`` with both
                                ``*_max_window_bits=N`` (9..15)
  - ``GET|POST /git/...``       ``git http-backend`` (CGI) over ``--git-root`` (smart HTTP)
  - ``GET /simple/``, ``/simple/<project>/``, ``/packages/<wheel>``: a PEP 503 index of
                                the wheels in ``--pip-dir`` (links carry ``#sha256=``)
* HTTPS (TLS with ALPN ``h2``, ``http/1.1``) with the same app on ``--https-port`` (443)
  and ``--tls-other-port`` (8444), certificate ``server.crt`` of ``--tls-dir``; the same
  with ``wrong-name.crt`` on ``--wrong-name-port`` (8443) and ``expired.crt`` on
  ``--expired-port`` (9443). HTTP/2 (only when ``h2`` imports; else ALPN offers only
  http/1.1) serves ``/files/``, ``/bytes/``, ``/status/``, ``/headers``, ``/gzip/``,
  ``/etag``, ``POST|PUT /upload``, ``/git/`` (git negotiates h2 by default) and the
  simple index; not ``/chunked/``, ``/redirect``, ``/raw/`` or ``/ws``; ``/reset/<code>``
  answers with RST_STREAM of that error code instead of a response.
* TCP echo on ``--echo-port`` (7): echoes everything; on EOF from the client it
  finishes writing, then shuts down its sending side and closes. UDP echo on
  ``--udp-echo-port`` (7): each datagram sent back.
* DNS on UDP and TCP ``--dns-port`` (53): TXT ``hello.httptap.test.`` ->
  ``"hello from the test host"``, A ``a.httptap.test.`` -> ``--dns-a``, AAAA
  ``a.httptap.test.`` -> ``--dns-aaaa`` (TTL 300); NXDOMAIN for other names.

All listen on ``::`` with IPV6_V6ONLY off (IPv4 and IPv6 on one socket), or on
``0.0.0.0`` where IPv6 is unavailable; a port given as 0 is not served. Prints
``ready`` (followed by `` h2`` when HTTP/2 is served) on stdout once all are
listening; exits on SIGTERM (and, with ``--exit-on-stdin-eof``, when its stdin
closes: the test process that started it has died or let go).

This file is the entry point: it parses the command line and starts the servers of
``hostservers/`` (one module per protocol, see its ``__init__``), and re-exports the
constants and content helpers the tests import from ``servers``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socketserver
import ssl
import sys
import threading

from hostservers.content import (  # noqa: F401  (re-exported: the tests import these)
    DNS_A_NAME, DNS_TXT, DNS_TXT_NAME, ETAG, ETAG_BODY, MiB, chunk_sizes, gzip_plain,
    pattern_bytes, pattern_chunks,
)
from hostservers.dns import DNSTCPServer, DNSZone
from hostservers.echo import EchoServer
from hostservers.gitpip import Site
from hostservers.http2 import HAS_H2
from hostservers.httpservers import HostHTTPServer, HostHTTPSServer, tls_context
from hostservers.plumbing import _bind_family, _udp_socket, serve_udp

# --------------------------------------------------------------------------- main

def _exit_on_stdin_eof() -> None:
    """Exit once stdin reaches end of file: the process that started us holds the pipe's
    other end, so this happens when it closes it or dies, however it dies."""
    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", required=True, help="directory of files served as /files/<name>")
    ap.add_argument("--http-port", type=int, default=80)
    ap.add_argument("--http-alt-port", type=int, default=0)
    ap.add_argument("--echo-port", type=int, default=7)
    ap.add_argument("--udp-echo-port", type=int, default=0)
    ap.add_argument("--tls-dir", help="server.{crt,key}, wrong-name.{crt,key}, expired.{crt,key}")
    ap.add_argument("--https-port", type=int, default=0)
    ap.add_argument("--tls-other-port", type=int, default=0)
    ap.add_argument("--wrong-name-port", type=int, default=0)
    ap.add_argument("--expired-port", type=int, default=0)
    ap.add_argument("--git-root", help="directory of bare repositories served under /git/")
    ap.add_argument("--pip-dir", help="directory of wheels served as a simple index")
    ap.add_argument("--dns-port", type=int, default=0)
    ap.add_argument("--dns-a", help="address of the A record of a.httptap.test")
    ap.add_argument("--dns-aaaa", help="address of the AAAA record of a.httptap.test")
    ap.add_argument("--ipv4-only", action="store_true")
    ap.add_argument("--exit-on-stdin-eof", action="store_true",
                    help="exit when stdin is closed (the parent holds a pipe to it)")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    if args.exit_on_stdin_eof:
        _exit_on_stdin_eof()

    family, any_addr = _bind_family(not args.ipv4_only)
    site = Site(args.files, args.git_root, args.pip_dir)
    servers: list[socketserver.TCPServer] = [
        HostHTTPServer(family, (any_addr, args.http_port), site),
        EchoServer(family, (any_addr, args.echo_port)),
    ]
    if args.http_alt_port:
        servers.append(HostHTTPServer(family, (any_addr, args.http_alt_port), site))
    serving_h2 = False
    if args.tls_dir:
        def cert(stem: str) -> ssl.SSLContext:
            return tls_context(os.path.join(args.tls_dir, f"{stem}.crt"),
                               os.path.join(args.tls_dir, f"{stem}.key"), HAS_H2)
        for port, stem in ((args.https_port, "server"), (args.tls_other_port, "server"),
                           (args.wrong_name_port, "wrong-name"), (args.expired_port, "expired")):
            if port:
                servers.append(HostHTTPSServer(family, (any_addr, port), site, cert(stem)))
                serving_h2 = HAS_H2
    if args.dns_port:
        zone = DNSZone(args.dns_a, args.dns_aaaa)
        servers.append(DNSTCPServer(family, (any_addr, args.dns_port), zone))
        udp = _udp_socket(family, (any_addr, args.dns_port))
        threading.Thread(target=serve_udp, args=(udp, zone.answer), name="dns-udp",
                         daemon=True).start()
    if args.udp_echo_port:
        udp = _udp_socket(family, (any_addr, args.udp_echo_port))
        threading.Thread(target=serve_udp, args=(udp, lambda data: data), name="udp-echo",
                         daemon=True).start()
    for srv in servers:
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5},
                         name=type(srv).__name__, daemon=True).start()
    print("ready h2" if serving_h2 else "ready", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
