"""Every cross-process message round-trips through the one codec."""

from __future__ import annotations

import pytest

from httptap.plumbing import messages as m

SAMPLES: list[m.Msg] = [
    m.Packets([b"\x45" + bytes(39), b""]),
    m.FlowOpened(1, "10.1.1.100", 40000, "93.184.215.14", 443),
    m.FlowOpened(2, "fd01:1:1::100", 40001, "2001:db8::1", 80, transport="udp"),
    m.FlowAccept(1),
    m.FlowRefuse(1, "Connection refused"),
    m.FlowRefuse(1, "timed out", reset=False),
    m.FlowData(1, b"GET / HTTP/1.1\r\n\r\n"),
    m.FlowEof(1),
    m.FlowReset(1, "upstream: reset"),
    m.FlowAcked(1, 65536),
    m.FlowClosed(1),
    m.DatagramIn("10.1.1.100", 5353, "10.1.1.1", 53, b"\x12\x34"),
    m.DatagramOut("10.1.1.1", 53, "10.1.1.100", 5353, b"\x12\x34"),
    m.HttpRequest(7, 1.5, "GET", "http://x/", "HTTP/1.1", [("Host", "x")], "10.1.1.100:1",
                  "1.2.3.4:80", tls_sni="x", tls_alpn="h2"),
    m.BodyChunk(7, False, b"ok"),
    m.HttpResponseHead(7, 2.25, 200, "OK", "HTTP/1.1", [("Content-Type", "text/event-stream")]),
    m.HttpResponse(7, 2.5, 200, "OK", "HTTP/1.1", [("Content-Length", "2")], 0, 2, 2,
                   request_headers_done=1.5, request_done=1.6, response_started=2.0,
                   body_truncated=True),
    m.HttpExchange(
        m.HttpRequest(8, 1.5, "GET", "http://x/y", "HTTP/1.1", [("Host", "x")], "10.1.1.100:1",
                      "1.2.3.4:80"),
        m.HttpResponse(8, 1.75, 404, "Not Found", "HTTP/1.1", [], 0, 9, 9, error="")),
    m.TcpSummary(1.0, "10.1.1.100:1", "1.2.3.4:22", 10, 20, 0.5),
    m.DnsExchange(1.0, "example.com.", "A", ["93.184.215.14"], "NOERROR"),
    m.Notice("error", "TLS to x failed"),
    m.WsMessage(7, 3.0, "ws://x/chat", True, 1, 5, b"hello"),
    m.WsMessage(7, 3.5, "wss://x/chat", False, 8, 5, b"\x03\xe8bye", close_code=1000,
                close_reason="bye"),
    m.WsMessage(7, 3.6, "ws://x/chat", False, 2, 1 << 30, bytes(65536), truncated=True,
                compressed=True),
    m.WsEnd(7, 4.0, "ws://x/chat", 2, 3, pings_sent=1, pongs_received=1, error="bad"),
    m.StatsSnapshot(1.5, [{"name": "tcp", "packets_in": 3, "cpu_s": 0.25}]),
    m.Drain(),
]


def test_the_samples_cover_every_message_type():
    assert {type(s) for s in SAMPLES} == set(m.ALL_TYPES)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_every_type_round_trips(msg):
    assert m.decode(m.encode(msg)) == msg
    assert m.decode(memoryview(m.encode(msg))) == msg  # as consumers read it from a ring


@pytest.mark.parametrize("flow", [0, 1, 127, 128, 65535, 1 << 40])
@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 300_000])
def test_flow_data_header_is_the_encoding_up_to_the_payload(flow: int, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    header = m.flow_data_header(flow, size)
    assert header + data == m.encode(m.FlowData(flow, data))


def test_a_full_body_chunk_is_far_below_a_ring_record():
    """With the supervisor's rings (the smallest record limit in a run), a BodyChunk of
    BODY_CHUNK bytes and a large exchange id fits with room to spare."""
    from httptap.plumbing.ring import Ring
    from httptap.run.supervisor import RING_CAPACITY

    size = len(m.encode(m.BodyChunk(1 << 62, True, bytes(m.BODY_CHUNK))))
    assert size < m.BODY_CHUNK + 64
    with Ring(RING_CAPACITY, label="test") as ring:
        assert size * 2 < ring.max_record


def test_the_largest_heads_the_observers_accept_fit_a_ring_record():
    """Heads are bounded by the observers (HTTP/1: MAX_HEAD for the whole head; HTTP/2:
    MAX_HEADER_LIST for the decoded list, the URL included), so a message built from one
    fits a ring record with room to spare, whatever the peers send."""
    from httptap.http.http1 import MAX_HEAD
    from httptap.http.http2 import MAX_HEADER_LIST
    from httptap.run.supervisor import RING_CAPACITY

    for limit in (MAX_HEAD, MAX_HEADER_LIST):
        fields = [(f"x-{i:05d}", "v" * 100) for i in range(limit // 110)]  # "n: v\r\n"
        url = "https://h/" + "p" * limit
        request = m.HttpRequest(1 << 62, 1.5, "GET", url, "HTTP/2", fields, "c" * 60, "s" * 60,
                                tls_sni="n" * 255, tls_alpn="h2")
        response = m.HttpResponse(1 << 62, 2.5, 200, "r" * limit, "HTTP/2", fields, 1 << 40,
                                  1 << 40, 1 << 40, error="e" * 200)
        for msg in (request, response):  # the URL and the fields each at the limit
            assert len(m.encode(msg)) < RING_CAPACITY // 4 * 0.6


def test_the_largest_h2_response_with_trailers_and_its_streamed_head_fit_a_ring_record():
    """An HTTP/2 response's headers and its trailers are two header lists, each bounded
    by MAX_HEADER_LIST (the reason is always empty): both at the limit still fit a ring
    record, and so does the HttpResponseHead sent for a streamed body."""
    from httptap.http.http2 import MAX_HEADER_LIST
    from httptap.plumbing.ring import Ring
    from httptap.run.supervisor import RING_CAPACITY

    fields = [(f"x-{i:05d}", "v" * 100) for i in range(MAX_HEADER_LIST // 138)]  # + 32 each
    response = m.HttpResponse(1 << 62, 2.5, 200, "", "HTTP/2", fields, 1 << 40, 1 << 40,
                              1 << 40, error="e" * 200, trailers=fields)
    head = m.HttpResponseHead(1 << 62, 2.5, 200, "", "HTTP/2", fields)
    with Ring(RING_CAPACITY, label="test") as ring:
        assert len(m.encode(response)) < ring.max_record * 0.75
        assert len(m.encode(head)) < ring.max_record * 0.4


def test_a_ws_message_always_fits_a_ring_record() -> None:
    """The largest WsMessage the proxy can make (the most data kept, a URL as long as a
    request head allows) is far below the largest record of the proxy -> sink ring."""
    from httptap.http.http1 import MAX_HEAD
    from httptap.run.supervisor import RING_CAPACITY
    from httptap.http.websocket import MAX_KEPT

    worst = m.WsMessage(1 << 40, 1e9, "wss://" + "x" * MAX_HEAD, False, 2, 1 << 62,
                        bytes(MAX_KEPT), truncated=True, close_reason="r" * 123)
    assert len(m.encode(worst)) < RING_CAPACITY // 4 // 4
