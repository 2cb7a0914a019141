"""Tests for httptap.tls.clienthello: real ClientHellos from Python's ssl, prefixes, fragments, fuzz.

The fuzz tests hold the parser to one invariant: whatever the bytes, the result is None,
a ClientHello, or ClientHelloError. Prefix tests hold it to the other: a proper prefix of
a valid ClientHello always asks for more bytes, never fails.
"""

from __future__ import annotations

import ssl
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httptap.tls import clienthello
from httptap.tls.clienthello import (
    MAX_HANDSHAKE, ClientHello, ClientHelloError, looks_like_tls, parse_client_hello,
)


def client_hello(server_hostname: str | None = "example.com",
                 alpn: list[str] | None = None,
                 maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> bytes:
    """The first flight of a Python ssl client (its ClientHello records)."""
    ctx = ssl.create_default_context()
    ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def refragment(records: bytes, sizes: list[int]) -> bytes:
    """The same handshake bytes re-cut into records of the given sizes (the last takes the rest)."""
    version = records[1:3]
    payload = bytearray()
    pos = 0
    while pos < len(records):
        length = struct.unpack_from("!H", records, pos + 3)[0]
        payload += records[pos + 5:pos + 5 + length]
        pos += 5 + length
    out = bytearray()
    pos = 0
    for size in sizes:
        if pos >= len(payload):
            break
        chunk = payload[pos:pos + size]
        out += b"\x16" + version + struct.pack("!H", len(chunk)) + chunk
        pos += len(chunk)
    if pos < len(payload):
        chunk = payload[pos:]
        out += b"\x16" + version + struct.pack("!H", len(chunk)) + chunk
    return bytes(out)


HELLO = client_hello("api.example.com", ["h2", "http/1.1"])


# ---------------------------------------------------------------------- real ClientHellos

def test_sni_alpn_versions() -> None:
    hello = parse_client_hello(HELLO)
    assert isinstance(hello, ClientHello)
    assert hello.sni == "api.example.com"
    assert hello.alpn == ["h2", "http/1.1"]
    assert 0x0304 in hello.versions and 0x0303 in hello.versions
    assert hello.record_version == 0x0301
    assert hello.legacy_version == 0x0303
    assert hello.length == len(HELLO)
    assert clienthello.EXT_SERVER_NAME in hello.extensions


def test_no_alpn_and_no_sni_for_an_ip() -> None:
    hello = parse_client_hello(client_hello("10.1.2.3"))
    assert hello is not None
    assert hello.sni is None                 # ssl sends no SNI for an IP address
    assert hello.alpn == []


def test_tls12_only_client() -> None:
    hello = parse_client_hello(client_hello("old.example", maximum=ssl.TLSVersion.TLSv1_2))
    assert hello is not None
    assert hello.sni == "old.example"
    assert 0x0304 not in hello.versions


def test_every_proper_prefix_needs_more() -> None:
    for n in range(len(HELLO)):
        assert parse_client_hello(HELLO[:n]) is None, n


def test_bytes_after_the_hello_are_ignored() -> None:
    hello = parse_client_hello(HELLO + b"\x17\x03\x03\x00\x05hello")
    assert hello is not None and hello.length == len(HELLO)


def test_accepts_bytearray_and_memoryview() -> None:
    assert parse_client_hello(bytearray(HELLO)) == parse_client_hello(memoryview(HELLO))


@pytest.mark.parametrize("sizes", [[1], [4], [5, 7], [100], [len(HELLO) // 2]])
def test_hello_over_several_records(sizes: list[int]) -> None:
    data = refragment(HELLO, sizes * 1000)
    assert data.count(b"\x16\x03\x01") >= 2
    hello, whole = parse_client_hello(data), parse_client_hello(HELLO)
    assert hello is not None and whole is not None
    assert (hello.sni, hello.alpn, hello.versions) == ("api.example.com", ["h2", "http/1.1"],
                                                       whole.versions)
    assert hello.length == len(data)
    for n in range(0, len(data), 7):
        assert parse_client_hello(data[:n]) is None


def test_python_ssl_accepts_a_refragmented_hello() -> None:
    """Our fragmentation is legal TLS: a real server finishes the handshake from it."""
    from httptap.tls.ca import CertificateAuthority

    authority = CertificateAuthority.ephemeral()
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = authority.server_context("api.example.com").wrap_bio(s_in, s_out, server_side=True)
    s_in.write(refragment(HELLO, [60] * 100))
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()
    assert s_out.read()[:1] == b"\x16"       # a ServerHello came back


# ---------------------------------------------------------------------- not TLS

@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"\x80\x2e\x01\x03\x01",                      # SSLv2-compatible hello
    b"\x16\x02",                                  # record version 2.x
    b"\x16\x03\x05",                              # record version 3.5
    b"\x16\x03\x01\x00\x00",                      # empty record
    b"\x16\x03\x01\x40\x01",                      # record longer than 2^14
    b"\x16\x03\x01\x00\x04\x02",                  # ServerHello, not ClientHello
    b"\x15\x03\x03\x00\x02\x02\x28",              # an alert
])
def test_not_a_client_hello(data: bytes) -> None:
    with pytest.raises(ClientHelloError):
        parse_client_hello(data)


def test_too_large_hello() -> None:
    with pytest.raises(ClientHelloError, match="too large"):
        parse_client_hello(b"\x16\x03\x01\x00\x04\x01" + (MAX_HANDSHAKE).to_bytes(3, "big"))


def test_non_handshake_record_in_the_middle() -> None:
    data = refragment(HELLO, [50])
    second = 5 + 50
    broken = data[:second] + b"\x17" + data[second + 1:]
    with pytest.raises(ClientHelloError, match="content type 0x17"):
        parse_client_hello(broken)


def _with_body(body: bytes) -> bytes:
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(message)) + message


def _body(extensions: bytes | None) -> bytes:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    if extensions is not None:
        body += struct.pack("!H", len(extensions)) + extensions
    return body


def _ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def test_minimal_hello_without_extensions() -> None:
    hello = parse_client_hello(_with_body(_body(None)))
    assert hello == ClientHello(sni=None, alpn=[], versions=[], record_version=0x0301,
                                legacy_version=0x0303, length=len(_with_body(_body(None))))


def test_first_of_duplicate_extensions_counts() -> None:
    def sni(name: bytes) -> bytes:
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        return _ext(0, struct.pack("!H", len(entry)) + entry)
    hello = parse_client_hello(_with_body(_body(sni(b"a.example") + sni(b"b.example"))))
    assert hello is not None and hello.sni == "a.example"


@pytest.mark.parametrize("extensions, message", [
    (_ext(0, b"\x00\x0d\x00\x00\x09a.example"), "overruns"),
    (_ext(0, b"\x00\x0c\x00\x00\x09\xff.example"), "not ASCII"),
    (_ext(0, b"\x00\x03\x00\x00\x00"), "empty server name"),
    (_ext(16, b"\x00\x01\x00"), "empty ALPN"),
    (_ext(43, b"\x03\x03\x04\x03"), "odd supported_versions"),
    (_ext(43, b"\x04\x03\x04"), "overruns"),
    (b"\x00", "truncated"),
])
def test_malformed_extensions(extensions: bytes, message: str) -> None:
    with pytest.raises(ClientHelloError, match=message):
        parse_client_hello(_with_body(_body(extensions)))


def test_bytes_after_extensions() -> None:
    with pytest.raises(ClientHelloError, match="after the ClientHello"):
        parse_client_hello(_with_body(_body(b"") + b"\x00"))


def test_alpn_keeps_any_bytes() -> None:
    alpn = b"\x02h2\x03\xff\x00a"
    hello = parse_client_hello(_with_body(_body(_ext(16, struct.pack("!H", len(alpn)) + alpn))))
    assert hello is not None and hello.alpn == ["h2", "\xff\x00a"]
    assert hello.alpn[1].encode("latin-1") == b"\xff\x00a"


# ---------------------------------------------------------------------- looks_like_tls

def test_looks_like_tls() -> None:
    assert looks_like_tls(HELLO)
    assert looks_like_tls(HELLO[:3])
    assert looks_like_tls(b"\x16\x03\x00\x00\x10")
    assert not looks_like_tls(HELLO[:2])
    assert not looks_like_tls(b"")
    assert not looks_like_tls(b"GET / HTTP/1.1\r\n")
    assert not looks_like_tls(b"\x16\x03\x05\x00\x10\x01")
    assert not looks_like_tls(b"\x16\x03\x01\x00\x00\x01")
    assert not looks_like_tls(b"\x16\x03\x01\x00\x10\x02")


# ---------------------------------------------------------------------- fuzz

def _parses_or_refuses(data: bytes) -> ClientHello | None:
    try:
        return parse_client_hello(data)
    except ClientHelloError:
        return None


@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parses_or_refuses(data)
    _parses_or_refuses(b"\x16\x03\x01" + data)
    _parses_or_refuses(b"\x16\x03\x01" + struct.pack("!H", len(data) + 4) + b"\x01"
                       + (len(data)).to_bytes(3, "big") + data)


@given(st.lists(st.tuples(st.integers(0, len(HELLO) - 1), st.integers(0, 255)), max_size=8),
       st.integers(0, len(HELLO)))
def test_fuzz_mutated_hello(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(HELLO)
    for pos, value in edits:
        data[pos] = value
    _parses_or_refuses(bytes(data))
    _parses_or_refuses(bytes(data[:cut]))


@given(st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_fuzz_fragmentation(sizes: list[int]) -> None:
    data = refragment(HELLO, sizes)
    hello = parse_client_hello(data)
    assert hello is not None and hello.sni == "api.example.com"
    assert parse_client_hello(data[:len(data) - 1]) is None


# ---------------------------------------------------------------------- errors

def test_error_is_a_value_error() -> None:
    assert issubclass(ClientHelloError, ValueError)
