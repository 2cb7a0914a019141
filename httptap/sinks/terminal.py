"""The terminal sink: the lines a user reads while the command runs (SPEC "Terminal output").

Role in the pipeline: the sink stage hands every proxy event to :class:`TerminalSink`,
which writes one group of lines per event to stdout (or stderr) and flushes it::

    ---> GET https://example.com/                 request head read (blue)
    <--- 200 https://example.com/ (1256 bytes)    response complete (colour by status)

The byte count is the content-decoded body size (``HttpResponse.decoded_size``). The
response line reuses the URL of its request (kept in a dict by exchange id until then).

``--head``: the headers follow their line, in received order, ``> Name: value`` under a
request line and ``< Name: value`` under a response line.

``--body``: bodies follow the headers. The request body is handed over with the response
(``Bodies``, joined from the exchange's body chunks), so it is printed when the response
arrives, just *before* the response line; in the usual sequential case that is right
under the request line and its headers. Text bodies (``text/*``, JSON, XML, form data,
...; without a content type, bytes that look like UTF-8) are decoded in their declared
charset, else UTF-8, with bad bytes replaced; any other body prints as
``<N bytes of binary data>``. A body that was not captured, or is empty, prints nothing.
A body cut at ``--max-body-size`` is followed by ``<truncated: N of M bytes shown>``.
Control characters other than tab and newline (a stray ESC could drive the user's
terminal) are shown escaped, as ``\\x1b``; ``\\r\\n`` line ends become ``\\n``.

An exchange that ended without a response (``status == 0`` and ``error`` set) prints
``<--- error URL: <error>``; a response cut short (status set and ``error``) prints its
normal line with ``, error: <error>`` inside the parentheses, both in red.

WebSocket (after the ``<--- 101`` line), one line per message, ``--->`` from the command::

    ---> WS text wss://example.com/chat (5 bytes)
    <--- WS binary wss://example.com/chat (200 bytes)
    <--- WS close wss://example.com/chat (code 1000, "bye")

With ``--body`` the payload follows: text as text (as bodies are), binary as a hex dump
of its first ``HEX_DUMP_BYTES`` bytes and how many more there were. A message longer than
what was kept says so, with ``--body`` (``, 65536 shown``). Pings and pongs are counted in the ndjson
``ws_end`` record, not printed.

DNS (only with ``--print-dns``): ``---> DNS example.com. (A)`` then
``<--- 93.184.215.14, ...`` or the rcode (``<--- NXDOMAIN``) when there is no answer.

Colours: only when ``color`` is True; by default (None) when the stream is a terminal and
``NO_COLOR`` is unset or empty (https://no-color.org). Request lines blue; status green
below 300, magenta 3xx, yellow 4xx, red 5xx; errors red. TCP summaries are not shown.
"""

from __future__ import annotations

import codecs
import os
import re
from typing import TextIO

from ..plumbing.messages import (BodyChunk, DnsExchange, HttpRequest, HttpResponse, HttpResponseHead,
                        TcpSummary, WsEnd, WsMessage)
from .bodies import NO_BODIES, Bodies
from .common import (body_is_text, decode_text, grpc_status, header, is_text_type,
                     split_content_type, text_decoder)

BLUE = "\x1b[34m"
GREEN = "\x1b[32m"
MAGENTA = "\x1b[35m"
YELLOW = "\x1b[33m"
RED = "\x1b[31m"
RESET = "\x1b[0m"

# C0 controls except tab and newline, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _escape_line(text: str) -> str:
    """For one-line fields (URL, header names and values): escape newlines too."""
    if text.isprintable():  # the usual case: no control character (nor tab, nor newline)
        return text
    return _escape(text).replace("\n", "\\x0a").replace("\t", "\\x09")


def status_color(status: int) -> str:
    if status < 300:
        return GREEN
    if status < 400:
        return MAGENTA
    if status < 500:
        return YELLOW
    return RED


