"""What a :class:`~httptap.net.tcp.connection.TcpConnection` tells its owner, in order.

The connection, its sender (``Acked``) and its receiver (``DataReceived``, ``PeerEof``)
append to one list, so the order is the order things happened.

The tcp stage drains ``conn.events()`` after feeding the core and turns each event into a
message for the proxy stage (data, end of stream, reset) or into bookkeeping (``Acked``
frees send space, ``Closed`` lets the flow table forget the connection).
"""

from __future__ import annotations


class Event:
    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __hash__(self) -> int:
        return hash((type(self),) + tuple(getattr(self, s) for s in self.__slots__))

    def __repr__(self) -> str:
        args = ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__)
        return f"{type(self).__name__}({args})"


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
