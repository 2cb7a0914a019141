"""Feed a scripted connection to an HTTP observer (http1 or http2), split any way.

A script is a list of (side, bytes) steps; the side is ``C``/``S`` for data from the
client/server, ``CE``/``SE`` for their EOF. Splits: ``whole``, ``bytes`` (one byte at a
time), ``uneven`` (pieces of 1, 2, ... 7 bytes, cycling), ``random`` (1..7, seeded)."""

from __future__ import annotations

import random
from typing import Any

C, S, CE, SE = "client", "server", "client_eof", "server_eof"
Script = list[tuple[str, bytes]]


def pieces(data: bytes, split: str, rng: random.Random) -> list[bytes]:
    if split == "whole":
        return [data]
    if split == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    out, i, k = [], 0, 1
    while i < len(data):
        k = rng.randint(1, 7) if split == "random" else k % 7 + 1
        out.append(data[i:i + k])
        i += k
    return out


class Events(list):  # type: ignore[type-arg]
    """An observer's events without its ``BodyData``; ``bodies[seq, request]`` is the
    bytes of each captured body, joined."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: dict[tuple[int, bool], bytes] = {}

    def __eq__(self, other: object) -> bool:
        return (list.__eq__(self, other) is True  # type: ignore[arg-type]
                and self.bodies == getattr(other, "bodies", {}))

    def body(self, seq: int = 0, request: bool = False) -> bytes:
        """The captured body (b"" when none was captured)."""
        return self.bodies.get((seq, request), b"")


def play(observer: Any, script: Script, split: str) -> Events:
    """Every event ``observer`` emits for ``script``, the time of step n being n."""
    from httptap.http.http1 import BodyData, RequestEnd, ResponseEnd

    events = Events()
    ended: set[tuple[int, bool]] = set()
    rng = random.Random(len(script))
    for now, (side, data) in enumerate(script):
        t = float(now)
        if side == CE:
            observer.client_eof(t)
        elif side == SE:
            observer.server_eof(t)
        else:
            feed = observer.client_data if side == C else observer.server_data
            for piece in pieces(data, split, rng):
                feed(piece, t)
        for event in observer.events():
            if isinstance(event, BodyData):
                key = (event.seq, event.request)
                assert event.data and key not in ended, event
                events.bodies[key] = events.bodies.get(key, b"") + event.data
                continue
            if isinstance(event, (RequestEnd, ResponseEnd)):
                ended.add((event.seq, isinstance(event, RequestEnd)))
            events.append(event)
    return events
