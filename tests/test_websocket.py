"""The WebSocket core: frames both ways, masking, fragments, control frames, close,
permessage-deflate with and without context takeover, bounded memory, hostile peers."""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsframes import MASK, Deflater, client, frame

from httptap.http.websocket import (
    MAX_KEPT, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, Deflate,
    WebSocketError, WebSocketObserver, WsEvent, parse_deflate, unmask)

T = 100.0


def observer(deflate: Deflate | None = None, keep: bool = True, **kw: int) -> WebSocketObserver:
    return WebSocketObserver(deflate, keep_data=keep, **kw)


def fed_bytewise(obs: WebSocketObserver, from_client: bool, data: bytes) -> list[WsEvent]:
    feed = obs.client_data if from_client else obs.server_data
    for i in range(len(data)):
        feed(data[i:i + 1], T)
    return obs.events()


# --- frames ----------------------------------------------------------------------------------

def test_a_masked_text_from_the_client_and_a_binary_from_the_server():
    obs = observer()
    obs.client_data(client(OP_TEXT, b"hello"), T)
    obs.server_data(memoryview(frame(OP_BINARY, b"\x00\x01\xff")), T + 1)
    assert obs.events() == [WsEvent(True, T, OP_TEXT, 5, b"hello"),
                            WsEvent(False, T + 1, OP_BINARY, 3, b"\x00\x01\xff")]
    assert not obs.failed


def test_unmask_follows_the_key_across_chunk_boundaries():
    data = os.urandom(1000)
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(data))
    assert unmask(masked, MASK, 0) == data
    assert unmask(masked[1:7], MASK, 1) + unmask(masked[7:], MASK, 7) == data[1:]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_every_length_encoding_byte_by_byte_or_whole(size: int):
    payload = bytes(i % 251 for i in range(size))
    wire = client(OP_BINARY, payload) + client(OP_TEXT, b"next")
    whole = observer()
    whole.client_data(wire, T)
    expected = [WsEvent(True, T, OP_BINARY, size, payload[:MAX_KEPT], size > MAX_KEPT),
                WsEvent(True, T, OP_TEXT, 4, b"next")]
    assert whole.events() == expected
    assert fed_bytewise(observer(), True, wire) == expected


def test_a_fragmented_message_with_control_frames_between_its_fragments():
    obs = observer()
    wire = (frame(OP_TEXT, b"Hel", fin=False) + frame(OP_PING, b"are you there")
            + frame(OP_CONTINUATION, b"lo, ", fin=False) + frame(OP_PONG, b"")
            + frame(OP_CONTINUATION, b"world"))
    obs.server_data(wire, T)
    assert obs.events() == [WsEvent(False, T, OP_TEXT, 12, b"Hello, world")]
    assert (obs.server.pings, obs.server.pongs, obs.server.messages) == (1, 1, 1)
    assert (obs.client.pings, obs.client.pongs) == (0, 0)


def test_pings_and_pongs_are_counted_not_reported():
    obs = observer()
    obs.client_data(client(OP_PING, b"1") + client(OP_PING, b"2"), T)
    obs.server_data(frame(OP_PONG, b"1") + frame(OP_PONG, b"2"), T)
    assert obs.events() == []
    assert (obs.client.pings, obs.server.pongs) == (2, 2)


def test_close_with_a_code_and_a_reason_and_without_either():
    obs = observer()
    obs.client_data(client(OP_CLOSE, b"\x03\xe8going away now"), T)
    obs.server_data(frame(OP_CLOSE, b""), T + 1)
    assert obs.events() == [
        WsEvent(True, T, OP_CLOSE, 16, b"\x03\xe8going away now", close_code=1000,
                close_reason="going away now"),
        WsEvent(False, T + 1, OP_CLOSE, 0, b"", close_code=0, close_reason="")]


