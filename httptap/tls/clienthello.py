"""Read a TLS ClientHello from the first bytes of a connection: SNI, ALPN, versions.

Role in the pipeline: the proxy stage buffers what the command sends first on a new TCP
connection. :func:`looks_like_tls` decides, on any port, whether the connection starts
with TLS; :func:`parse_client_hello` then says which server name the certificate must be
minted for (:mod:`httptap.tls.ca`) and which ALPN protocols to offer upstream. The buffered
bytes are afterwards fed, unchanged, to the ``ssl`` memory BIO that terminates the TLS.

Theory of operation
-------------------
* Bytes in, a :class:`ClientHello` out; no I/O, no clock. Either the result is ``None``
  ("send more bytes": the input is a proper prefix of what could still be a ClientHello),
  a :class:`ClientHello`, or :class:`ClientHelloError` (a ``ValueError``); nothing else
  escapes, whatever the input.
* The handshake message may span several TLS records (RFC 8446 section 5.1: handshake
  messages may be fragmented across records); records are read until the message's
  declared length is complete. Every record must be a handshake record with version
  0x0300-0x0304, a length of 1 to 2^14 bytes. Decisions are made as early as the bytes
  allow: a first byte other than 0x16 fails at once.
* Within the ClientHello (RFC 8446 section 4.1.2, RFC 5246 section 7.4.1.2) every length is
  checked against its container. Extensions read: server_name (RFC 6066 section 3, the
  first ``host_name`` entry), application_layer_protocol_negotiation (RFC 7301) and
  supported_versions (RFC 8446 section 4.2.1). Of a duplicated extension the first counts.
* Messages larger than :data:`MAX_HANDSHAKE` are refused, so a caller's buffer stays
  bounded (real ClientHellos, post-quantum key shares included, stay under 4 KiB).

Not implemented: SSLv2-compatible ClientHellos (first byte 0x80), encrypted ClientHello
(ECH: the outer SNI is what is reported), DTLS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "MAX_HANDSHAKE", "ClientHello", "ClientHelloError", "looks_like_tls", "parse_client_hello",
]

CONTENT_HANDSHAKE: Final = 0x16
HANDSHAKE_CLIENT_HELLO: Final = 0x01
RECORD_HEADER: Final = 5
MAX_RECORD: Final = 1 << 14          # RFC 8446 section 5.1: TLSPlaintext.length <= 2^14
MAX_HANDSHAKE: Final = 1 << 16

EXT_SERVER_NAME: Final = 0
EXT_ALPN: Final = 16
EXT_SUPPORTED_VERSIONS: Final = 43
SNI_HOST_NAME: Final = 0


class ClientHelloError(ValueError):
    """The bytes are not (the start of) a TLS ClientHello."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the proxy needs from a ClientHello.

    ``sni`` is the host name exactly as sent (ASCII), ``None`` without the extension.
    ``alpn`` is the client's protocol list in its order, decoded as Latin-1 so any byte
    string survives (``p.encode("latin-1")`` gives the wire form back). ``versions`` lists
    supported_versions in the client's order, GREASE values included; empty when the
    extension is absent (a TLS 1.2-only client). ``record_version`` is the version of the
    first record, ``legacy_version`` the ClientHello's own version field, and ``length``
    how many bytes of the input the records carrying the ClientHello took.
    """

    sni: str | None
    alpn: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    record_version: int = 0x0301
    legacy_version: int = 0x0303
    length: int = 0
    extensions: list[int] = field(default_factory=list)


def looks_like_tls(first_bytes: bytes) -> bool:
    """True when a connection's first bytes start like a TLS handshake record.

    Needs at least three bytes (``16 03 00``-``16 03 04``); with six or more the record
    length must be non-zero and the handshake type ClientHello. Shorter input gives False,
    so call it once enough bytes are in (or the peer has stopped sending).
    """
    if len(first_bytes) < 3:
        return False
    if first_bytes[0] != CONTENT_HANDSHAKE or first_bytes[1] != 3 or first_bytes[2] > 4:
        return False
    if len(first_bytes) >= 5:
        length = (first_bytes[3] << 8) | first_bytes[4]
        if length == 0 or length > MAX_RECORD:
            return False
    if len(first_bytes) >= 6 and first_bytes[5] != HANDSHAKE_CLIENT_HELLO:
        return False
    return True


def parse_client_hello(data: bytes | bytearray | memoryview) -> ClientHello | None:
    """Parse the ClientHello at the start of ``data``.

    Returns ``None`` when more bytes are needed, the :class:`ClientHello` once it is whole
    (bytes after it are ignored), or raises :class:`ClientHelloError` when ``data`` cannot
    be the start of one.
    """
    data = bytes(data)
    message = bytearray()
    needed: int | None = None          # the handshake message's total length, once known
    pos = 0
    record_version = 0
    while needed is None or len(message) < needed:
        header = data[pos:pos + RECORD_HEADER]
        if not header:
            return None
        if header[0] != CONTENT_HANDSHAKE:
            raise ClientHelloError(f"not a TLS handshake record (content type {header[0]:#04x})")
        if len(header) >= 2 and header[1] != 3:
            raise ClientHelloError(f"not a TLS record version ({header[1]:#04x}..)")
        if len(header) >= 3 and header[2] > 4:
            raise ClientHelloError(f"not a TLS record version (0x03{header[2]:02x})")
        if len(header) < RECORD_HEADER:
            return None
        length = (header[3] << 8) | header[4]
        if length == 0 or length > MAX_RECORD:
            raise ClientHelloError(f"bad TLS record length {length}")
        if pos == 0:
            record_version = (header[1] << 8) | header[2]
        fragment = data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        message += fragment
        if needed is None and len(message) >= 1 and message[0] != HANDSHAKE_CLIENT_HELLO:
            raise ClientHelloError(f"handshake message type {message[0]} is not ClientHello")
        if needed is None and len(message) >= 4:
            body_length = int.from_bytes(message[1:4], "big")
            if body_length + 4 > MAX_HANDSHAKE:
                raise ClientHelloError(f"ClientHello of {body_length} bytes is too large")
            needed = 4 + body_length
        if len(fragment) < length:
            return None                # this record is not complete yet
        pos += RECORD_HEADER + length
    return _parse_body(bytes(message[4:needed]), record_version, pos)


class _Reader:
    """Reads big-endian fields from a byte string, raising ClientHelloError past its end."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.end - self.pos:
            raise ClientHelloError(f"ClientHello truncated in {what}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def take_all(self) -> bytes:
        return self.take(self.end - self.pos, "vector")

    def vector(self, size: int, what: str) -> _Reader:
        """A reader over a vector with a ``size``-byte length prefix; skips past it here."""
        n = self.uint(size, what)
        if n > self.end - self.pos:
            raise ClientHelloError(f"{what} length {n} overruns the ClientHello")
        sub = _Reader(self.data, self.pos, self.pos + n)
        self.pos += n
        return sub


def _parse_body(body: bytes, record_version: int, length: int) -> ClientHello:
    r = _Reader(body)
    legacy_version = r.uint(2, "legacy_version")
    if legacy_version >> 8 != 3:
        raise ClientHelloError(f"ClientHello version {legacy_version:#06x} is not TLS")
    r.take(32, "random")
    session_id = r.vector(1, "legacy_session_id")
    if session_id.remaining() > 32:
        raise ClientHelloError("session id longer than 32 bytes")
    suites = r.vector(2, "cipher_suites")
    if suites.remaining() < 2 or suites.remaining() % 2:
        raise ClientHelloError("bad cipher_suites length")
    compression = r.vector(1, "compression_methods")
    if compression.remaining() < 1:
        raise ClientHelloError("no compression methods")

    sni: str | None = None
    alpn: list[str] = []
    versions: list[int] = []
    seen: list[int] = []
    if r.remaining():              # a TLS 1.2 ClientHello may end without extensions
        extensions = r.vector(2, "extensions")
        if r.remaining():
            raise ClientHelloError("bytes after the ClientHello's extensions")
        while extensions.remaining():
            ext_type = extensions.uint(2, "extension type")
            ext = extensions.vector(2, f"extension {ext_type}")
            if ext_type in seen:
                continue
            seen.append(ext_type)
            if ext_type == EXT_SERVER_NAME:
                sni = _server_name(ext)
            elif ext_type == EXT_ALPN:
                alpn = _alpn(ext)
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                versions = _supported_versions(ext)
    return ClientHello(sni=sni, alpn=alpn, versions=versions, record_version=record_version,
                       legacy_version=legacy_version, length=length, extensions=seen)


def _server_name(ext: _Reader) -> str | None:
    if not ext.remaining():
        return None                # the empty form a server sends back; tolerate it
    names = ext.vector(2, "server_name_list")
    host: str | None = None
    while names.remaining():
        name_type = names.uint(1, "server name type")
        raw = names.vector(2, "server name").take_all()
        if name_type == SNI_HOST_NAME and host is None:
            if not raw:
                raise ClientHelloError("empty server name")
            try:
                host = raw.decode("ascii")
            except UnicodeDecodeError as exc:
                raise ClientHelloError("server name is not ASCII") from exc
    return host


def _alpn(ext: _Reader) -> list[str]:
    protocols = ext.vector(2, "ALPN protocol list")
    out: list[str] = []
    while protocols.remaining():
        name = protocols.vector(1, "ALPN protocol").take_all()
        if not name:
            raise ClientHelloError("empty ALPN protocol name")
        out.append(name.decode("latin-1"))
    return out


def _supported_versions(ext: _Reader) -> list[int]:
    versions = ext.vector(1, "supported_versions")
    if versions.remaining() % 2:
        raise ClientHelloError("odd supported_versions length")
    return [versions.uint(2, "version") for _ in range(versions.remaining() // 2)]

