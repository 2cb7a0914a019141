"""Tests for the exchange reporter (httptap.http.report): observer events in, sink messages out.

The part tested here is how bodies leave the proxy: as BodyChunk messages no larger than
``messages.BODY_CHUNK``, in order, before the HttpResponse that closes their exchange,
with the observer's truncation marks carried onto the response.
"""

from __future__ import annotations

import itertools

from httptap.plumbing import messages
from httptap.http.http1 import BodyData, Http1Observer, RequestEnd, RequestHead, ResponseEnd, ResponseHead
from httptap.http.report import ExchangeReporter

MiB = 1 << 20


def reporter() -> ExchangeReporter:
    ids = itertools.count(7)
    return ExchangeReporter(scheme="http", server_host="10.0.0.1", server_port=80,
                            client="10.1.1.100:4000", server="10.0.0.1:80",
                            new_id=lambda: next(ids))


def bodies(msgs: list[messages.Msg]) -> dict[tuple[int, bool], bytes]:
    out: dict[tuple[int, bool], bytes] = {}
    for m in msgs:
        if isinstance(m, messages.BodyChunk):
            out[m.exchange, m.request] = out.get((m.exchange, m.request), b"") + m.data
    return out


def test_bodies_leave_in_chunks_before_the_response_and_every_message_is_small():
    up, down = bytes(range(256)) * (3 * MiB // 256), b"d" * (5 * MiB + 17)
    obs = Http1Observer(capture_bodies=True)
    rep = reporter()
    msgs: list[messages.Msg] = []

    def feed(client: bool, data: bytes) -> None:
        (obs.client_data if client else obs.server_data)(data, 1.0)
        msgs.extend(rep.on_events(obs.events()))

    feed(True, b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(up))
    for i in range(0, len(up), 1000_000):  # pieces over and under BODY_CHUNK
        feed(True, up[i:i + 1000_000])
    feed(False, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(down))
    for i in range(0, len(down), 9000):
        feed(False, down[i:i + 9000])
    kinds = [type(m).__name__ for m in msgs]
    assert kinds[0] == "HttpRequest" and kinds[-1] == "HttpResponse"
    assert set(kinds[1:-1]) == {"BodyChunk"}
    assert all(len(messages.encode(m)) < messages.BODY_CHUNK + 64 for m in msgs)
    # Small pieces arriving one at a time are sent as they come (nothing held back).
    assert any(len(m.data) == 9000 for m in msgs if isinstance(m, messages.BodyChunk))
    assert bodies(msgs) == {(7, True): up, (7, False): down}
    final = msgs[-1]
    assert isinstance(final, messages.HttpResponse)
    assert (final.request_body_size, final.decoded_size) == (len(up), len(down))
    assert not final.request_body_truncated and not final.body_truncated


def test_pieces_arriving_together_are_joined_up_to_the_chunk_size():
    rep = reporter()
    head = RequestHead("GET", "/", "HTTP/1.1", [], 0.0, seq=0)
    events = [head, RequestEnd(0, 0.0, seq=0), ResponseHead(200, "OK", "HTTP/1.1", [], 0.0)]
    events += [BodyData(0, False, b"x" * 1000)] * 600  # 600,000 bytes in small pieces
    events += [ResponseEnd(600_000, 600_000, 1.0, truncated=True)]
    msgs = rep.on_events(events)
    chunks = [m for m in msgs if isinstance(m, messages.BodyChunk)]
    assert [len(c.data) for c in chunks] == [262_000, 262_000, 76_000]
    assert isinstance(msgs[-1], messages.HttpResponse) and msgs[-1].body_truncated


def test_truncation_is_carried_to_the_response_and_to_an_unanswered_request():
    obs = Http1Observer(capture_bodies=True, max_capture=10)
    rep = reporter()
    obs.client_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n" + b"a" * 20, 0.0)
    msgs = rep.on_events(obs.events())
    msgs += rep.finish(2.0, "the connection closed before a response")
    assert bodies(msgs) == {(7, True): b"a" * 10}
    final = msgs[-1]
    assert isinstance(final, messages.HttpResponse)
    assert final.status == 0 and final.request_body_truncated and final.request_body_size == 20
