"""The HTTP/2 stream-reset event and the RFC 9113 error code names (pure).

Kept apart from :mod:`httptap.http.http2` so that :mod:`httptap.http.report`, which
every proxied HTTP connection uses, can report resets without importing ``hpack`` and
``hyperframe`` (those load only when a connection speaks HTTP/2).
"""

from __future__ import annotations

from ..events import Event

__all__ = ["ERROR_CODES", "StreamReset"]

#: RFC 9113 §7 error codes, for :attr:`StreamReset.name`.
ERROR_CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR", 0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}


class StreamReset(Event):
    """RST_STREAM on a live stream: ``error_code`` as sent; ``by_client`` says who sent it."""

    __slots__ = ("seq", "error_code", "time", "by_client")

    def __init__(self, seq: int, error_code: int, time: float, *, by_client: bool = False) -> None:
        self.seq = seq
        self.error_code = error_code
        self.time = time
        self.by_client = by_client

    @property
    def name(self) -> str:
        """The error code's RFC name, e.g. ``"CANCEL"``."""
        return ERROR_CODES.get(self.error_code, f"0x{self.error_code:x}")