def test_without_kept_data_sizes_and_close_codes_still_come():
    obs = observer(keep=False)
    obs.client_data(client(OP_TEXT, b"secret"), T)
    obs.server_data(frame(OP_CLOSE, b"\x0f\xa0bye"), T)
    assert obs.events() == [WsEvent(True, T, OP_TEXT, 6, None),
                            WsEvent(False, T, OP_CLOSE, 5, None, close_code=4000,
                                    close_reason="bye")]


def test_a_large_message_is_counted_whole_and_kept_only_in_part():
    obs = observer()
    big = os.urandom(3 * MAX_KEPT + 5)
    wire = frame(OP_BINARY, big[:MAX_KEPT + 1], fin=False) + frame(OP_CONTINUATION, big[MAX_KEPT + 1:])
    for i in range(0, len(wire), 4096):
        obs.server_data(wire[i:i + 4096], T)
        assert len(obs.server.kept) <= MAX_KEPT
    [event] = obs.events()
    assert (event.size, event.data, event.truncated) == (len(big), big[:MAX_KEPT], True)


# --- permessage-deflate ------------------------------------------------------------------------

def test_parse_deflate_reads_the_accepted_parameters():
    assert parse_deflate([]) is None
    assert parse_deflate(["permessage-deflate"]) == Deflate()
    assert parse_deflate(["permessage-deflate; server_no_context_takeover; "
                          "client_no_context_takeover; server_max_window_bits=10; "
                          'client_max_window_bits="9"']) == Deflate(True, True, 9, 10)
    assert parse_deflate(["permessage-deflate; client_max_window_bits"]) == Deflate()


@pytest.mark.parametrize("value", ["x-webkit-deflate-frame", "permessage-deflate; foo=1",
                                   "permessage-deflate; server_max_window_bits=16",
                                   "permessage-deflate; server_max_window_bits=abc",
                                   "permessage-deflate, permessage-deflate"])
def test_parse_deflate_refuses_what_it_cannot_follow(value: str):
    with pytest.raises(WebSocketError):
        parse_deflate([value])


TEXTS = [b"the same words again and again " * 20, b"the same words again and again " * 21,
         b"something else entirely", b""]


@pytest.mark.parametrize("takeover", [True, False])
def test_deflate_messages_both_ways(takeover: bool):
    deflate = Deflate(client_no_context_takeover=not takeover,
                      server_no_context_takeover=not takeover)
    obs = observer(deflate)
    to_server, to_client = Deflater(takeover), Deflater(takeover, wbits=9)
    for text in TEXTS:
        obs.client_data(client(OP_TEXT, to_server.message(text), rsv1=True), T)
        obs.server_data(frame(OP_TEXT, to_client.message(text), rsv1=True), T)
    events = obs.events()
    assert [(e.from_client, e.data, e.size, e.compressed) for e in events] == [
        (side, text, len(text), True) for text in TEXTS for side in (True, False)]
    assert not obs.failed


def test_context_takeover_is_really_needed_by_the_second_message():
    """The second message refers back into the first: an observer that reset its inflater
    between messages (as for no_context_takeover) cannot read it."""
    sender = Deflater(takeover=True)
    first, second = (frame(OP_TEXT, sender.message(t), rsv1=True) for t in TEXTS[:2])
    assert len(second) < 20  # it is almost all back-references
    good = observer(Deflate())
    good.server_data(first + second, T)
    assert [e.data for e in good.events()] == TEXTS[:2]
    wrong = observer(Deflate(server_no_context_takeover=True))
    wrong.server_data(first + second, T)
    assert wrong.failed or [e.data for e in wrong.events()] != TEXTS[:2]


def test_a_compressed_message_in_fragments_and_an_uncompressed_one_between():
    obs = observer(Deflate())
    sender = Deflater()
    data = sender.message(TEXTS[0])
    wire = (client(OP_TEXT, data[:7], fin=False, rsv1=True) + client(OP_PING, b"")
            + client(OP_CONTINUATION, data[7:]) + client(OP_BINARY, b"plain"))
    assert fed_bytewise(obs, True, wire) == [
        WsEvent(True, T, OP_TEXT, len(TEXTS[0]), TEXTS[0], compressed=True),
        WsEvent(True, T, OP_BINARY, 5, b"plain")]


