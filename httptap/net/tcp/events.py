"""What a :class:`~httptap.net.tcp.connection.TcpConnection` tells its owner, in order.

The connection, its sender (``Acked``) and its receiver (``DataReceived``, ``PeerEof``)
append to one list, so the order is the order things happened.

The tcp stage drains ``conn.events()`` after feeding the core and turns each event into a
message for the proxy stage (data, end of stream, reset) or into bookkeeping (``Acked``
frees send space, ``Closed`` lets the flow table forget the connection).
"""

from __future__ import annotations

from ...events import Event as Event  # (the base, re-exported for the TCP modules)


class Established(Event):
    """The three-way handshake completed."""
    __slots__ = ()


class DataReceived(Event):
    """In-order bytes from the peer. They count against the receive window until
    ``conn.consumed(len(data))``."""
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"DataReceived(<{len(self.data)} bytes>)"


class PeerEof(Event):
    """The peer sent FIN, after all of its data: it will send nothing more."""
    __slots__ = ()


class Acked(Event):
    """``count`` bytes of our data were newly acknowledged; that much send space is free."""
    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count


class Reset(Event):
    """The connection was reset: ``"reset"`` (RST received), ``"refused"`` (RST answering
    our SYN) or ``"timeout"`` (retransmission gave up)."""
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Closed(Event):
    """The connection is finished; after sending ``segments_to_send()`` it can be forgotten."""
    __slots__ = ()
