"""The events of the HTTP observers (HTTP/1.x and HTTP/2 alike) and what the observers
share (:class:`ObserverBase`): the vocabulary between them and the reporter
(``httptap.http.report``), which turns the events into the sink's messages. Pure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..events import Event

#: How much of each body is captured unless told otherwise (``--max-body-size``'s default).
DEFAULT_MAX_CAPTURE = 16 << 20




class RequestHead(Event):
    """A request line and its headers (in received order, original case)."""

    __slots__ = ("method", "target", "version", "headers", "time", "seq")

    def __init__(self, method: str, target: str, version: str,
                 headers: list[tuple[str, str]], time: float, *, seq: int = 0) -> None:
        self.method = method
        self.target = target
        self.version = version      # "HTTP/1.1"
        self.headers = headers
        self.time = time
        self.seq = seq              # 0, 1, 2...: the exchange on this connection


class BodyData(Event):
    """The next captured bytes of a body (content-decoded), in order, before the
    :class:`RequestEnd` (``request``) or :class:`ResponseEnd` of exchange ``seq``."""

    __slots__ = ("seq", "request", "data")

    def __init__(self, seq: int, request: bool, data: bytes) -> None:
        self.seq = seq
        self.request = request
        self.data = data


class RequestEnd(Event):
    """The request body is complete (``complete`` is False if the client closed first).

    ``truncated``: the captured body (the :class:`BodyData` before) is only its first
    part (``max_capture`` reached, or decoding failed after bytes were handed on)."""

    __slots__ = ("body_size", "decoded_size", "time", "seq", "complete", "trailers",
                 "truncated")

    def __init__(self, body_size: int, time: float, *,
                 decoded_size: int | None = None, seq: int = 0, complete: bool = True,
                 trailers: list[tuple[str, str]] | None = None,
                 truncated: bool = False) -> None:
        self.body_size = body_size
        self.decoded_size = body_size if decoded_size is None else decoded_size
        self.time = time
        self.seq = seq
        self.complete = complete
        self.trailers = trailers if trailers is not None else []
        self.truncated = truncated


class ResponseHead(Event):
    """A status line and its headers; ``informational`` for 1xx other than 101."""

    __slots__ = ("status", "reason", "version", "headers", "time", "seq", "informational")

    def __init__(self, status: int, reason: str, version: str,
                 headers: list[tuple[str, str]], time: float, *, seq: int = 0,
                 informational: bool | None = None) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.time = time
        self.seq = seq
        self.informational = (100 <= status < 200 and status != 101
                              if informational is None else informational)


class ProtocolError(Event):
    """The observer stopped following the connection (it is ``failed`` from now on).

    ``error`` names why. ``request`` is a request whose head could not be completed
    (too large, too many headers, bad framing) but whose request line was read: it was
    not reported as a :class:`RequestHead`, and is reported with the error instead.
    Every exchange still open on the connection ends with this error: its response
    will never be decoded.
    """

    __slots__ = ("error", "time", "request")

    def __init__(self, error: str, time: float, request: RequestHead | None = None) -> None:
        self.error = error
        self.time = time
        self.request = request


class ResponseEnd(Event):
    """The response body is complete.

    ``body_size`` counts bytes on the wire after de-chunking; ``decoded_size``
    after content decoding (equal to ``body_size`` for identity or when
    decoding failed). When bodies are captured the body came before as
    :class:`BodyData` events (up to ``max_capture`` bytes) and ``truncated``
    says it went on beyond them. ``complete`` is False when the server closed
    before the framing said the body was done.
    """

    __slots__ = ("body_size", "decoded_size", "time", "seq", "complete", "trailers",
                 "truncated")

    def __init__(self, body_size: int, decoded_size: int, time: float, *,
                 seq: int = 0, complete: bool = True,
                 trailers: list[tuple[str, str]] | None = None,
                 truncated: bool = False) -> None:
        self.body_size = body_size
        self.decoded_size = decoded_size
        self.time = time
        self.seq = seq
        self.complete = complete
        self.trailers = trailers if trailers is not None else []
        self.truncated = truncated



class TunnelOpened(Event):
    """An HTTP/2 extended CONNECT (RFC 8441) was accepted: from now on the DATA of stream
    ``seq`` carries ``protocol`` (``websocket``), as :class:`TunnelData`. The exchange
    itself ended with the 2xx, as an HTTP/1.1 switch ends with its 101."""

    __slots__ = ("seq", "protocol", "time")

    def __init__(self, seq: int, protocol: str, time: float) -> None:
        self.seq = seq
        self.protocol = protocol
        self.time = time


class TunnelData(Event):
    """Bytes of an accepted extended CONNECT's protocol, one way (``from_client``)."""

    __slots__ = ("seq", "from_client", "data", "time")

    def __init__(self, seq: int, from_client: bool, data: bytes, time: float) -> None:
        self.seq = seq
        self.from_client = from_client
        self.data = data
        self.time = time


class ObserverBase:
    """What the HTTP/1 and HTTP/2 observers share: their settings, the failure state the
    proxy reads (``failed``, ``error``, ``upgraded``) and the queue of events."""

    def __init__(self, *, capture_bodies: bool = False,
                 max_capture: int = DEFAULT_MAX_CAPTURE, decode_content: bool = True) -> None:
        self.capture_bodies = capture_bodies
        self.max_capture = max_capture
        self.decode_content = decode_content
        self.upgraded = False
        self.failed = False
        self.error: str | None = None
        # HTTP/2 streams that carry another protocol now (RFC 8441 extended CONNECT):
        # stream -> protocol. Always empty in HTTP/1.x, where a switch ends decoding.
        self.tunnels: dict[int, str] = {}
        self.events_: list[Event] = []

    def server_closing(self) -> bool:
        """Whether the server's last message is through and the connection ends after it
        (its FIN is all that can follow). Only HTTP/1 knows; HTTP/2 says no."""
        return False

    def events(self) -> list[Event]:
        """Drain the events produced so far, in order."""
        out = self.events_
        self.events_ = []
        return out

    #: What the parsers raise when the peer is not speaking the protocol: the failure is
    #: named by the exception (``describe``). Anything else escaping them is a bug here,
    #: contained the same way ("internal error: ...") so that it never stops the relay.
    protocol_errors: tuple[type[Exception], ...] = ()

    def _run(self, fn: Callable[[Any, float], None], data: Any, now: float) -> None:
        """``fn(data, now)``, with every failure turned into ``failed`` and a
        :class:`ProtocolError` event, and the bodies it cut short ended (``_abort``)."""
        try:
            fn(data, now)
        except self.protocol_errors as exc:
            self._fail(self.describe(exc), now, getattr(exc, "request", None))
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug here must not kill the relay
            self._fail(f"internal error: {type(exc).__name__}: {exc}", now)
        else:
            return
        self._abort(now)

    def describe(self, exc: Exception) -> str:
        """The name of a failure, as the user reads it."""
        return str(exc)

    def _abort(self, now: float) -> None:
        """After a failure: end what was open, as far as it was read (incomplete)."""

    def _fail(self, why: str, now: float, request: RequestHead | None = None) -> None:
        """Stop following the connection, and say why in a :class:`ProtocolError`."""
        self.failed = True
        self.error = why
        self.events_.append(ProtocolError(why, now, request))