def default_color(stream: TextIO) -> bool:
    """Colour when writing to a terminal and ``NO_COLOR`` is unset or empty."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


#: How much of a binary WebSocket message ``--body`` shows, 16 bytes a line.
HEX_DUMP_BYTES = 64
_OPCODES = {1: "text", 2: "binary", 8: "close"}


def hex_dump(data: bytes, size: int) -> list[str]:
    """``0000  68 69 ...  |hi|`` lines for the first ``HEX_DUMP_BYTES`` of a ``size``-byte
    payload whose kept part is ``data``; then how many bytes were not shown."""
    shown = data[:HEX_DUMP_BYTES]
    lines = []
    for at in range(0, len(shown), 16):
        row = shown[at:at + 16]
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in row)
        lines.append(f"{at:04x}  {row.hex(' '):<47}  |{text}|")
    if size > len(shown):
        lines.append(f"... {size - len(shown)} more bytes")
    return lines


def format_body(content_type: str | None, body: bytes, truncated: bool = False,
                size: int = 0) -> list[str]:
    """The lines a body prints as (no trailing newlines); ``truncated``: only the first
    part of a body of ``size`` bytes was kept, which a last line says."""
    lines: list[str] = []
    if not body:
        pass
    elif not body_is_text(content_type, body):
        lines = [f"<{len(body)} bytes of binary data>"]
    else:
        text = decode_text(content_type, body).replace("\r\n", "\n")
        if text.endswith("\n"):
            text = text[:-1]
        lines = _escape(text).split("\n")
    if truncated:
        lines.append(f"<truncated: {len(body)} of {size} bytes shown>")
    return lines


class TerminalSink:
    def __init__(self, stream: TextIO, *, head: bool = False, body: bool = False,
                 print_dns: bool = False, color: bool | None = None,
                 batched: bool = False) -> None:
        self.stream = stream
        self.batched = batched  # lines wait for flush() (the sink stage: once per wake-up)
        self.head = head
        self.body = body
        self.print_dns = print_dns
        self.color = default_color(stream) if color is None else color
        self._requests: dict[int, HttpRequest] = {}
        # --body: responses whose text prints as it arrives (exchange -> its decoder and
        # the line begun but not yet ended).
        self._streaming: dict[int, tuple[codecs.IncrementalDecoder, list[str]]] = {}
        self._broken = False
        self._queued: list[str] = []  # groups of lines waiting for flush()
        self._closed = False

    # --- events ----------------------------------------------------------------------------

    def request(self, req: HttpRequest) -> None:
        self._requests[req.exchange] = req
        lines = [self._paint(BLUE, f"---> {_escape_line(req.method)} {_escape_line(req.url)}")]
        if self.head:
            lines += self._headers("> ", req.headers)
        self._write(lines)

    def response_head(self, head: HttpResponseHead) -> None:
        """A streamed response began (SSE, no declared length): with ``--body``, a text
        body prints line by line as it arrives, after a ``(streaming)`` status line; the
        usual line with the byte count closes it."""
        req = self._requests.get(head.exchange)
        ctype = header(head.headers, "content-type")
        if not self.body or req is None or not is_text_type(split_content_type(ctype)[0]):
            return  # (a binary stream is summed up at its end, as any body)
        self._streaming[head.exchange] = (text_decoder(ctype), [""])
        lines = [self._paint(status_color(head.status),
                             f"<--- {head.status} {_escape_line(req.url)} (streaming)")]
        if self.head:
            lines += self._headers("< ", head.headers)
        self._write(lines)

    def body_chunk(self, chunk: BodyChunk) -> None:
        streaming = self._streaming.get(chunk.exchange)
        if streaming is None or chunk.request:
            return
        decoder, partial = streaming
        self._write_stream(partial, decoder.decode(chunk.data))

    def _write_stream(self, partial: list[str], text: str, final: bool = False) -> None:
        """Write the complete lines of ``partial[0] + text``; keep the last, unended one
        in ``partial`` (all of it when ``final``)."""
        *complete, partial[0] = (partial[0] + text).replace("\r\n", "\n").split("\n")
        if final and partial[0]:
            complete.append(partial[0])
            partial[0] = ""
        if complete:
            self._write([_escape(line) for line in complete])

    def response(self, resp: HttpResponse, bodies: Bodies = NO_BODIES) -> None:
        req = self._requests.pop(resp.exchange, None)
        url = _escape_line(req.url) if req is not None else "<unknown request>"
        streamed = self._streaming.pop(resp.exchange, None)
        if streamed is not None:  # its head and body were written as they came
            decoder, partial = streamed
            self._write_stream(partial, decoder.decode(b"", final=True), final=True)
        lines: list[str] = []
        if self.body and (bodies.request or bodies.request_truncated):
            ctype = header(req.headers, "content-type") if req is not None else None
            lines += format_body(ctype, bodies.request, bodies.request_truncated,
                                 resp.request_body_size)
        if resp.error and resp.status == 0:
            lines.append(self._paint(RED, f"<--- error {url}: {_escape_line(resp.error)}"))
        else:
            if resp.error:
                text = (f"<--- {resp.status} {url} ({resp.decoded_size} bytes, "
                        f"error: {_escape_line(resp.error)})")
                lines.append(self._paint(RED, text))
            else:
                text = f"<--- {resp.status} {url} ({resp.decoded_size} bytes)"
                grpc = grpc_status(resp)
                if grpc is not None:  # a failed call is not just "200"
                    text += f" grpc-status {_escape_line(grpc)}"
                color = status_color(resp.status)
                lines.append(self._paint(RED if grpc and not grpc.startswith("0 ") else color,
                                         text))
            if streamed is not None:
                if bodies.response_truncated:
                    lines.append(f"<truncated: {len(bodies.response)} of {resp.decoded_size} "
                                 "bytes shown>")
            else:
                if self.head:
                    lines += self._headers("< ", resp.headers)
                if self.body and (bodies.response or bodies.response_truncated):
                    lines += format_body(header(resp.headers, "content-type"), bodies.response,
                                         bodies.response_truncated, resp.decoded_size)
        self._write(lines)

    def tcp(self, summary: TcpSummary) -> None:
        pass

    def dns(self, dns: DnsExchange) -> None:
        if not self.print_dns:
            return
        query = self._paint(BLUE, f"---> DNS {_escape_line(dns.name)} ({_escape_line(dns.qtype)})")
        if dns.answers:
            answer = self._paint(GREEN, "<--- " + ", ".join(_escape_line(a) for a in dns.answers))
        else:
            rcode = _escape_line(dns.rcode or "NOERROR")
            answer = self._paint(GREEN if rcode == "NOERROR" else RED, f"<--- {rcode}")
        self._write([query, answer])

    def ws(self, msg: WsMessage) -> None:
        arrow, color = ("--->", BLUE) if msg.from_client else ("<---", GREEN)
        kind = _OPCODES.get(msg.opcode, f"opcode {msg.opcode}")
        if msg.opcode == 8:
            detail = f"code {msg.close_code}" if msg.close_code else "no code"
            if msg.close_reason:
                detail += f", \"{_escape_line(msg.close_reason)}\""
        else:
            detail = f"{msg.size} bytes"
            if self.body and msg.truncated and msg.data is not None:
                detail += f", {len(msg.data)} shown"
        lines = [self._paint(color, f"{arrow} WS {kind} {_escape_line(msg.url)} ({detail})")]
        if self.body and msg.data and msg.opcode != 8:
            if msg.opcode == 1:
                lines += format_body("text/plain; charset=utf-8", msg.data)
            else:
                lines += hex_dump(msg.data, msg.size)
        self._write(lines)

    def ws_end(self, end: WsEnd) -> None:
        """Counted, not printed (a decoding that stopped is a ``--verbose`` notice)."""

    def stats(self, table: dict[str, object]) -> None:
        """The ``--stats`` table is printed by the supervisor, not here."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._requests.clear()
        self.flush()
        if not self._broken:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                self._broken = True

    # --- output ----------------------------------------------------------------------------

    def _paint(self, color: str, text: str) -> str:
        return f"{color}{text}{RESET}" if self.color else text

    @staticmethod
    def _headers(prefix: str, headers: list[tuple[str, str]]) -> list[str]:
        return [f"{prefix}{_escape_line(n)}: {_escape_line(v)}" for n, v in headers]

    def _write(self, lines: list[str]) -> None:
        """A group of lines: written at once, or, ``batched``, queued for :meth:`flush`,
        which the sink stage calls once per wake-up: one write and one flush for all the
        lines a batch of events made."""
        if not self._broken and lines:
            self._queued.append("\n".join(lines))
            if not self.batched:
                self.flush()

    def flush(self) -> None:
        """Write what is queued. A reader that went away (``| head``) silences the sink
        instead of failing the stage."""
        if self._broken or not self._queued:
            return
        text = "\n".join(self._queued) + "\n"
        self._queued = []
        try:
            try:
                self.stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(self.stream, "encoding", None) or "ascii"
                self.stream.write(text.encode(encoding, "replace").decode(encoding))
            self.stream.flush()
        except BrokenPipeError:
            self._broken = True
