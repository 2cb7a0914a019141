"""One TCP segment as the core sees it: header fields already parsed, payload as bytes.

``httptap.net.wire`` turns packets into :class:`Segment` and back; ``httptap.net.tcp.connection``
consumes and produces them. Addresses and ports are not here: a segment belongs to the
flow that the tcp stage looked up from the packet's addresses.
"""

from __future__ import annotations

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80


class Segment:
    """A TCP segment. ``window`` is the raw 16-bit header field (not yet scaled).

    Options are ``None`` when absent. ``sack`` holds SACK blocks as (left, right) pairs.
    ``payload`` is ``bytes`` when parsed, and may be a read-only memoryview of the send
    buffer's data in segments the core produces (no copy until the packet is built).
    """

    __slots__ = ("seq", "ack", "flags", "window", "payload", "mss", "wscale",
                 "sack_permitted", "sack", "ts_val", "ts_ecr")

    def __init__(self, seq: int, ack: int, flags: int, window: int,
                 payload: bytes | memoryview = b"", *,
                 mss: int | None = None, wscale: int | None = None,
                 sack_permitted: bool = False, sack: tuple[tuple[int, int], ...] = (),
                 ts_val: int | None = None, ts_ecr: int | None = None) -> None:
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack = sack
        self.ts_val = ts_val
        self.ts_ecr = ts_ecr

    def __repr__(self) -> str:
        names = "".join(n for bit, n in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."))
                        if self.flags & bit)
        return (f"Segment({names} seq={self.seq} ack={self.ack} win={self.window} "
                f"len={len(self.payload)}{' mss=' + str(self.mss) if self.mss else ''})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segment):
            return NotImplemented
        # Field by field, not through ``__slots__``: a class compiled by mypyc has none.
        return (self.seq == other.seq and self.ack == other.ack and self.flags == other.flags
                and self.window == other.window and self.payload == other.payload
                and self.mss == other.mss and self.wscale == other.wscale
                and self.sack_permitted == other.sack_permitted and self.sack == other.sack
                and self.ts_val == other.ts_val and self.ts_ecr == other.ts_ecr)

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: payload plus one each for SYN and FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)
