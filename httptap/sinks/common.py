"""Helpers every sink shares: times, timings, headers, content types, body text.

Nothing here does I/O or reads the clock; every function is a plain transformation of
message fields, so the formats agree with each other on what "text", "total time" or
"server address" mean.

Timings
-------
The proxy stamps an exchange with wall-clock times (``time.time()`` seconds):

=================================  ===============================================
``HttpRequest.time``               the request head was read from the command
``HttpResponse.request_done``      the request body was complete (0: unknown)
``HttpResponse.request_headers_done``  fallback for ``request_done`` (0: unknown)
``HttpResponse.response_started``  the response head was read from upstream (0: unknown)
``HttpResponse.time``              the response body was complete (or the exchange ended)
=================================  ===============================================

:func:`timings` turns them into the three phases HAR and ndjson report, each clamped so
that the phases are non-negative and add up to the total: ``send`` (request read until
the request was complete), ``wait`` (until the first byte of the response head) and
``receive`` (until the response was complete). A missing stamp makes its phase 0.
"""

from __future__ import annotations

import codecs
import math
from datetime import datetime, timezone
from typing import Any, NamedTuple

from ..http.headers import header as header  # re-exported for the sinks
from ..plumbing.messages import HttpRequest, HttpResponse

#: Content types whose bodies are text, beyond ``text/*``.
_TEXT_TYPES = frozenset({
    "application/json", "application/xml", "application/javascript",
    "application/ecmascript", "application/x-javascript", "application/x-www-form-urlencoded",
    "application/graphql", "application/x-ndjson", "application/ndjson",
    "application/yaml", "application/x-yaml", "application/toml", "application/sql",
    "application/xhtml+xml", "application/csp-report", "image/svg+xml",
})
_TEXT_SUFFIXES = ("+json", "+xml", "+yaml")

#: ``error`` of an exchange still waiting for its response when httptap exits.
UNFINISHED = "no response: httptap exited before the exchange completed"

#: How many leading bytes :func:`looks_like_text` inspects when there is no content type.
SNIFF_BYTES = 4096


def iso_time(t: float) -> str:
    """``1700000000.5`` -> ``"2023-11-14T22:13:20.500Z"`` (UTC, milliseconds).

    Every exchange stamps a few of these, most within the same second: the text up to
    the second is formatted once per second (``_last_second``), the milliseconds each
    time. The split into second and microsecond is ``datetime.fromtimestamp``'s own
    (the fraction rounded half to even, as CPython's ``_PyTime_DoubleToDenominator``
    does), so the text is exactly what :func:`_iso_time_slow` gives."""
    if not 0.0 <= t < _YEAR_10000:
        return _iso_time_slow(t)
    frac, whole = math.modf(t)
    micro = round(frac * 1e6)
    second = int(whole)
    if micro >= 1_000_000:
        micro -= 1_000_000
        second += 1
    last = _last_second
    if last[0] != second:
        last[0] = second
        last[1] = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{last[1]}{micro // 1000:03d}Z"


def _iso_time_slow(t: float) -> str:
    dt = datetime.fromtimestamp(t, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_YEAR_10000 = 253402300800.0  # beyond it datetime cannot go: the slow path raises as it did
_last_second: list[Any] = [-1, ""]  # the whole second last formatted, and its text


class Timings(NamedTuple):
    """Phases of one exchange in milliseconds; ``send + wait + receive == total``."""
    send: float
    wait: float
    receive: float
    total: float


def timings(req: HttpRequest, resp: HttpResponse) -> Timings:
    start = req.time
    end = max(resp.time, start)
    sent = resp.request_done or resp.request_headers_done or start
    sent = min(max(sent, start), end)
    first = resp.response_started or sent
    first = min(max(first, sent), end)
    # (written out, not with a helper: every exchange's record comes through here)
    send = round((sent - start) * 1000.0, 3)
    wait = round((first - sent) * 1000.0, 3)
    receive = round((end - first) * 1000.0, 3)
    return Timings(send, wait, receive, round(send + wait + receive, 3))


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive), in received order."""
    name = name.lower()
    return [v for n, v in headers if n.lower() == name]


def split_content_type(value: str | None) -> tuple[str, str | None]:
    """``"Text/HTML; charset=UTF-8"`` -> ``("text/html", "UTF-8")``; ``None`` -> ``("", None)``."""
    if not value:
        return "", None
    media, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"') or None
    return media.strip().lower(), charset


def is_text_type(media_type: str) -> bool:
    """Whether a (lower-case, parameter-free) media type names text."""
    return (media_type.startswith("text/") or media_type in _TEXT_TYPES
            or media_type.endswith(_TEXT_SUFFIXES))


def looks_like_text(body: bytes) -> bool:
    """For a body without a content type: no NUL bytes and valid UTF-8 in its first
    :data:`SNIFF_BYTES` (a multi-byte character cut at the end is allowed)."""
    head = body[:SNIFF_BYTES]
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(body) <= SNIFF_BYTES)
    except UnicodeDecodeError:
        return False
    return True


def _codec(charset: str | None) -> str:
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass
    return "utf-8"


def body_is_text(content_type: str | None, body: bytes) -> bool:
    """Text by the content type when there is one, else by sniffing the bytes."""
    media, _ = split_content_type(content_type)
    if media:
        return is_text_type(media)
    return looks_like_text(body)


def decode_text(content_type: str | None, body: bytes) -> str:
    """A text body as a string: its declared charset (else UTF-8), errors replaced."""
    _, charset = split_content_type(content_type)
    return body.decode(_codec(charset), errors="replace")


def text_decoder(content_type: str | None) -> codecs.IncrementalDecoder:
    """An incremental decoder for a text body that arrives in pieces (a multi-byte
    character may be split between two): its charset (else UTF-8), errors replaced."""
    _, charset = split_content_type(content_type)
    return codecs.getincrementaldecoder(_codec(charset))(errors="replace")


def decode_text_strict(content_type: str | None, body: bytes) -> str | None:
    """A text body as a string, or None if it is not valid in its declared charset
    (else UTF-8): the caller then keeps the bytes (HAR writes them as base64)."""
    _, charset = split_content_type(content_type)
    try:
        return body.decode(_codec(charset))
    except UnicodeDecodeError:
        return None


# gRPC status codes (grpc/doc/statuscodes.md).
GRPC_STATUS_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED")


def grpc_status(resp: HttpResponse) -> str | None:
    """``"5 NOT_FOUND"`` for a gRPC call's outcome: ``grpc-status`` from the trailers, or
    from the headers of a trailers-only response; None for anything else."""
    value = header(resp.trailers, "grpc-status") or header(resp.headers, "grpc-status")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit() and int(value) < len(GRPC_STATUS_NAMES):
        return f"{value} {GRPC_STATUS_NAMES[int(value)]}"
    return value


def host_of(address: str) -> str:
    """``"1.2.3.4:443"`` -> ``"1.2.3.4"``; ``"[fd00::1]:443"`` -> ``"fd00::1"``."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    host, sep, _ = address.rpartition(":")
    return host if sep and ":" not in host else address


def port_of(address: str) -> str:
    """``"1.2.3.4:443"`` -> ``"443"``; ``""`` when the address has no port."""
    if address.startswith("["):
        rest = address.partition("]")[2]
        return rest[1:] if rest.startswith(":") else ""
    host, sep, port = address.rpartition(":")
    return port if sep and ":" not in host else ""
