"""Joins the BodyChunk messages of each exchange into the bodies the sinks write.

Role in the pipeline: the proxy sends a captured body as ``BodyChunk`` messages ahead of
the ``HttpResponse`` that closes its exchange (``httptap.plumbing.messages``). The sink stage feeds
every chunk to one :class:`BodyAssembler` and, when the response arrives, takes the
exchange's :class:`Bodies` out of it and hands them to each sink with the response.

Memory: at most ``max_size`` bytes per side of each open exchange (``--max-body-size``),
whatever the proxy sends: bytes beyond are dropped and the body marked truncated. The
bodies are held in memory, not spooled: the proxy already sends no more than that, and
an exchange's bodies leave the assembler when its response arrives.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..plumbing.messages import BodyChunk, HttpResponse

__all__ = ["Bodies", "NO_BODIES", "BodyAssembler"]


@dataclass(frozen=True)
class Bodies:
    """The captured bodies of one exchange (``b""``: empty, or not captured), and whether
    each is only the first part of the body."""
    request: bytes = b""
    response: bytes = b""
    request_truncated: bool = False
    response_truncated: bool = False


NO_BODIES = Bodies()


class _Open:
    __slots__ = ("request", "response", "request_cut", "response_cut")

    def __init__(self) -> None:
        self.request = bytearray()
        self.response = bytearray()
        self.request_cut = False
        self.response_cut = False


class BodyAssembler:
    """Collects chunks per exchange, up to ``max_size`` bytes per body."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._open: dict[int, _Open] = {}

    def add(self, chunk: BodyChunk) -> None:
        parts = self._open.get(chunk.exchange)
        if parts is None:
            parts = self._open[chunk.exchange] = _Open()
        buf = parts.request if chunk.request else parts.response
        room = self.max_size - len(buf)
        data = chunk.data
        if len(data) > room:
            data = data[:max(room, 0)]
            if chunk.request:
                parts.request_cut = True
            else:
                parts.response_cut = True
        buf += data

    def take(self, resp: HttpResponse) -> Bodies:
        """The bodies of ``resp``'s exchange, which is then forgotten."""
        parts = self._open.pop(resp.exchange, None)
        if parts is None:
            if resp.request_body_truncated or resp.body_truncated:
                return Bodies(request_truncated=resp.request_body_truncated,
                              response_truncated=resp.body_truncated)
            return NO_BODIES
        return Bodies(bytes(parts.request), bytes(parts.response),
                      parts.request_cut or resp.request_body_truncated,
                      parts.response_cut or resp.body_truncated)

    @property
    def held(self) -> int:
        """Bytes held for exchanges still open."""
        return sum(len(p.request) + len(p.response) for p in self._open.values())
