"""Tests for the passive HTTP/1.x observer (httptap.http.http1) and content decoding.

Every scenario is a script of steps (which side sent what, or which side
closed). ``run`` plays it three ways, whole steps, one byte at a time and in
uneven pieces, and checks the three event lists are identical before
returning them.
"""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from httptap.http.contentcoding import ContentDecoder, parse_content_encoding
from httptap.http.http1 import (
    MAX_HEAD, MAX_HEADERS, BodyData, Http1Observer, ProtocolError, RequestEnd, RequestHead,
    ResponseEnd, ResponseHead,
)
from httptap.http.report import ExchangeReporter
from httptap.plumbing import messages

from observer_play import CE, SE, C, S, Events, play


def _play(script: list[tuple[str, bytes]], split: str, **kw: object) -> tuple[Events, Http1Observer]:
    obs = Http1Observer(**kw)  # type: ignore[arg-type]
    return play(obs, script, split), obs


def run(script: list[tuple[str, bytes]], **kw: object) -> tuple[Events, Http1Observer]:
    """Play ``script`` whole, byte by byte and in odd pieces; all must agree."""
    whole, obs = _play(script, "whole", **kw)
    for split in ("bytes", "uneven"):
        other, obs2 = _play(script, split, **kw)
        assert other == whole, split
        assert (obs2.failed, obs2.upgraded) == (obs.failed, obs.upgraded), split
    return whole, obs


def kinds(events: list) -> list[str]:
    short = {RequestHead: "Q", RequestEnd: "q", ResponseHead: "R", ResponseEnd: "r",
             ProtocolError: "E"}
    return [short[type(e)] for e in events]


