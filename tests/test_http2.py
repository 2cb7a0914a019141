"""Tests for the passive HTTP/2 observer (httptap.http.http2).

Traffic is real: two ``h2.H2Connection`` objects, a client and a server,
talk to each other in memory (:class:`Pair`) and every chunk of bytes each
one sends is recorded as a step of a script. ``run`` plays the script to an
observer whole and in uneven 1..7-byte pieces and checks that both event
lists agree before returning them.
"""

from __future__ import annotations

import gzip

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from httptap.http.http1 import (BodyData, ProtocolError, RequestEnd, RequestHead, ResponseEnd,
                                ResponseHead)
from httptap.http.http2 import PREFACE, Http2Observer, StreamReset
from httptap.http.report import ExchangeReporter
from httptap.plumbing import messages

from observer_play import CE, SE, C, S, Events, play
Script = list[tuple[str, bytes]]


class Pair:
    """An h2 client and server over a fake link; every chunk sent is recorded."""

    def __init__(self, client_settings: dict[int, int] | None = None,
                 server_settings: dict[int, int] | None = None) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        if client_settings:
            self.client.local_settings.update(client_settings)
        if server_settings:
            self.server.local_settings.update(server_settings)
        self.script: Script = []
        self.received: list[h2.events.Event] = []   # events the client saw
        self.server_events: list[h2.events.Event] = []
        self.client.initiate_connection()
        self.server.initiate_connection()
        self.pump()

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to send."""
        while True:
            moved = False
            out = self.client.data_to_send()
            if out:
                moved = True
                self.script.append((C, out))
                for ev in self.server.receive_data(out):
                    self.server_events.append(ev)
                    if isinstance(ev, h2.events.DataReceived):
                        self.server.acknowledge_received_data(ev.flow_controlled_length,
                                                              ev.stream_id)
            out = self.server.data_to_send()
            if out:
                moved = True
                self.script.append((S, out))
                for ev in self.client.receive_data(out):
                    self.received.append(ev)
                    if isinstance(ev, h2.events.DataReceived):
                        self.client.acknowledge_received_data(ev.flow_controlled_length,
                                                              ev.stream_id)
            if not moved:
                return

    def request(self, sid: int, method: str = "GET", path: str = "/",
                headers: list[tuple[str, str]] | None = None, end: bool = True) -> None:
        self.client.send_headers(sid, [(":method", method), (":scheme", "https"),
                                       (":authority", "example.com"), (":path", path)]
                                 + (headers or []), end_stream=end)

    def respond(self, sid: int, status: int = 200, headers: list[tuple[str, str]] | None = None,
                end: bool = False) -> None:
        self.server.send_headers(sid, [(":status", str(status))] + (headers or []),
                                 end_stream=end)

    def send_body(self, conn: h2.connection.H2Connection, sid: int, body: bytes,
                  end: bool = True, size: int = 16384) -> None:
        """Send ``body`` in frames of at most ``size`` bytes, pumping as windows allow."""
        for i in range(0, len(body), size):
            conn.send_data(sid, body[i:i + size], end_stream=end and i + size >= len(body))
            self.pump()
        if not body and end:
            conn.end_stream(sid)
            self.pump()


def _play(script: list[tuple[str, bytes]], split: str, **kw: object) -> tuple[Events, Http2Observer]:
    obs = Http2Observer(**kw)  # type: ignore[arg-type]
    return play(obs, script, split), obs


def run(script: Script, **kw: object) -> tuple[Events, Http2Observer]:
    """Play ``script`` whole and in 1..7-byte pieces; all must agree."""
    whole, obs = _play(script, "whole", **kw)
    for split in ("uneven", "random"):
        other, obs2 = _play(script, split, **kw)
        assert other == whole, split
        assert (obs2.failed, obs2.error) == (obs.failed, obs.error), split
    assert not obs.failed, obs.error
    return whole, obs


def kinds(events: list) -> list[str]:
    short = {RequestHead: "Q", RequestEnd: "q", ResponseHead: "R", ResponseEnd: "r",
             StreamReset: "X", ProtocolError: "E"}
    return [f"{short[type(e)]}{getattr(e, 'seq', '')}" for e in events]


# ---------------------------------------------------------------------------
# Exchanges


def test_get_with_response_body() -> None:
    p = Pair()
    p.request(1, headers=[("user-agent", "t/1"), ("accept", "*/*")])
    p.pump()
    p.respond(1, headers=[("content-type", "text/plain"), ("content-length", "11")])
    p.send_body(p.server, 1, b"hello world")
    events, _ = run(p.script, capture_bodies=True)
    assert kinds(events) == ["Q1", "q1", "R1", "r1"]
    q, qe, r, re_ = events
    assert (q.method, q.target, q.version) == ("GET", "/", "HTTP/2")
    assert q.headers == [("host", "example.com"), ("user-agent", "t/1"), ("accept", "*/*")]
    assert (qe.body_size, qe.complete) == (0, True)
    assert (r.status, r.reason, r.version, r.informational) == (200, "", "HTTP/2", False)
    assert r.headers == [("content-type", "text/plain"), ("content-length", "11")]
    assert (re_.body_size, re_.decoded_size, re_.complete) == (11, 11, True)
    assert events.bodies == {(1, False): b"hello world"}
    assert q.time < r.time


def test_host_header_is_not_duplicated() -> None:
    p = Pair()
    p.request(1, headers=[("accept", "*/*"), ("host", "example.com")])
    p.client.send_headers(3, [(":method", "GET"), (":scheme", "https"), (":path", "/"),
                              ("host", "other.example")], end_stream=True)
    p.pump()
    events, _ = run(p.script)
    assert events[0].headers == [("accept", "*/*"), ("host", "example.com")]
    assert events[2].headers == [("host", "other.example")]


def test_post_with_body() -> None:
    body = bytes(range(256)) * 300         # 76,800 bytes: needs WINDOW_UPDATEs
    p = Pair()
    p.request(1, "POST", "/upload?x=1", headers=[("content-type", "application/octet-stream")],
              end=False)
    p.send_body(p.client, 1, body)
    p.respond(1, 201, end=True)
    p.pump()
    events, _ = run(p.script, capture_bodies=True)
    assert kinds(events) == ["Q1", "q1", "R1", "r1"]
    assert (events[0].method, events[0].target) == ("POST", "/upload?x=1")
    assert (events[1].body_size, events.body(1, request=True)) == (len(body), body)
    assert (events[2].status, events[3].body_size, events.body(1)) == (201, 0, b"")


def test_concurrent_streams_interleaved() -> None:
    p = Pair()
    for sid in (1, 3, 5):
        p.request(sid, path=f"/s{sid}")
    p.pump()
    for sid in (5, 1, 3):
        p.respond(sid)
    p.pump()
    for round_ in range(3):
        for sid in (3, 5, 1):
            p.server.send_data(sid, f"{sid}:{round_};".encode() * 100,
                               end_stream=round_ == 2 and sid != 1)
            p.pump()
    p.server.end_stream(1)
    p.pump()
    events, _ = run(p.script, capture_bodies=True)
    assert kinds(events) == ["Q1", "q1", "Q3", "q3", "Q5", "q5", "R5", "R1", "R3",
                             "r3", "r5", "r1"]
    ends = {e.seq: e for e in events if isinstance(e, ResponseEnd)}
    for sid in (1, 3, 5):
        expected = b"".join(f"{sid}:{r};".encode() * 100 for r in range(3))
        assert events.body(sid) == expected and ends[sid].body_size == len(expected)


def test_trailers() -> None:
    p = Pair()
    p.request(1, "POST", headers=[("te", "trailers")], end=False)
    p.client.send_data(1, b"abc")
    p.client.send_headers(1, [("x-req-trailer", "1")], end_stream=True)
    p.pump()
    p.respond(1, headers=[("content-type", "application/grpc")])
    p.server.send_data(1, b"\x00\x00\x00\x00\x00")
    p.server.send_headers(1, [("grpc-status", "0"), ("grpc-message", "ok")], end_stream=True)
    p.pump()
    events, _ = run(p.script)
    assert kinds(events) == ["Q1", "q1", "R1", "r1"]
    assert events[1].trailers == [("x-req-trailer", "1")] and events[1].body_size == 3
    assert events[3].trailers == [("grpc-status", "0"), ("grpc-message", "ok")]
    assert events[3].body_size == 5


def test_gzip_response_decoded_size() -> None:
    plain = b"The quick brown fox jumps over the lazy dog. " * 2000
    packed = gzip.compress(plain)
    p = Pair()
    p.request(1, headers=[("accept-encoding", "gzip")])
    p.pump()
    p.respond(1, headers=[("content-encoding", "gzip")])
    p.send_body(p.server, 1, packed, size=1000)
    events, _ = run(p.script)
    end = events[-1]
    assert (end.body_size, end.decoded_size, events.bodies) == (len(packed), len(plain), {})
    events, _ = run(p.script, capture_bodies=True, max_capture=100)
    assert events.body(1) == plain[:100] and events[-1].truncated
    events, _ = run(p.script, decode_content=False)
    assert events[-1].decoded_size == len(packed)


def test_padded_data_and_headers() -> None:
    p = Pair()
    p.request(1)
    p.pump()
    p.respond(1)
    p.server.send_data(1, b"abcdef", pad_length=10)
    p.server.send_data(1, b"", pad_length=3)
    p.server.send_data(1, b"gh", end_stream=True, pad_length=0)
    p.pump()
    events, _ = run(p.script, capture_bodies=True)
    assert (events[-1].body_size, events.body(1)) == (8, b"abcdefgh")


def test_rst_stream() -> None:
    p = Pair()
    p.request(1)                            # reset before any response
    p.request(3)                            # reset in the middle of the response body
    p.request(5, "PUT", end=False)          # the server answers early, then resets
    p.pump()
    p.client.reset_stream(1, 8)             # CANCEL
    p.respond(3)
    p.server.send_data(3, b"partial")
    p.pump()
    p.client.reset_stream(3, 8)
    p.client.send_data(5, b"xyz")
    p.pump()
    p.respond(5, 413, end=True)
    p.server.reset_stream(5, 0)             # NO_ERROR: stop sending the body
    p.pump()
    events, _ = run(p.script)
    assert kinds(events) == ["Q1", "q1", "Q3", "q3", "Q5", "X1", "R3", "X3", "r3",
                             "R5", "r5", "X5", "q5"]
    x1 = events[5]
    assert (x1.seq, x1.error_code, x1.name, x1.by_client) == (1, 8, "CANCEL", True)
    r3 = events[8]
    assert (r3.body_size, r3.complete) == (7, False)
    x5, q5 = events[11], events[12]
    assert (x5.error_code, x5.by_client, x5.name) == (0, False, "NO_ERROR")
    assert (q5.body_size, q5.complete) == (3, False)


def _reporter() -> ExchangeReporter:
    ids = iter(range(1, 1 << 30))
    return ExchangeReporter(scheme="https", server_host="192.0.2.1", server_port=443,
                            client="10.0.0.2:5000", server="192.0.2.1:443",
                            new_id=lambda: next(ids))


def _report_steps(script: Script) -> list[list[messages.Msg]]:
    """The messages the reporter returns after each step of ``script``."""
    obs, reporter = Http2Observer(), _reporter()
    return [reporter.on_events(play(obs, [step], "whole")) for step in script]


def test_stream_reset_is_reported_when_it_happens() -> None:
    p = Pair()
    p.request(1)
    p.request(3)
    p.pump()
    p.respond(3)
    p.server.send_data(3, b"partial")
    p.pump()
    first_reset = len(p.script)
    p.client.reset_stream(1, 8)             # CANCEL before any response
    p.pump()
    p.client.reset_stream(3, 8)             # CANCEL in the middle of the body
    p.pump()
    p.request(5, "PUT", end=False)
    p.pump()
    p.server.reset_stream(5, 7)             # REFUSED_STREAM by the server
    p.pump()
    steps = _report_steps(p.script)
    responses = [(i, m) for i, msgs in enumerate(steps) for m in msgs
                 if isinstance(m, messages.HttpResponse)]
    assert [(m.exchange, m.status, m.error, m.body_size) for _, m in responses] == [
        (1, 0, "stream reset by the client (CANCEL)", 0),
        (2, 200, "stream reset by the client (CANCEL)", 7),
        (3, 0, "stream reset by the server (REFUSED_STREAM)", 0),
    ]
    # Each in the step that carried its RST_STREAM, not when the connection ends.
    assert [i for i, _ in responses] == [first_reset, first_reset + 1, len(p.script) - 1]


def test_cancelled_streams_do_not_pile_up() -> None:
    p = Pair()
    obs, reporter = Http2Observer(), _reporter()
    out: list[messages.Msg] = []
    for sid in range(1, 2001, 2):           # 1,000 streams, each cancelled at once
        p.request(sid)
        p.pump()
        p.client.reset_stream(sid, 8)
        p.pump()
        out += reporter.on_events(play(obs, p.script, "whole"))
        p.script.clear()
        assert not reporter.open and not obs.streams
    errors = [m.error for m in out if isinstance(m, messages.HttpResponse)]
    assert errors == ["stream reset by the client (CANCEL)"] * 1000


def test_protocol_error_ends_open_exchanges_with_its_name() -> None:
    p = Pair()
    p.request(1)
    p.pump()
    p.respond(1)
    p.server.send_data(1, b"partial")
    p.pump()
    obs, reporter = Http2Observer(), _reporter()
    out = reporter.on_events(play(obs, p.script, "whole"))
    obs.server_data(b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\xff", 9.0)  # bad HPACK
    out += reporter.on_events(obs.events())
    resp = out[-1]
    assert isinstance(resp, messages.HttpResponse)
    assert (resp.status, resp.body_size) == (200, 7) and resp.error.startswith("HPACK")
    assert reporter.finish(10.0, "the connection closed before a response") == []


def test_informational_100_continue() -> None:
    p = Pair()
    p.request(1, "POST", headers=[("expect", "100-continue")], end=False)
    p.pump()
    p.respond(1, 100)
    p.pump()
    p.send_body(p.client, 1, b"payload")
    p.respond(1, 200, end=True)
    p.pump()
    events, _ = run(p.script)
    assert kinds(events) == ["Q1", "R1", "q1", "R1", "r1"]
    assert (events[1].status, events[1].informational) == (100, True)
    assert (events[3].status, events[3].informational) == (200, False)


def test_large_headers_need_continuation() -> None:
    big = [(f"x-big-{i}", "v" * 3000 + str(i)) for i in range(15)]    # ~45 KB, > 16 KiB frame
    p = Pair()
    p.request(1, headers=big)
    p.pump()
    p.respond(1, headers=big, end=True)
    p.pump()
    frame_types = _frame_types(b"".join(d[len(PREFACE):] if i == 0 else d
                                        for i, (s, d) in enumerate(p.script) if s == C))
    assert 9 in frame_types                 # CONTINUATION was used
    events, _ = run(p.script)
    assert kinds(events) == ["Q1", "q1", "R1", "r1"]
    assert events[0].headers[1:] == big and events[2].headers == big


def _frame_types(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        out.append(data[pos + 3])
        pos += 9 + length
    return out


@pytest.mark.parametrize("size", [0, 256, 65536])
def test_dynamic_table_size_change(size: int) -> None:
    """The client's SETTINGS_HEADER_TABLE_SIZE changes the server's encoder."""
    p = Pair()
    p.client.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: size})
    p.pump()
    for i in range(6):
        sid = 2 * i + 1
        p.request(sid, path=f"/{i}")
        p.pump()
        p.respond(sid, headers=[("x-long", "z" * 3000), (f"x-n{i}", "y" * 500)], end=True)
        p.pump()
    events, _ = run(p.script)
    heads = [e for e in events if isinstance(e, ResponseHead)]
    assert len(heads) == 6
    assert all(e.headers[0] == ("x-long", "z" * 3000) for e in heads)


def test_dynamic_table_used_heavily_across_streams() -> None:
    p = Pair()
    shared = [("server", "demo"), ("cache-control", "private, max-age=0"),
              ("set-cookie", "session=" + "a" * 200), ("x-request-id", "fixed")]
    for i in range(40):
        sid = 2 * i + 1
        p.request(sid, path=f"/item/{i}", headers=[("cookie", "c=" + "b" * 300),
                                                   (f"x-q{i % 5}", str(i % 5))])
        p.pump()
        p.respond(sid, headers=shared + [(f"x-r{i % 7}", str(i % 7))])
        p.send_body(p.server, sid, f"body {i}".encode())
    # The later header blocks are mostly indexed references.
    events, _ = run(p.script, capture_bodies=True)
    heads = [e for e in events if isinstance(e, ResponseHead)]
    assert len(heads) == 40
    for i, head in enumerate(heads):
        assert head.headers == shared + [(f"x-r{i % 7}", str(i % 7))]
    bodies = [events.body(e.seq) for e in events if isinstance(e, ResponseEnd)]
    assert bodies == [f"body {i}".encode() for i in range(40)]
    last = [d for s, d in p.script if s == S][-2]
    assert len(last) < 40                   # the last response head was tiny


def test_push_promise_is_ignored_but_decoded() -> None:
    p = Pair()
    p.request(1)
    p.pump()
    p.server.push_stream(1, 2, [(":method", "GET"), (":scheme", "https"),
                                (":authority", "example.com"), (":path", "/pushed.css"),
                                ("x-push", "p" * 100)])
    p.respond(1, headers=[("x-push", "p" * 100)])
    p.server.send_headers(2, [(":status", "200"), ("x-push", "p" * 100)])
    p.server.send_data(2, b"css", end_stream=True)
    p.server.send_data(1, b"html", end_stream=True)
    p.pump()
    events, _ = run(p.script)
    assert kinds(events) == ["Q1", "q1", "R1", "r1"]
    assert events[2].headers == [("x-push", "p" * 100)]
    assert events[3].body_size == 4


def test_eof_ends_open_messages() -> None:
    p = Pair()
    p.request(1, "POST", end=False)
    p.request(3)
    p.pump()
    p.client.send_data(1, b"12345")
    p.respond(3)
    p.server.send_data(3, b"abc")
    p.pump()
    script = p.script + [(SE, b""), (CE, b"")]
    events, _ = run(script)
    assert kinds(events) == ["Q1", "Q3", "q3", "R3", "r3", "q1"]
    assert (events[4].complete, events[4].body_size) == (False, 3)
    assert (events[5].complete, events[5].body_size) == (False, 5)


def test_connect_target_is_authority() -> None:
    p = Pair()
    p.client.send_headers(1, [(":method", "CONNECT"), (":authority", "db.example:5432")])
    p.pump()
    events, _ = run(p.script)
    assert (events[0].method, events[0].target) == ("CONNECT", "db.example:5432")


def test_memoryview_input() -> None:
    p = Pair()
    p.request(1)
    p.pump()
    p.respond(1, end=False)
    p.send_body(p.server, 1, b"x" * 1000)
    obs = Http2Observer(capture_bodies=True)
    for side, data in p.script:
        (obs.client_data if side == C else obs.server_data)(memoryview(data), 0.0)
    events = obs.events()
    assert kinds([e for e in events if not isinstance(e, BodyData)]) == ["Q1", "q1", "R1", "r1"]
    assert b"".join(e.data for e in events if isinstance(e, BodyData)) == b"x" * 1000


# ---------------------------------------------------------------------------
# Failures


def test_bad_preface_fails() -> None:
    obs = Http2Observer()
    obs.client_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    assert obs.failed and "preface" in (obs.error or "")
    obs2 = Http2Observer()
    obs2.client_data(PREFACE[:5], 0.0)
    assert not obs2.failed
    obs2.client_data(b"X", 0.0)
    assert obs2.failed


def test_server_must_start_with_settings() -> None:
    obs = Http2Observer()
    obs.server_data(b"HTTP/1.1 200 OK\r\n\r\n", 0.0)
    assert obs.failed


def test_hpack_garbage_fails() -> None:
    p = Pair()
    client_start = b"".join(d for s, d in p.script if s == C)
    obs = Http2Observer()
    obs.client_data(client_start, 0.0)
    block = b"\xff\xff\xff\xff\xff"      # an index far beyond any table
    obs.client_data(len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big")
                    + block, 0.0)
    assert obs.failed and (obs.error or "").startswith("HPACK"), obs.error
    assert obs.events() == [ProtocolError(obs.error, 0.0)]


def test_failure_ends_open_streams_with_the_error() -> None:
    p = Pair()
    p.request(1)
    p.pump()
    p.respond(1)
    p.server.send_data(1, b"partial")
    p.request(3)
    p.pump()
    obs = Http2Observer()
    events = play(obs, p.script, "whole")
    obs.server_data(b"\x00\x00\x01\x01\x05\x00\x00\x00\x03\xff", 9.0)  # a bad HPACK block
    events += obs.events()
    assert kinds(events) == ["Q1", "q1", "Q3", "q3", "R1", "E", "r1"]
    error, end = events[-2], events[-1]
    assert isinstance(error, ProtocolError) and error.error.startswith("HPACK")
    assert isinstance(end, ResponseEnd) and (end.seq, end.body_size, end.complete) == (1, 7, False)
    assert obs.streams == {}


@given(st.binary(max_size=400), st.booleans())
def test_fuzz_after_preface(data: bytes, server: bool) -> None:
    obs = Http2Observer(capture_bodies=True)
    obs.client_data(PREFACE, 0.0)
    if server:
        obs.server_data(data, 1.0)
    else:
        obs.client_data(data, 1.0)
    obs.server_eof(2.0)
    obs.client_eof(2.0)
    events = obs.events()
    assert isinstance(events, list)
    assert not (obs.error or "").startswith("internal"), obs.error


_SETTINGS_EMPTY = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@given(st.lists(st.tuples(st.integers(0, 10), st.integers(0, 255), st.integers(0, 7),
                          st.binary(max_size=40)), max_size=12), st.booleans())
def test_fuzz_frames(frames: list[tuple[int, int, int, bytes]], server: bool) -> None:
    """Well-framed but arbitrary frames: events or failed, never an exception."""
    wire = _SETTINGS_EMPTY + b"".join(
        len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big")
        + payload for ftype, flags, sid, payload in frames)
    obs = Http2Observer(capture_bodies=True)
    obs.client_data(PREFACE, 0.0)
    if server:
        obs.client_data(_SETTINGS_EMPTY + b"\x00\x00\x05\x01\x05\x00\x00\x00\x01\x82\x87\x84"
                        b"\x41\x80", 0.0)
        obs.server_data(wire, 1.0)
    else:
        obs.client_data(wire, 1.0)
    obs.server_eof(2.0)
    obs.client_eof(2.0)
    obs.events()
    assert not (obs.error or "").startswith("internal"), obs.error


def test_large_download_is_counted_not_kept() -> None:
    """16 MiB in 16 KiB DATA frames fed in 64 KiB chunks: counted, nothing buffered."""
    p = Pair()
    p.request(1)
    p.pump()
    p.respond(1)
    p.pump()
    frame = (16384).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big") + b"x" * 16384
    stream = frame * 1024
    obs = Http2Observer()
    for side, data in p.script:
        (obs.client_data if side == C else obs.server_data)(data, 0.0)
    for i in range(0, len(stream), 65536):
        obs.server_data(stream[i:i + 65536], 1.0)
        assert len(obs._server.buf) < 16
    obs.server_data(b"\x00\x00\x00\x00\x01" + (1).to_bytes(4, "big"), 2.0)
    events = obs.events()
    assert events[-1].body_size == 16 << 20 and events[-1].complete