def test_a_message_ended_by_a_final_block_then_a_fresh_stream():
    """RFC 7692 §7.2.3.3: a sender may end a message with BFINAL set; then the next one
    is a new stream."""
    obs = observer(Deflate())
    one = zlib.compressobj(wbits=-15)
    first = one.compress(b"final block") + one.flush(zlib.Z_FINISH)
    second = Deflater().message(b"next message")
    obs.server_data(frame(OP_BINARY, first, rsv1=True) + frame(OP_BINARY, second, rsv1=True), T)
    assert [e.data for e in obs.events()] == [b"final block", b"next message"]


def test_a_deflate_bomb_is_counted_but_memory_stays_bounded():
    obs = observer(Deflate())
    size = 40 << 20
    z = zlib.compressobj(wbits=-15)
    data = b"".join(z.compress(bytes(1 << 20)) for _ in range(size >> 20)) + z.flush(zlib.Z_SYNC_FLUSH)
    obs.server_data(frame(OP_BINARY, data[:-4], rsv1=True), T)
    [event] = obs.events()
    assert (event.size, event.data, event.truncated) == (size, bytes(MAX_KEPT), True)
    assert len(data) < size // 500


# --- a peer that breaks the protocol: the observer gives up ------------------------------------

HOSTILE = {
    "client frame without a mask": (True, frame(OP_TEXT, b"x")),
    "server frame with a mask": (False, client(OP_TEXT, b"x")),
    "RSV1 without deflate": (False, frame(OP_TEXT, b"x", rsv1=True)),
    "RSV2": (False, frame(OP_TEXT, b"x", rsv=0x20)),
    "reserved opcode": (False, frame(0x3, b"x")),
    "fragmented ping": (False, frame(OP_PING, b"x", fin=False)),
    "oversized ping": (False, frame(OP_PING, bytes(126))),
    "continuation first": (False, frame(OP_CONTINUATION, b"x")),
    "new message inside one": (False, frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b")),
    "length top bit": (False, b"\x82\x7f\x80" + bytes(7)),
    "one-byte close": (False, frame(OP_CLOSE, b"\x03")),
    "data after close": (False, frame(OP_CLOSE, b"\x03\xe8") + frame(OP_TEXT, b"late")),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_protocol_break_makes_the_observer_give_up(name: str):
    from_client, wire = HOSTILE[name]
    obs = observer()
    (obs.client_data if from_client else obs.server_data)(wire, T)
    obs.events()
    assert obs.failed and obs.error
    obs.client_data(client(OP_TEXT, b"after"), T)
    obs.server_data(frame(OP_TEXT, b"after"), T)
    assert obs.events() == []


def test_deflate_data_that_does_not_inflate():
    obs = observer(Deflate())
    obs.server_data(frame(OP_BINARY, b"\xff\xff\xff\xff not deflate", rsv1=True), T)
    assert obs.failed and "inflate" in (obs.error or "")


def test_rsv1_on_a_continuation_or_a_control_frame_is_refused_even_with_deflate():
    for wire in (frame(OP_TEXT, b"a", fin=False) + frame(OP_CONTINUATION, b"b", rsv1=True),
                 frame(OP_PING, b"", rsv1=True)):
        obs = observer(Deflate())
        obs.server_data(wire, T)
        assert obs.failed


@given(st.booleans(), st.booleans(), st.lists(st.binary(max_size=300), max_size=8))
def test_any_bytes_are_decoded_or_refused_never_raised(deflate: bool, from_client: bool,
                                                       chunks: list[bytes]):
    obs = observer(Deflate() if deflate else None, max_kept=64)
    for chunk in chunks:
        (obs.client_data if from_client else obs.server_data)(chunk, T)
        for event in obs.events():
            assert event.data is not None and len(event.data) <= 64
            assert event.opcode in (OP_TEXT, OP_BINARY, OP_CLOSE)