def req(method: str = "GET", target: str = "/", headers: str = "Host: example.com\r\n",
        body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    return f"{method} {target} {version}\r\n{headers}\r\n".encode() + body


def resp(status: int = 200, headers: str = "", body: bytes = b"", reason: str = "OK",
         version: str = "HTTP/1.1") -> bytes:
    return f"{version} {status} {reason}\r\n{headers}\r\n".encode() + body


def chunked(*parts: bytes, trailers: str = "") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return out + b"0\r\n" + trailers.encode() + b"\r\n"


# ---------------------------------------------------------------------------
# Framing


def test_simple_get_and_content_length_response() -> None:
    events, obs = run([(C, req()), (S, resp(headers="Content-Length: 5\r\n", body=b"hello"))],
                      capture_bodies=True)
    assert kinds(events) == ["Q", "q", "R", "r"]
    head = events[0]
    assert (head.method, head.target, head.version) == ("GET", "/", "HTTP/1.1")
    assert head.headers == [("Host", "example.com")]
    assert events[1].body_size == 0 and events[1].time == 0.0
    assert (events[2].status, events[2].reason, events[2].informational) == (200, "OK", False)
    end = events[3]
    assert (end.body_size, end.decoded_size, end.complete, end.truncated) == (5, 5, True, False)
    assert events.body(0) == b"hello"
    assert end.time == 1.0
    assert not obs.failed and not obs.upgraded


def test_post_with_content_length_body() -> None:
    body = b"x=1&y=2" * 100
    events, _ = run([
        (C, req("POST", "/form", f"Host: a\r\nContent-Length: {len(body)}\r\n", body)),
        (S, resp(201, "Content-Length: 0\r\n", reason="Created")),
    ], capture_bodies=True)
    assert kinds(events) == ["Q", "q", "R", "r"]
    assert events[1].body_size == len(body) and events.body(0, request=True) == body
    assert events[2].status == 201 and events[3].body_size == 0


def test_body_not_captured_by_default() -> None:
    events, _ = run([(C, req()), (S, resp(headers="Content-Length: 3\r\n", body=b"abc"))])
    assert events.bodies == {} and events[3].body_size == 3


def test_chunked_both_directions_with_trailers_and_extensions() -> None:
    req_body = chunked(b"hello ", b"world", trailers="X-Checksum: 42\r\n")
    resp_body = b"4;name=value\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n" \
                b"Expires: never\r\nX-T: 1\r\n\r\n"
    events, _ = run([
        (C, req("PUT", "/up", "Host: a\r\nTransfer-Encoding: chunked\r\n", req_body)),
        (S, resp(headers="Transfer-Encoding: chunked\r\n", body=resp_body)),
    ], capture_bodies=True)
    assert kinds(events) == ["Q", "q", "R", "r"]
    assert events.body(0, request=True) == b"hello world" and events[1].body_size == 11
    assert events[1].trailers == [("X-Checksum", "42")]
    assert events.body(0) == b"Wikipedia in\r\n\r\nchunks."
    assert events[3].body_size == 23
    assert events[3].trailers == [("Expires", "never"), ("X-T", "1")]


def test_chunked_with_bare_lf_line_ends() -> None:
    events, obs = run([
        (C, b"GET / HTTP/1.1\nHost: a\n\n"),
        (S, b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n"),
    ], capture_bodies=True)
    assert not obs.failed
    assert kinds(events) == ["Q", "q", "R", "r"] and events.body(0) == b"abc"


def test_head_response_has_no_body_and_connection_goes_on() -> None:
    events, obs = run([
        (C, req("HEAD", "/big") + req("GET", "/small")),
        (S, resp(headers="Content-Length: 1000000\r\n")
         + resp(headers="Content-Length: 2\r\n", body=b"ok")),
    ])
    assert kinds(events) == ["Q", "q", "Q", "q", "R", "r", "R", "r"]
    assert events[5].body_size == 0 and events[5].seq == 0
    assert events[7].body_size == 2 and events[7].seq == 1
    assert not obs.failed


def test_100_continue_then_final_response() -> None:
    body = b"a" * 50
    events, _ = run([
        (C, req("POST", "/", f"Host: a\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n")),
        (S, resp(100, reason="Continue")),
        (C, body),
        (S, resp(200, "Content-Length: 2\r\n", b"ok")),
    ])
    assert kinds(events) == ["Q", "R", "q", "R", "r"]
    assert events[1].status == 100 and events[1].informational
    assert events[2].body_size == 50
    assert events[3].status == 200 and not events[3].informational
    assert events[4].body_size == 2 and events[4].seq == 0


def test_103_early_hints_before_final_response() -> None:
    events, _ = run([
        (C, req()),
        (S, resp(103, "Link: </style.css>; rel=preload\r\n", reason="Early Hints")
         + resp(200, "Content-Length: 1\r\n", b"x")),
    ])
    assert kinds(events) == ["Q", "q", "R", "R", "r"]
    assert events[2].informational and events[2].headers == [("Link", "</style.css>; rel=preload")]


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_ignore_content_length(status: int) -> None:
    events, obs = run([
        (C, req() + req()),
        (S, resp(status, "Content-Length: 10\r\n", reason="X") + resp(200, "Content-Length: 1\r\n", b"z")),
    ])
    assert kinds(events) == ["Q", "q", "Q", "q", "R", "r", "R", "r"]
    assert events[5].body_size == 0 and events[7].body_size == 1
    assert not obs.failed


def test_keep_alive_many_exchanges() -> None:
    script = []
    for i in range(25):
        script.append((C, req(target=f"/{i}")))
        script.append((S, resp(headers=f"Content-Length: {i}\r\n", body=b"b" * i)))
    events, _ = run(script)
    assert kinds(events) == ["Q", "q", "R", "r"] * 25
    assert [e.body_size for e in events if isinstance(e, ResponseEnd)] == list(range(25))
    assert [e.target for e in events if isinstance(e, RequestHead)] == [f"/{i}" for i in range(25)]


def test_pipelined_requests() -> None:
    events, _ = run([
        (C, req(target="/a") + req("POST", "/b", "Host: a\r\nContent-Length: 3\r\n", b"abc")
         + req("HEAD", "/c")),
        (S, resp(headers="Transfer-Encoding: chunked\r\n", body=chunked(b"AAAA"))
         + resp(headers="Content-Length: 2\r\n", body=b"BB")
         + resp(headers="Content-Length: 77\r\n")),
    ])
    assert kinds(events) == ["Q", "q"] * 3 + ["R", "r"] * 3
    assert [e.seq for e in events] == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]
    assert [e.body_size for e in events if isinstance(e, ResponseEnd)] == [4, 2, 0]


def test_server_bytes_before_request_is_seen_are_held() -> None:
    events, obs = run([(S, resp(headers="Content-Length: 2\r\n", body=b"hi")), (C, req())])
    assert kinds(events) == ["Q", "q", "R", "r"] and not obs.failed


def test_connection_close_read_until_eof() -> None:
    events, _ = run([
        (C, req()),
        (S, resp(headers="Connection: close\r\n", body=b"streamed until close")),
        (S, b" and more"),
        (SE, b""),
    ], capture_bodies=True)
    assert kinds(events) == ["Q", "q", "R", "r"]
    assert events.body(0) == b"streamed until close and more" and events[3].complete
    assert events[3].time == 3.0


def test_bytes_after_connection_close_are_ignored() -> None:
    events, obs = run([
        (C, req(headers="Host: a\r\nConnection: close\r\n")),
        (C, b"\x16\x03\x01garbage after close"),
        (S, resp(headers="Content-Length: 1\r\nConnection: close\r\n", body=b"1")),
        (S, b"garbage"),
    ])
    assert kinds(events) == ["Q", "q", "R", "r"] and not obs.failed


def test_http10_without_length() -> None:
    events, _ = run([
        (C, req(version="HTTP/1.0", headers="")),
        (S, resp(version="HTTP/1.0", body=b"old school")),
        (SE, b""),
    ])
    assert events[0].version == "HTTP/1.0" and events[2].version == "HTTP/1.0"
    assert events[3].body_size == 10 and events[3].complete


def test_http10_keep_alive() -> None:
    events, _ = run([
        (C, req(version="HTTP/1.0", headers="Connection: keep-alive\r\n")),
        (S, resp(version="HTTP/1.0", headers="Connection: keep-alive\r\nContent-Length: 1\r\n",
                 body=b"a")),
        (C, req(version="HTTP/1.0", headers="Connection: keep-alive\r\n")),
        (S, resp(version="HTTP/1.0", headers="Connection: keep-alive\r\nContent-Length: 1\r\n",
                 body=b"b")),
    ])
    assert kinds(events) == ["Q", "q", "R", "r"] * 2


def test_truncated_body_on_eof_is_reported_incomplete() -> None:
    events, _ = run([
        (C, req("POST", "/", "Host: a\r\nContent-Length: 10\r\n", b"abc")),
        (CE, b""),
        (S, resp(headers="Content-Length: 100\r\n", body=b"x" * 40)),
        (SE, b""),
    ])
    assert kinds(events) == ["Q", "q", "R", "r"]
    assert (events[1].body_size, events[1].complete) == (3, False)
    assert (events[3].body_size, events[3].complete) == (40, False)


def test_websocket_upgrade() -> None:
    events, obs = run([
        (C, req(headers="Host: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
         + b"\x81\x85early frame"),
        (S, resp(101, "Upgrade: websocket\r\nConnection: Upgrade\r\n", reason="Switching Protocols")
         + b"\x81\x05hello"),
    ])
    assert kinds(events) == ["Q", "q", "R", "r"]
    assert events[2].status == 101 and not events[2].informational
    assert obs.upgraded and not obs.failed
    obs.client_data(b"\x00\xff raw frames", 9.0)   # ignored once upgraded
    assert obs.events() == []
    # What came with the switch each way is handed over to the WebSocket decoder.
    assert obs.switched_bytes() == (b"\x81\x85early frame", b"\x81\x05hello")


def test_switched_bytes_after_too_much_early_client_data() -> None:
    from httptap.http.h1readers import MAX_WAIT_BUFFER
    _, obs = run([
        (C, req(headers="Host: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n")
         + bytes(MAX_WAIT_BUFFER + 1)),
        (S, resp(101, "Upgrade: websocket\r\nConnection: Upgrade\r\n")),
    ])
    assert obs.upgraded
    assert obs.switched_bytes() == (None, b"")  # the client's side cannot be followed


def test_upgrade_refused_keeps_decoding_pipelined_requests() -> None:
    events, obs = run([
        (C, req(headers="Host: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                        "HTTP2-Settings: AAMAAABkAAQAAP__\r\n") + req(target="/next")),
        (S, resp(headers="Content-Length: 1\r\n", body=b"1") + resp(headers="Content-Length: 1\r\n",
                                                                    body=b"2")),
    ])
    # The held request is read as soon as the response head says "no switch".
    assert kinds(events) == ["Q", "q", "R", "Q", "q", "r", "R", "r"]
    assert not obs.upgraded and not obs.failed
    assert [e.target for e in events if isinstance(e, RequestHead)] == ["/", "/next"]


def test_connect_tunnel() -> None:
    events, obs = run([
        (C, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01"),
        (S, resp(200, reason="Connection established") + b"\x16\x03\x03"),
    ])
    assert kinds(events) == ["Q", "q", "R", "r"]
    assert events[0].method == "CONNECT" and events[0].target == "example.com:443"
    assert obs.upgraded and not obs.failed


def test_connect_refused_keeps_http() -> None:
    events, obs = run([
        (C, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        (S, resp(407, "Content-Length: 4\r\n", b"auth", reason="Proxy Authentication Required")),
        (C, req()),
        (S, resp(headers="Content-Length: 0\r\n")),
    ])
    assert kinds(events) == ["Q", "q", "R", "r"] * 2
    assert not obs.upgraded and not obs.failed


def test_header_forms() -> None:
    raw = (b"\r\nGET /x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n  two\r\n"
           b"X-Empty:\r\nX-Spaces :  v  \r\n\r\n")
    events, obs = run([(C, raw)])
    assert not obs.failed
    assert events[0].headers == [("Host", "a"), ("X-Folded", "one two"), ("X-Empty", ""),
                                 ("X-Spaces", "v")]


def test_header_values_keep_non_ascii_bytes() -> None:
    events, _ = run([(C, req(headers="") .replace(b"\r\n\r\n", b"\r\nX-N: caf\xc3\xa9\r\n\r\n"))])
    assert events[0].headers == [("X-N", "caf\xc3\xa9")]   # latin-1: every byte kept


# ---------------------------------------------------------------------------
# Not HTTP


TLS_HELLO = bytes.fromhex("160301020001000" "1fc0303") + bytes(40)


@pytest.mark.parametrize("first", [
    TLS_HELLO,
    b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x00\x01\x02\x03",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET\x00/ HTTP/1.1\r\n\r\n",
])
def test_garbage_from_client_fails(first: bytes) -> None:
    events, obs = run([(C, first)])
    assert obs.failed and events == [ProtocolError("request is not HTTP", 0.0)]
    assert obs.error == "request is not HTTP"
    obs.client_data(req(), 1.0)     # nothing more once failed
    assert obs.events() == []


def test_garbage_fails_early_not_at_head_limit() -> None:
    obs = Http1Observer()
    obs.client_data(TLS_HELLO[:1], 0.0)
    assert obs.failed


def test_server_first_protocol_fails() -> None:
    events, obs = run([(S, b"220 smtp.example.com ESMTP ready\r\n")])
    assert obs.failed and events == [ProtocolError("response is not HTTP", 0.0)]


def test_bad_response_fails() -> None:
    events, obs = run([(C, req()), (S, b"SSH-2.0-OpenSSH\r\n")])
    assert kinds(events) == ["Q", "q", "E"]
    assert events[2] == ProtocolError("response is not HTTP", 1.0)


def test_request_head_too_large_is_reported_with_its_request_line() -> None:
    huge = req("PUT", "/up", "Host: example.com\r\nX-Big: " + "a" * MAX_HEAD + "\r\n")
    events, obs = run([(C, req()), (S, resp(headers="Content-Length: 0\r\n")), (C, huge)])
    assert kinds(events) == ["Q", "q", "R", "r", "E"]
    error = events[4]
    assert error.error == obs.error == "request head over 64 KiB"
    # Never reported as a RequestHead: the error carries it, with the Host it had.
    assert error.request == RequestHead("PUT", "/up", "HTTP/1.1", [("Host", "example.com")],
                                        2.0, seq=1)


def test_request_head_too_large_before_host_has_no_fields() -> None:
    huge = req("GET", "/x", "X-Big: " + "a" * MAX_HEAD + "\r\nHost: h\r\n")
    events, _ = run([(C, huge)])
    assert events == [ProtocolError("request head over 64 KiB", 0.0,
                                    RequestHead("GET", "/x", "HTTP/1.1", [], 0.0))]


def test_response_head_too_large() -> None:
    big = resp(headers="X-Big: " + "a" * MAX_HEAD + "\r\n")
    events, obs = run([(C, req()), (S, big)])
    assert kinds(events) == ["Q", "q", "E"]
    assert events[2] == ProtocolError("response head over 64 KiB", 1.0)


@pytest.mark.parametrize("side", ["request", "response"])
def test_too_many_headers(side: str) -> None:
    fields = "a: b\r\n" * (MAX_HEADERS + 1)
    if side == "request":
        events, _ = run([(C, req("GET", "/many", fields))])
        assert kinds(events) == ["E"]
        assert events[0].request is not None
        assert (events[0].request.target, len(events[0].request.headers)) == ("/many",
                                                                               MAX_HEADERS + 1)
    else:
        events, _ = run([(C, req()), (S, resp(headers=fields))])
        assert kinds(events) == ["Q", "q", "E"]
    assert events[-1].error == "too many headers"
    # One fewer is fine.
    _, obs = run([(C, req(headers="a: b\r\n" * MAX_HEADERS)),
                  (S, resp(headers="a: b\r\n" * MAX_HEADERS))])
    assert not obs.failed


@pytest.mark.parametrize(("headers", "error"), [
    ("Content-Length: 5\r\nContent-Length: 6\r\n", "invalid Content-Length"),
    ("Content-Length: -1\r\n", "invalid Content-Length"),
    ("Content-Length: 1e3\r\n", "invalid Content-Length"),
    ("Transfer-Encoding: gzip\r\n", "invalid Transfer-Encoding"),
    ("no colon here\r\n", "invalid request head"),
    (" folded first\r\n", "invalid request head"),
])
def test_bad_request_framing_fails(headers: str, error: str) -> None:
    events, obs = run([(C, req("POST", "/f", headers=headers))])
    assert obs.failed and kinds(events) == ["E"]
    assert events[0].error == error
    assert (events[0].request.method, events[0].request.target) == ("POST", "/f")


def test_bad_content_length_in_response() -> None:
    events, _ = run([(C, req()), (S, resp(headers="Content-Length: x\r\n"))])
    assert kinds(events) == ["Q", "q", "E"] and events[2].error == "invalid Content-Length"


@pytest.mark.parametrize("body", [
    b"zz\r\n",                          # not a chunk size
    b"3\r\nabcXY",                      # no CRLF after the chunk data
    b"3\r\nabc\rX",
    b"1" * 5000,                        # a chunk-size line that never ends
])
def test_bad_chunked_response_ends_incomplete_with_the_error(body: bytes) -> None:
    events, obs = run([(C, req()),
                       (S, resp(headers="Transfer-Encoding: chunked\r\n", body=body))])
    assert kinds(events) == ["Q", "q", "R", "E", "r"]
    assert events[3] == ProtocolError("invalid chunked encoding", 1.0)
    end = events[4]
    assert not end.complete and end.body_size == (3 if body.startswith(b"3") else 0)
    assert obs.error == "invalid chunked encoding"


def test_bad_chunked_request_body() -> None:
    events, _ = run([(C, req("POST", headers="Transfer-Encoding: chunked\r\n", body=b"g\r\n"))])
    assert kinds(events) == ["Q", "E", "q"]
    assert events[1].error == "invalid chunked encoding" and events[1].request is None
    assert not events[2].complete


def test_trailer_section_too_large() -> None:
    trailers = b"".join(b"T%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
    events, _ = run([(C, req()), (S, resp(headers="Transfer-Encoding: chunked\r\n",
                                          body=b"0\r\n" + trailers + b"\r\n"))])
    assert kinds(events) == ["Q", "q", "R", "E", "r"]
    assert events[3].error == "trailer section over 64 KiB"


# ---------------------------------------------------------------------------
# What the reporter makes of errors


def _report(script: list[tuple[str, bytes]]) -> tuple[list, ExchangeReporter]:
    ids = iter(range(1, 1 << 30))
    reporter = ExchangeReporter(scheme="http", server_host="192.0.2.1", server_port=80,
                                client="10.0.0.2:5000", server="192.0.2.1:80",
                                new_id=lambda: next(ids))
    events, _ = run(script)
    return reporter.on_events(events), reporter


def test_failed_request_head_is_an_http_record_with_the_error() -> None:
    huge = req("PUT", "/up", "Host: example.com\r\nX-Big: " + "a" * MAX_HEAD + "\r\n")
    out, reporter = _report([(C, huge)])
    request, response = out
    assert isinstance(request, messages.HttpRequest)
    assert (request.method, request.url) == ("PUT", "http://example.com/up")
    assert isinstance(response, messages.HttpResponse)
    assert (response.exchange, response.status, response.error) == (
        request.exchange, 0, "request head over 64 KiB")
    # Counted as an exchange: the connection is not reported as plain TCP, and nothing
    # is left for the end of the connection.
    assert reporter.exchanges == 1 and not reporter.open


@pytest.mark.parametrize(("server", "error", "status"), [
    (resp(headers="Transfer-Encoding: chunked\r\n", body=b"3\r\nabcXY"),
     "invalid chunked encoding", 200),
    (b"garbage garbage\r\n\r\n", "response is not HTTP", 0),
    (resp(headers="X-Big: " + "a" * MAX_HEAD + "\r\n"), "response head over 64 KiB", 0),
    (resp(headers="Content-Length: 1, 2\r\n"), "invalid Content-Length", 0),
])
def test_response_errors_are_named(server: bytes, error: str, status: int) -> None:
    out, reporter = _report([(C, req() + req("GET", "/second")), (S, server)])
    responses = [m for m in out if isinstance(m, messages.HttpResponse)]
    # Both pipelined requests end with the error: neither response can be read now.
    assert [(m.status, m.error) for m in responses] == [(status, error), (0, error)]
    assert not reporter.open


def test_non_http_client_stays_a_tcp_connection() -> None:
    out, reporter = _report([(C, b"SSH-2.0-OpenSSH_9.6\r\n")])
    assert out == [] and reporter.exchanges == 0


# ---------------------------------------------------------------------------
# Content decoding

TEXT = b"The quick brown fox jumps over the lazy dog. " * 400


def _deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("coding,encoded", [
    ("gzip", gzip.compress(TEXT)),
    ("x-gzip", gzip.compress(TEXT)),
    ("deflate", zlib.compress(TEXT)),
    ("deflate", _deflate_raw(TEXT)),
    ("br", brotli.compress(TEXT)),
    ("zstd", zstandard.ZstdCompressor().compress(TEXT)),
    ("gzip, br", brotli.compress(gzip.compress(TEXT))),
    ("identity", TEXT),
])
def test_response_content_decoding(coding: str, encoded: bytes) -> None:
    for capture in (False, True):
        events, _ = run([
            (C, req()),
            (S, resp(headers=f"Content-Encoding: {coding}\r\nContent-Length: {len(encoded)}\r\n",
                     body=encoded)),
        ], capture_bodies=capture)
        end = events[3]
        assert end.body_size == len(encoded)
        assert end.decoded_size == len(TEXT)
        assert events.bodies == ({(0, False): TEXT} if capture else {})


def test_chunked_gzip_response_decoded() -> None:
    enc = gzip.compress(TEXT)
    events, _ = run([
        (C, req()),
        (S, resp(headers="Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n",
                 body=chunked(enc[:100], enc[100:]))),
    ])
    assert (events[3].body_size, events[3].decoded_size) == (len(enc), len(TEXT))


def test_broken_encoding_counts_raw_bytes() -> None:
    bad = b"definitely not gzip" * 10
    events, obs = run([
        (C, req()),
        (S, resp(headers=f"Content-Encoding: gzip\r\nContent-Length: {len(bad)}\r\n", body=bad)),
    ], capture_bodies=True)
    assert not obs.failed
    assert events[3].body_size == events[3].decoded_size == len(bad)
    assert events.body(0) == bad and not events[3].truncated


def test_unknown_encoding_counts_raw_bytes() -> None:
    events, _ = run([
        (C, req()),
        (S, resp(headers="Content-Encoding: compress\r\nContent-Length: 3\r\n", body=b"abc")),
    ])
    assert events[3].decoded_size == 3


def test_max_capture_truncates_body_only() -> None:
    enc = gzip.compress(TEXT)
    events, _ = run([
        (C, req()),
        (S, resp(headers=f"Content-Encoding: gzip\r\nContent-Length: {len(enc)}\r\n", body=enc)),
    ], capture_bodies=True, max_capture=100)
    assert events.body(0) == TEXT[:100] and events[3].decoded_size == len(TEXT)
    assert events[3].truncated


def test_decode_content_off() -> None:
    enc = gzip.compress(TEXT)
    events, _ = run([
        (C, req()),
        (S, resp(headers=f"Content-Encoding: gzip\r\nContent-Length: {len(enc)}\r\n", body=enc)),
    ], decode_content=False)
    assert events[3].decoded_size == len(enc)


def test_content_decoder_directly() -> None:
    assert parse_content_encoding(["gzip, identity", " BR "]) == ["gzip", "br"]
    # multi-member gzip, then trailing zero padding (ignored)
    data = gzip.compress(b"one ") + gzip.compress(b"two") + b"\x00" * 8
    dec = ContentDecoder(["gzip"], capture=True)
    for i in range(len(data)):
        dec.feed(data[i:i + 1])
    dec.finish()
    assert (dec.failed, dec.take(), dec.decoded_size, dec.raw_size) == (False, b"one two", 7, len(data))
    # multi-frame zstd
    z = zstandard.ZstdCompressor()
    dec = ContentDecoder(["zstd"], capture=True)
    dec.feed(z.compress(b"a" * 10) + z.compress(b"b" * 5))
    dec.finish()
    assert dec.take() == b"a" * 10 + b"b" * 5 and not dec.truncated
    # a decompression bomb is counted without being held
    bomb = gzip.compress(bytes(50 << 20))
    dec = ContentDecoder(["gzip"])
    dec.feed(bomb)
    dec.finish()
    assert dec.decoded_size == 50 << 20 and dec.take() == b""
    # broken brotli stops decoding, never raises
    dec = ContentDecoder(["br"], capture=True)
    dec.feed(b"\xff" * 64)
    dec.finish()
    assert dec.failed and dec.decoded_size == 64 and dec.take() == b"\xff" * 64
    assert not dec.truncated


def test_content_decoder_hands_on_pieces_as_they_come() -> None:
    """Captured bytes leave as they are produced: nothing accumulates between takes, the
    raw bytes held for the fallback go with the first take, and the cut is marked."""
    plain = bytes(range(256)) * 4096  # 1 MiB
    data = gzip.compress(plain)
    dec = ContentDecoder(["gzip"], capture=True, max_capture=300_000)
    taken = []
    for i in range(0, len(data), 1000):
        dec.feed(data[i:i + 1000])
        taken.append(dec.take())
        assert not dec._out and dec._raw_buf is None  # held nothing after a take
    dec.finish()
    taken.append(dec.take())
    assert b"".join(taken) == plain[:300_000] and dec.truncated
    assert dec.decoded_size == len(plain)
    # identity: the same, without any raw copy
    dec = ContentDecoder([], capture=True, max_capture=10)
    dec.feed(b"0123456789")
    assert dec.take() == b"0123456789" and not dec.truncated and dec._raw_buf is None
    dec.feed(b"x")
    assert dec.take() == b"" and dec.truncated


def test_content_decoder_falls_back_to_raw_only_before_anything_was_handed_on() -> None:
    # Not gzip at all: the raw bytes are the body, and later raw bytes follow them.
    dec = ContentDecoder(["gzip"], capture=True, max_capture=8)
    dec.feed(b"plain ")
    dec.feed(b"text")
    dec.finish()
    assert dec.failed and dec.take() == b"plain te" and dec.truncated
    # Broken after decoded bytes were handed on: the body stops there, marked truncated.
    good = gzip.compress(b"hello world")
    dec = ContentDecoder(["gzip"], capture=True)
    dec.feed(good[:-8])
    first = dec.take()
    dec.feed(b"\xff" * 16)  # a bad gzip trailer
    dec.finish()
    assert first == b"hello world" and dec.failed and dec.take() == b"" and dec.truncated
    assert dec.decoded_size == dec.raw_size == len(good) + 8


# ---------------------------------------------------------------------------
# Robustness


@given(client=st.lists(st.binary(max_size=64), max_size=8),
       server=st.lists(st.binary(max_size=64), max_size=8),
       prefix=st.sampled_from([b"", req(), req("POST", "/", "Content-Length: 5\r\n"),
                               req(headers="Transfer-Encoding: chunked\r\n")]),
       eofs=st.booleans())
def test_fuzz_never_raises(client: list[bytes], server: list[bytes], prefix: bytes,
                           eofs: bool) -> None:
    obs = Http1Observer(capture_bodies=True)
    obs.client_data(prefix, 0.0)
    for i in range(max(len(client), len(server))):
        if i < len(client):
            obs.client_data(client[i], float(i))
        if i < len(server):
            obs.server_data(b"HTTP/1.1 " + server[i] if i == 0 else server[i], float(i))
    if eofs:
        obs.client_eof(9.0)
        obs.server_eof(9.0)
    events = obs.events()
    assert all(isinstance(e, (RequestHead, RequestEnd, ResponseHead, ResponseEnd, BodyData,
                              ProtocolError))
               for e in events)
    assert obs.failed or obs.error is None
    # A failure is said exactly once, as an event.
    errors = [e for e in events if isinstance(e, ProtocolError)]
    assert [e.error for e in errors] == ([obs.error] if obs.failed else [])


_exchange = st.tuples(
    st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
    st.sampled_from(["none", "length", "chunked"]),
    st.binary(max_size=40),
    st.sampled_from([200, 204, 304, 404, 100]),        # 100: a 100 Continue, then 200
    st.sampled_from(["length", "chunked"]),
    st.binary(max_size=40),
)


def _frame(kind: str, body: bytes) -> tuple[str, bytes]:
    if kind == "chunked":
        return "Transfer-Encoding: chunked\r\n", chunked(body[:7], body[7:], trailers="T: 1\r\n")
    if kind == "length":
        return f"Content-Length: {len(body)}\r\n", body
    return "", b""


@given(exchanges=st.lists(_exchange, min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
       pipelined=st.booleans(), mutate=st.none() | st.tuples(st.integers(0, 4000), st.binary(
           min_size=1, max_size=3)))
def test_fuzz_valid_exchanges_any_chunking(exchanges: list, cuts: list[int], pipelined: bool,
                                           mutate: tuple[int, bytes] | None) -> None:
    """Generated exchanges decode to the expected events however they are cut;
    with a few bytes overwritten, decoding fails or goes on, but never raises."""
    client, server, expected = [], [], []
    for method, qkind, qbody, status, rkind, rbody in exchanges:
        qh, qb = _frame(qkind if method != "GET" else "none", qbody)
        client.append(req(method, "/", "Host: a\r\n" + qh, qb))
        head = b""
        if status == 100:
            head, status = resp(100, reason="Continue"), 200
        rh, rb = _frame(rkind, rbody)
        if method == "HEAD" or status in (204, 304):
            rb = b""
        server.append(head + resp(status, rh, rb))
        bodyless = method == "HEAD" or status in (204, 304)
        expected.append((len(qbody) if qh else 0,
                         0 if bodyless else len(rbody)))
    if pipelined:
        streams = [(C, b"".join(client)), (S, b"".join(server))]
    else:
        streams = [step for pair in zip(client, server) for step in ((C, pair[0]), (S, pair[1]))]
    if mutate is not None:
        where, what = mutate
        side, data = streams[0]
        where %= len(data)
        streams[0] = (side, data[:where] + what + data[where + len(what):])
    obs = Http1Observer()
    for side, data in streams:
        feed = obs.client_data if side == C else obs.server_data
        edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
        for a, b in zip(edges, edges[1:]):
            feed(data[a:b], 0.0)
    events = obs.events()
    if mutate is not None:
        return
    assert not obs.failed, obs.error
    ends_q = [e.body_size for e in events if isinstance(e, RequestEnd)]
    ends_r = [e.body_size for e in events if isinstance(e, ResponseEnd)]
    assert list(zip(ends_q, ends_r)) == expected


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_fuzz_raw_bytes(client: bytes, server: bytes) -> None:
    obs = Http1Observer()
    obs.client_data(client, 0.0)
    obs.server_data(server, 0.0)
    obs.server_eof(1.0)
    obs.events()


@given(st.binary(max_size=200), st.sampled_from(["gzip", "deflate", "br", "zstd", "gzip, br"]))
def test_fuzz_content_decoder(data: bytes, coding: str) -> None:
    dec = ContentDecoder(parse_content_encoding([coding]), capture=True, max_capture=50)
    dec.feed(data)
    dec.finish()
    assert dec.raw_size == len(data)
    assert len(dec.take()) <= 50


def test_large_body_is_counted_not_kept() -> None:
    """64 MiB in 64 KiB pieces: counted, and nothing grows with the body."""
    total, piece = 64 << 20, b"x" * 65536
    obs = Http1Observer()
    obs.client_data(req(), 0.0)
    obs.server_data(resp(headers=f"Content-Length: {total}\r\n"), 0.0)
    for _ in range(total // len(piece)):
        obs.server_data(piece, 0.0)
    events = obs.events()
    assert events[-1].body_size == total and not any(isinstance(e, BodyData) for e in events)


def test_captured_body_leaves_as_it_arrives() -> None:
    """With capture on, each piece fed is handed on as BodyData at once (the observer
    holds none of it), ahead of the end event; the cut at max_capture is marked."""
    obs = Http1Observer(capture_bodies=True, max_capture=150_000)
    obs.client_data(req(), 0.0)
    obs.server_data(resp(headers="Content-Length: 200000\r\n"), 0.0)
    obs.events()
    pieces = []
    for i in range(4):
        obs.server_data(bytes([i]) * 50_000, 0.0)
        events = obs.events()
        if i < 3:
            assert [type(e) for e in events] == [BodyData]
            pieces.append(events[0].data)
    assert [type(e) for e in events] == [ResponseEnd] and events[0].truncated
    assert b"".join(pieces) == b"\x00" * 50_000 + b"\x01" * 50_000 + b"\x02" * 50_000


@given(st.lists(st.sampled_from([b"\r", b"\n", b"a"]), max_size=40).map(b"".join),
       st.integers(0, 10), st.integers(0, 45))
def test_head_end_agrees_with_the_pattern(data: bytes, start: int, end: int) -> None:
    """The empty line that ends a head: ``head_end`` (two finds) is the first match of
    ``\\r?\\n\\r?\\n`` within [start, end)."""
    import re

    from httptap.http.h1heads import head_end

    m = re.compile(rb"\r?\n\r?\n").search(data, start, end)
    assert head_end(data, start, end) == (m.end() if m else -1)
    assert head_end(bytearray(data), start, end) == (m.end() if m else -1)


@given(st.binary(max_size=3000), st.lists(st.integers(1, 500), max_size=20),
       st.integers(0, 4000), st.sampled_from(["gzip", "br", "zstd", "identity"]))
def test_fuzz_captured_pieces_join_to_the_kept_prefix(plain: bytes, cuts: list[int], keep: int,
                                                      coding: str) -> None:
    """However the body is split, what take() hands on joins to the first ``keep`` decoded
    bytes, and ``truncated`` says exactly whether there were more."""
    packed = {"gzip": gzip.compress, "br": brotli.compress,
              "zstd": zstandard.ZstdCompressor().compress, "identity": bytes}[coding](plain)
    dec = ContentDecoder(parse_content_encoding([coding]), capture=True, max_capture=keep)
    taken, pos = [], 0
    for cut in cuts + [len(packed)]:
        dec.feed(packed[pos:pos + cut])
        taken.append(dec.take())
        pos += cut
    dec.feed(packed[pos:])
    dec.finish()
    taken.append(dec.take())
    assert not dec.failed and dec.decoded_size == len(plain)
    assert b"".join(taken) == plain[:keep] and dec.truncated == (len(plain) > keep)


def test_an_internal_error_is_contained_and_named() -> None:
    """A bug in a reader (not an HttpError) must not escape into the relay: the observer
    fails with "internal error: ..." and says so in a ProtocolError, as HTTP/2's does."""
    from httptap.http.events import ProtocolError

    obs = Http1Observer()

    class BrokenSide:
        """The real request side with a feed that fails (a compiled RequestSide's methods
        cannot be replaced one by one)."""

        def __init__(self, side: object) -> None:
            self.side = side

        def feed(self, data: bytes, now: float) -> None:
            raise ValueError("a bug")

        def __getattr__(self, name: str) -> object:
            return getattr(self.side, name)

    obs._req = BrokenSide(obs._req)  # type: ignore[assignment]
    obs.client_data(b"GET / HTTP/1.1\r\n\r\n", 1.0)
    assert obs.failed and obs.error == "internal error: ValueError: a bug"
    assert [e for e in obs.events() if isinstance(e, ProtocolError)][0].error == obs.error


def test_switch_proposals_and_what_accepts_them() -> None:
    from httptap.http.h1heads import Framing
    from httptap.http.h1readers import Switch

    assert Switch.proposed("CONNECT", Framing([])) is Switch.CONNECT
    assert Switch.proposed("GET", Framing([("Upgrade", "websocket"),
                                          ("Connection", "Upgrade")])) is Switch.UPGRADE
    assert Switch.proposed("GET", Framing([])) is Switch.NONE
    assert Switch.CONNECT.accepted_by(200) and not Switch.CONNECT.accepted_by(407)
    assert Switch.UPGRADE.accepted_by(101) and not Switch.UPGRADE.accepted_by(200)
    assert not Switch.NONE.accepted_by(200)


def test_body_framing_table() -> None:
    """Each head's framing picks its body reader from the table (h11's READERS shape)."""
    from httptap.http.h1heads import Framing, HttpError
    from httptap.http.h1readers import (BODY_READERS, Body, ChunkedReader,
                                        ContentLengthReader, UntilCloseReader, request_body,
                                        response_body)

    assert BODY_READERS == {Body.LENGTH: ContentLengthReader, Body.CHUNKED: ChunkedReader,
                            Body.UNTIL_CLOSE: UntilCloseReader}
    length = Framing([("Content-Length", "12")])
    chunked = Framing([("Transfer-Encoding", "gzip, chunked"), ("Content-Length", "12")])
    other_te = Framing([("Transfer-Encoding", "gzip")])
    assert request_body(Framing([])) == (Body.LENGTH, 0)
    assert request_body(length) == (Body.LENGTH, 12)
    assert request_body(chunked) == (Body.CHUNKED, 0)
    with pytest.raises(HttpError, match="invalid Transfer-Encoding"):
        request_body(other_te)
    assert response_body("GET", 200, length) == (Body.LENGTH, 12)
    assert response_body("GET", 200, chunked) == (Body.CHUNKED, 0)
    assert response_body("GET", 200, other_te) == (Body.UNTIL_CLOSE, 0)
    assert response_body("GET", 200, Framing([])) == (Body.UNTIL_CLOSE, 0)
    for method, status in (("HEAD", 200), ("GET", 204), ("GET", 304), ("HEAD", 404)):
        assert response_body(method, status, chunked) == (Body.LENGTH, 0)


@given(st.lists(st.sampled_from(["\r", "\n", "\r\n", ":", " ", "\t", "a", "Host", "x-y",
                                 "é", "@", "Server: nginx\r\n"]), max_size=30).map("".join))
def test_parse_block_agrees_with_the_whole_block_pattern(block: str) -> None:
    """``parse_block``'s fast path (name parts checked line by line, cached) gives what the
    whole-block pattern and its loop gave, and everything else is parsed line by line."""
    import re

    from httptap.http.h1heads import TCHAR, HttpError, parse_block, parse_fields

    def reference(block: str) -> list[tuple[str, str]]:
        if re.fullmatch(rf"(?:[{TCHAR}]+[ \t]*:[^\r\n]*\r?\n)*", block):
            return [(name.rstrip(" \t"), value.strip(" \t\r"))
                    for name, _, value in (line.partition(":")
                                           for line in block.split("\n")[:-1])]
        return parse_fields([line[:-1] if line.endswith("\r") else line
                             for line in block.split("\n")], "request head")

    for _ in range(2):  # the second time, the name parts come from the cache
        try:
            expected = reference(block)
        except HttpError as exc:
            with pytest.raises(HttpError, match=str(exc)):
                parse_block(block, "request head")
        else:
            assert parse_block(block, "request head") == expected


@given(st.lists(st.tuples(
    st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH", "Transfer-Encoding",
                     "Connection", "connection", "Upgrade", "Content-Encoding", "Server", "X-A"]),
    st.lists(st.sampled_from(["0", "7", "12", "1" * 19, "1" * 20, "٣", ",", " ", "\t", "close",
                              "Keep-Alive", "chunked", "gzip", "identity", ""]),
             max_size=4).map("".join)), max_size=6))
def test_framing_agrees_with_the_rules(headers: list[tuple[str, str]]) -> None:
    """``Framing``'s shortcuts (cached name lookups, one plain Content-Length number) say
    what RFC 9112's rules, written out plainly here, say."""
    from httptap.http.h1heads import Framing, HttpError

    def values(name: str) -> list[str]:
        return [v for n, v in headers if n.lower() == name]

    def items(name: str) -> list[str]:
        return [i.strip(" \t") for v in values(name) for i in v.split(",")]

    lengths = items("content-length")
    if any(not (i.isascii() and i.isdigit() and len(i) <= 19) for i in lengths) \
            or len({int(i) for i in lengths}) > 1:
        with pytest.raises(HttpError, match="invalid Content-Length"):
            Framing(headers)
        return
    f = Framing(headers)
    te = [i.lower() for i in items("transfer-encoding") if i]
    assert f.te == bool(values("transfer-encoding"))
    assert f.chunked == (f.te and bool(te) and te[-1] == "chunked")
    assert f.length == (None if f.te or not lengths else int(lengths[0]))
    assert f.close == ("close" in [i.lower() for i in items("connection")])
    assert f.keep_alive == ("keep-alive" in [i.lower() for i in items("connection")])
    assert f.upgrade == bool(values("upgrade"))
    assert f.codings == [i.lower() for i in items("content-encoding")
                         if i and i.lower() != "identity"]


def test_head_caches_stay_bounded() -> None:
    """The caches of field lines and names seen hold a bounded number of short keys,
    whatever the peers send, and parsing gives the same fields with them full."""
    from httptap.http import h1heads

    for i in range(3000):
        block = f"X-{i}: {i}\r\nX-Long-{'a' * 300}-{i}: {'b' * 300}\r\nHost: h\r\n"
        assert h1heads.parse_block(block, "request head") == [
            (f"X-{i}", str(i)), (f"X-Long-{'a' * 300}-{i}", "b" * 300), ("Host", "h")]
        h1heads.Framing([(f"Name-{i}", "v"), ("N" * 300, "v")])
    for cache, most in ((h1heads._LINES, h1heads._MAX_LINES),
                        (h1heads._NAMES, h1heads._MAX_NAMES),
                        (h1heads._FIELD_OF, h1heads._MAX_NAMES)):
        assert 0 < len(cache) <= most
        assert max(len(key) for key in cache) <= h1heads._MAX_KEY
