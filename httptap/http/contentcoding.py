"""Streaming content decoding (RFC 9110 §8.4) for display and byte counts.

Role in the pipeline: the HTTP/1.1 observer (``httptap.http.http1``) and the
HTTP/2 decoder feed each message body, chunk by chunk, into a
:class:`ContentDecoder` built from the message's ``Content-Encoding``. The
decoder counts the content-decoded bytes (the size the terminal line shows)
and, when a sink asked for bodies, hands on the first ``max_capture`` of them
as they are produced (:meth:`ContentDecoder.take`).
The bytes relayed between client and server are never touched: this is a
side copy, used for counting and display only.

Decoding never raises out of :meth:`ContentDecoder.feed` or
:meth:`ContentDecoder.finish`: on an unknown coding or a decoding error the
decoder stops decoding, keeps counting raw bytes, and reports
``decoded_size == raw_size`` and, if no decoded byte was handed on yet, the raw
bytes as the captured body.

Codings: ``gzip``/``x-gzip`` (multi-member too), ``deflate`` (zlib-wrapped as
the RFC says, or raw deflate as some servers send it: chosen from the first
two bytes), ``br`` (the ``brotli`` package) and ``zstd`` (``zstandard``,
multi-frame). A chain such as ``gzip, br`` is undone right to left.
Every stage hands on output in pieces of at most ``_PIECE`` bytes, so a
decompression bomb costs CPU time but never memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

__all__ = ["ContentDecoder", "parse_content_encoding", "SUPPORTED_CODINGS"]

Buffer = bytes | bytearray | memoryview
Sink = Callable[[Buffer], None]

#: Largest piece of decoded output any stage produces in one go.
_PIECE = 1 << 20

SUPPORTED_CODINGS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd", "identity"})


class _DecodeError(Exception):
    """A stage could not decode its input (any library's error, wrapped)."""


def parse_content_encoding(values: list[str]) -> list[str]:
    """The codings named by ``Content-Encoding`` values, in the order applied.

    ``identity`` and empty items are dropped; names are lower-cased.
    """
    codings: list[str] = []
    for value in values:
        for item in value.split(","):
            name = item.strip().lower()
            if name and name != "identity":
                codings.append(name)
    return codings


class _ZlibStage:
    """gzip (``wbits=47``: gzip or zlib header), zlib-wrapped deflate (15) or raw deflate (-15)."""

    __slots__ = ("_out", "_wbits", "_obj", "_gzip", "_head", "_member_out", "_ignore")

    def __init__(self, out: Sink, coding: str) -> None:
        self._out = out
        self._gzip = coding in ("gzip", "x-gzip")
        # For deflate, the wrapping is decided once two bytes are known.
        self._wbits = 47 if self._gzip else 0
        self._obj: Any = zlib.decompressobj(47) if self._gzip else None
        self._head = b""
        self._member_out = 0     # output of the current gzip member
        self._ignore = False     # past the end of the stream: trailing bytes are ignored

    def feed(self, data: Buffer) -> None:
        if self._ignore:
            return
        if self._obj is None:
            self._head += bytes(data)
            if len(self._head) < 2:
                return
            cmf, flg = self._head[0], self._head[1]
            zlib_wrapped = (cmf & 0x0F) == 8 and (cmf >> 4) <= 7 and (cmf * 256 + flg) % 31 == 0
            self._wbits = 15 if zlib_wrapped else -15
            self._obj = zlib.decompressobj(self._wbits)
            data, self._head = self._head, b""
        self._run(data)

    def _run(self, data: Buffer) -> None:
        obj = self._obj
        try:
            while True:
                if obj.eof:
                    if not self._gzip:
                        self._ignore = True     # bytes after a deflate stream
                        return
                    rest = obj.unused_data + bytes(data)
                    if not rest:
                        return
                    # Another gzip member follows (RFC 1952 §2.2).
                    obj = self._obj = zlib.decompressobj(self._wbits)
                    self._member_out = -1       # -1: a member after the first
                    data = rest
                out = obj.decompress(data, _PIECE)
                if out:
                    self._member_out = len(out)
                    self._out(out)
                data = obj.unconsumed_tail
                if not data and not obj.eof:
                    return
        except zlib.error as exc:
            if self._member_out == -1:
                # Junk after a complete gzip member (zero padding, say):
                # ignored, as gzip(1) does.
                self._ignore = True
                return
            raise _DecodeError(str(exc)) from None

    def finish(self) -> None:
        if self._ignore:
            return
        if self._obj is None:
            if self._head:
                raise _DecodeError("deflate stream too short")
            return
        try:
            out = self._obj.flush()
        except zlib.error as exc:
            raise _DecodeError(str(exc)) from None
        if out:
            self._out(out)


class _BrotliStage:
    __slots__ = ("_out", "_obj", "_error")

    def __init__(self, out: Sink) -> None:
        import brotli

        self._out = out
        self._obj = brotli.Decompressor()
        self._error = brotli.error

    def feed(self, data: Buffer) -> None:
        obj = self._obj
        try:
            out = obj.process(data, output_buffer_limit=_PIECE)
            while True:
                if out:
                    self._out(out)
                if obj.can_accept_more_data() or obj.is_finished():
                    return
                out = obj.process(b"", output_buffer_limit=_PIECE)
        except self._error as exc:
            raise _DecodeError(str(exc)) from None

    def finish(self) -> None:
        pass


class _ZstdStage:
    __slots__ = ("_writer", "_error")

    class _Forward:
        __slots__ = ("out",)

        def __init__(self, out: Sink) -> None:
            self.out = out

        def write(self, data: bytes) -> int:
            self.out(data)
            return len(data)

    def __init__(self, out: Sink) -> None:
        import zstandard

        self._writer = zstandard.ZstdDecompressor().stream_writer(
            self._Forward(out), write_size=_PIECE)  # type: ignore[arg-type]  # only .write() is used
        self._error = zstandard.ZstdError

    def feed(self, data: Buffer) -> None:
        try:
            self._writer.write(data)
        except self._error as exc:
            raise _DecodeError(str(exc)) from None

    def finish(self) -> None:
        try:
            self._writer.flush()  # type: ignore[no-untyped-call]  # zstandard ships no hints for it
        except self._error as exc:
            raise _DecodeError(str(exc)) from None


_Stage = _ZlibStage | _BrotliStage | _ZstdStage


def _make_stage(coding: str, out: Sink) -> _Stage:
    if coding in ("gzip", "x-gzip", "deflate"):
        return _ZlibStage(out, coding)
    if coding == "br":
        return _BrotliStage(out)
    if coding == "zstd":
        return _ZstdStage(out)
    raise _DecodeError(f"unsupported content coding {coding!r}")


class ContentDecoder:
    """Undo a chain of content codings on a body fed in pieces.

    ``codings`` is in the order the sender applied them (as
    :func:`parse_content_encoding` returns). Attributes after :meth:`finish`:
    ``raw_size``, ``decoded_size``, ``failed`` and ``error`` (why decoding
    stopped).

    With ``capture`` the first ``max_capture`` decoded bytes are handed on as
    they are produced: :meth:`take` returns those not taken yet, so the caller
    can pass the body on in pieces and nothing accumulates here. ``truncated``
    says that the body went on beyond what was handed on. When decoding fails
    before any decoded byte was taken, the body handed on is the raw bytes
    instead (what the server sent is then the best account of it); to allow
    that, the raw bytes (at most ``max_capture``) are held until the first
    decoded bytes are taken. When it fails later, the body stops where
    decoding stopped and is marked ``truncated``.
    """

    __slots__ = ("raw_size", "_decoded", "failed", "error", "_capture", "_max",
                 "_raw_buf", "_out", "_kept", "_taken", "_raw_mode", "truncated",
                 "_first", "_stages", "_finished")

    def __init__(self, codings: list[str], *, capture: bool = False,
                 max_capture: int = 1 << 20) -> None:
        self.raw_size = 0
        self._decoded = 0
        self.failed = False
        self.error: str | None = None
        self._capture = capture
        self._max = max_capture
        self._raw_buf: bytearray | None = None  # raw bytes held for the fallback
        self._out: list[bytes] = []    # decoded (or raw) bytes not taken yet
        self._kept = 0                 # bytes handed on or waiting in _out
        self._taken = 0                # bytes handed on by take()
        self._raw_mode = False         # decoding failed early: the raw bytes are the body
        self.truncated = False
        self._finished = False
        self._stages: list[_Stage] = []
        out: Sink = self._sink
        try:
            for coding in codings:     # the last applied is undone first
                stage = _make_stage(coding, out)
                self._stages.append(stage)
                out = stage.feed
        except _DecodeError as exc:
            self._fail(str(exc))
        self._stages.reverse()         # finish() runs outermost first
        self._first: Sink | None = None if self.failed else out
        if capture and self._stages:
            self._raw_buf = bytearray()

    @property
    def decoded_size(self) -> int:
        """Decoded bytes so far; the raw count once decoding has failed."""
        return self.raw_size if self.failed else self._decoded

    def _sink(self, data: Buffer) -> None:
        self._decoded += len(data)
        if self._capture:
            self._keep(data)

    def _keep(self, data: Buffer) -> None:
        room = self._max - self._kept
        if len(data) > room:
            self.truncated = True
            if room <= 0:
                return
            data = data[:room]
        if data:
            self._out.append(bytes(data))
            self._kept += len(data)

    def _fail(self, why: str) -> None:
        self.failed = True
        self.error = why
        self._first = None
        self._stages = []
        if not self._capture:
            return
        raw, self._raw_buf = self._raw_buf, None
        self._out = []
        if self._taken == 0:
            # Nothing decoded was handed on yet: the raw bytes become the body.
            self._raw_mode = True
            self._kept = 0
            self.truncated = False
            self._keep(raw if raw is not None else b"")
            self.truncated = self.raw_size > self._kept
        else:
            self._kept = self._max  # what was handed on stays the body, cut where it failed
            self.truncated = True

    def feed(self, data: Buffer) -> None:
        """Take the next raw body piece. Never raises."""
        self.raw_size += len(data)
        if self._raw_mode:
            self._keep(data)
            return
        raw = self._raw_buf
        if raw is not None and len(raw) < self._max:
            raw += data[:self._max - len(raw)]
        if self._first is not None:
            try:
                self._first(data)
            except _DecodeError as exc:
                self._fail(str(exc))
            except (MemoryError, RecursionError):
                raise
            except Exception as exc:  # noqa: BLE001 - a codec bug must not kill the relay
                self._fail(f"{type(exc).__name__}: {exc}")

    def finish(self) -> None:
        """The body is complete: flush every stage. Never raises; idempotent."""
        if self._finished:
            return
        self._finished = True
        try:
            for stage in self._stages:
                stage.finish()
        except _DecodeError as exc:
            self._fail(str(exc))
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # noqa: BLE001
            self._fail(f"{type(exc).__name__}: {exc}")
        self._first = None
        self._raw_buf = None

    def take(self) -> bytes:
        """The captured bytes produced since the last call (``b""``: none, or not
        capturing). Once decoded bytes have been taken the raw ones are no longer held."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._taken += len(data)
        self._raw_buf = None
        return data
