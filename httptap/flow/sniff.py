"""What a connection is, from its first bytes (pure): the flow core's first decision.

TLS is recognised by its record header on any port; HTTP by an HTTP/1.x request line or
the HTTP/2 preface on any port (as mitmproxy's transparent mode does), and on ``--http``
ports whatever comes; a server that speaks first with an HTTP/2 SETTINGS frame is h2c
(gRPC servers do that). The first chunk decides and is relayed at once, never held: a
request line split over two segments on another port is relayed raw (clients write a
head in one go).
"""

from __future__ import annotations

import fnmatch
import re

from ..http.headers import header
from ..plumbing import messages
from ..tls.clienthello import looks_like_tls

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# An HTTP/1.x request line: a token of capitals (any method, WebDAV's too), a target
# without spaces, the version (RFC 9112 §3).
_REQUEST_LINE = re.compile(rb"[A-Z][A-Z_-]{0,31} [^ \r\n]+ HTTP/1\.[01]\r?\n")


def is_h2c(request: messages.HttpRequest | None, response: messages.HttpResponse) -> bool:
    """A 101 that switches ``request`` to HTTP/2 over cleartext (RFC 7540 §3.2)."""
    if request is None or response.status != 101:
        return False
    asked = header(request.headers, "upgrade") or ""
    given = header(response.headers, "upgrade") or ""
    return given.strip().lower() == "h2c" and "h2c" in asked.lower().replace(" ", "").split(",")


def looks_like_h2_settings(data: bytes | memoryview) -> bool:
    """The first bytes a server sends in HTTP/2 (RFC 9113 §3.4): a SETTINGS frame (type 4),
    not an ACK, on stream 0, its length a multiple of 6."""
    return (len(data) >= 9 and data[3] == 4 and data[4] == 0 and data[5:9] == b"\0\0\0\0"
            and int.from_bytes(data[0:3], "big") % 6 == 0)



def first_bytes(first: bytes, http_port: bool, https_port: bool) -> str:
    """What the command's first bytes start: ``"tls"``, ``"h2"`` (the HTTP/2 preface),
    ``"http/1.1"`` (a request line, or anything on an ``--http`` port) or ``"raw"``.
    On an ``--https`` port, fewer than 3 bytes are taken for the start of TLS."""
    if looks_like_tls(first[:3]) or (https_port and len(first) < 3):
        return "tls"
    if len(first) >= 4 and first.startswith(H2_PREFACE[:len(first)]):
        return "h2"
    if http_port or _REQUEST_LINE.match(first):
        return "http/1.1"
    return "raw"


def matches_any(name: str, globs: tuple[str, ...]) -> bool:
    """Whether a host name (any case, a trailing dot or not) matches one of ``globs``
    (lower case, ``*.example.com``): ``--no-intercept``."""
    name = name.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)
