"""The ndjson sink: one JSON object per line, for programs (``--sink ndjson[:PATH]``).

Role in the pipeline: the sink stage hands every proxy event to :class:`NdjsonSink`, which
makes a line as each event completes; the lines one wake-up of the sink stage made are
written and flushed together before it waits again (``batched``), so ``httptap --sink
ndjson -- cmd | jq`` sees exchanges as they happen, in one write per wake-up. Bodies are written only with ``--body`` (else only
their sizes), up to ``--max-body-size`` each; WebSocket message data likewise, when
bodies are kept (``--body``, a HAR sink).

Schema (every object has ``type``; times are ISO 8601 UTC with milliseconds, e.g.
``"2024-05-01T12:00:00.123Z"``; addresses are ``"ip:port"``, ``"[ipv6]:port"``):

=============  ====================  ==========================================================
type           field                 value
=============  ====================  ==========================================================
``http``       ``time``              when the request head was read
               ``exchange``          exchange id (unique within one run and proxy shard)
               ``request``           ``{"method", "url", "version", "headers": [[name, value],
                                     ...], "body_size"}``; ``body_size`` is null if unknown
               ``response``          ``{"status", "reason", "version", "headers",
                                     "body_size", "decoded_size"}``, or null when the exchange
                                     ended without a response (then ``error`` says why);
                                     ``body_size`` counts bytes after de-chunking,
                                     ``decoded_size`` after content decoding
               ``timings``           ``{"total_ms", "send_ms", "wait_ms", "receive_ms"}``:
                                     request read to response complete, split into sending
                                     the request, waiting for the response head, and
                                     receiving the response; null if the exchange never ended
               (``--body``)          ``request`` and ``response`` also end with ``"body"``
                                     (text, or base64), ``"body_encoding"`` (``"text"`` or
                                     ``"base64"``) and ``"truncated"`` (true when only the
                                     first ``--max-body-size`` bytes are kept)
               ``client``            the command's address
               ``server``            the address the command connected to
               ``tls``               ``{"sni", "alpn"}`` (each a string or null) for HTTPS,
                                     else null
               ``error``             a string when the exchange failed or was cut short,
                                     else null
``dns``        ``time``              when the query was answered
               ``name``, ``qtype``   the question, e.g. ``"example.com."``, ``"A"``
               ``rcode``             e.g. ``"NOERROR"``, ``"NXDOMAIN"``
               ``answers``           list of strings (addresses, names)
``tcp``        ``time``              when the connection opened
               ``transport``         ``"tcp"`` (or ``"udp"``)
               ``client``, ``server``  addresses, as for ``http``
               ``bytes_sent``        bytes the command sent
               ``bytes_received``    bytes the command received
               ``duration_ms``       how long the connection lasted
``ws``         ``time``              when the message's last byte was seen
               ``exchange``          the id of the ``http`` record whose 101 opened the WebSocket
               ``url``               its URL as ``ws://`` or ``wss://``
               ``direction``         ``"send"`` (from the command) or ``"receive"``
               ``opcode``            ``"text"``, ``"binary"`` or ``"close"``
               ``size``              payload bytes (after permessage-deflate)
               ``compressed``        the message was sent with permessage-deflate
               ``truncated``         only the first 64 KiB of the payload are in ``data``
               ``data``              the payload: text as a string, binary and close payloads
                                     base64 (then ``"data_encoding": "base64"`` follows); null
                                     when bodies are not kept
               ``close_code``,       close only: the status code (null: none) and reason
               ``close_reason``
``ws_end``     ``time``, ``exchange``, ``url``   the WebSocket ended (or is no longer decoded)
               ``messages_sent``,    text and binary messages each way
               ``messages_received``
               ``pings_sent``, ``pongs_sent``, ``pings_received``, ``pongs_received``
               ``error``             why decoding stopped (a peer broke the protocol), else null
``stats``      (the table's keys)    the ``--stats`` table, as the caller passes it
=============  ====================  ==========================================================

An ``http`` line is written when the response completes, or, for an exchange still open
when httptap exits, at :meth:`NdjsonSink.close` with ``"response": null``. Keys within
each object always appear in the order above.
"""

from __future__ import annotations

import base64
import json
import os
from typing import IO, Any, TextIO

import msgspec

from ..plumbing.messages import (BodyChunk, DnsExchange, HttpRequest, HttpResponse, HttpResponseHead,
                        TcpSummary, WsEnd, WsMessage)
from ..run.outputs import open_private
from .bodies import NO_BODIES, Bodies
from .common import UNFINISHED, body_is_text, decode_text_strict, header, iso_time, timings

_encode = msgspec.json.Encoder().encode


def _dumps(obj: dict[str, Any]) -> bytes:
    try:
        return _encode(obj)
    except UnicodeEncodeError:  # a lone surrogate in some string: escape it
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


class NdjsonSink:
    def __init__(self, stream_or_path: TextIO | str | os.PathLike[str], *,
                 bodies: bool = False, batched: bool = False) -> None:
        self.bodies = bodies
        # batched: lines wait for flush(), which the sink stage calls once per wake-up (one
        # write for all the lines a batch of events made, still before it sleeps); else
        # each line is written and flushed at once.
        self.batched = batched
        self._queued: list[bytes] = []
        self._file: IO[bytes] | None = None
        self._stream: TextIO | None = None
        if isinstance(stream_or_path, (str, os.PathLike)):
            # Private (0600) when created: the lines hold URLs, headers and cookies.
            self._file = os.fdopen(open_private(os.fspath(stream_or_path),
                                                os.O_WRONLY | os.O_TRUNC), "wb")
        else:
            self._stream = stream_or_path
        self._requests: dict[int, HttpRequest] = {}
        self._broken = False
        self._closed = False

    # --- events ----------------------------------------------------------------------------

    def request(self, req: HttpRequest) -> None:
        self._requests[req.exchange] = req

    def response_head(self, head: HttpResponseHead) -> None:
        pass  # a record is written whole, when the response completes

    def body_chunk(self, chunk: BodyChunk) -> None:
        pass  # bodies come whole with the response

    def response(self, resp: HttpResponse, bodies: Bodies = NO_BODIES) -> None:
        req = self._requests.pop(resp.exchange, None)
        if req is None:
            req = HttpRequest(exchange=resp.exchange, time=resp.time, method="", url="",
                              version="", headers=[], client="", server="")
        self._emit(http_record(req, resp, bodies if self.bodies else None))

    def tcp(self, summary: TcpSummary) -> None:
        self._emit({
            "type": "tcp",
            "time": iso_time(summary.time),
            "transport": summary.transport,
            "client": summary.client,
            "server": summary.server,
            "bytes_sent": summary.bytes_sent,
            "bytes_received": summary.bytes_received,
            "duration_ms": round(summary.duration * 1000.0, 3),
            **({"tls_sni": summary.tls_sni} if summary.tls_sni else {}),
        })

    def dns(self, dns: DnsExchange) -> None:
        self._emit({
            "type": "dns",
            "time": iso_time(dns.time),
            "name": dns.name,
            "qtype": dns.qtype,
            "rcode": dns.rcode,
            "answers": list(dns.answers),
        })

    def ws(self, msg: WsMessage) -> None:
        self._emit(ws_record(msg))

    def ws_end(self, end: WsEnd) -> None:
        self._emit({
            "type": "ws_end",
            "time": iso_time(end.time),
            "exchange": end.exchange,
            "url": end.url,
            "messages_sent": end.messages_sent,
            "messages_received": end.messages_received,
            "pings_sent": end.pings_sent,
            "pongs_sent": end.pongs_sent,
            "pings_received": end.pings_received,
            "pongs_received": end.pongs_received,
            "error": end.error or None,
        })

    def stats(self, table: dict[str, Any]) -> None:
        self._emit({"type": "stats", **{k: v for k, v in table.items() if k != "type"}})

    def flush(self) -> None:
        """Write the lines queued (``batched``) and flush them."""
        if not self._queued:
            return
        data = b"".join(self._queued)
        self._queued = []
        self._write(data)

    def close(self) -> None:
        if self._closed:
            return
        for req in list(self._requests.values()):
            self._emit(http_record(req, None, NO_BODIES if self.bodies else None))
        self._requests.clear()
        self.flush()
        self._closed = True
        if self._file is not None:
            self._file.close()
        elif self._stream is not None and not self._broken:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self._broken = True

    # --- output ----------------------------------------------------------------------------

    def _emit(self, obj: dict[str, Any]) -> None:
        if self._closed or self._broken:
            return
        line = _dumps(obj) + b"\n"
        if self.batched:
            self._queued.append(line)
        else:
            self._write(line)

    def _write(self, data: bytes) -> None:
        if self._broken:
            return
        if self._file is not None:
            self._file.write(data)
            self._file.flush()
            return
        assert self._stream is not None
        try:
            self._stream.write(data.decode("utf-8"))
            self._stream.flush()
        except BrokenPipeError:  # the reader went away: stop writing, do not fail the stage
            self._broken = True


def body_fields(content_type: str | None, body: bytes, truncated: bool) -> dict[str, Any]:
    """``body``, ``body_encoding`` and ``truncated`` of a request or response object."""
    if body_is_text(content_type, body):
        text = decode_text_strict(content_type, body)
        if text is not None:
            return {"body": text, "body_encoding": "text", "truncated": truncated}
    return {"body": base64.b64encode(body).decode("ascii"), "body_encoding": "base64",
            "truncated": truncated}


def http_record(req: HttpRequest, resp: HttpResponse | None,
                bodies: Bodies | None = None) -> dict[str, Any]:
    """The ``http`` object for an exchange (``resp`` None: it never completed); with
    ``bodies`` (``--body``) the request and response carry their bodies.

    Headers stay the ``(name, value)`` tuples they came as: JSON writes a tuple as an
    array, ``[name, value]``, as the schema says (one list fewer per header and record)."""
    tls = None
    if req.tls_sni or req.tls_alpn or req.url.startswith("https:"):
        tls = {"sni": req.tls_sni or None, "alpn": req.tls_alpn or None}
    response: dict[str, Any] | None = None
    timing = None
    if resp is not None:
        if not (resp.status == 0 and resp.error):
            response = {
                "status": resp.status,
                "reason": resp.reason,
                "version": resp.version,
                "headers": resp.headers,
            }
            if resp.trailers:
                response["trailers"] = resp.trailers
            response["body_size"] = resp.body_size
            response["decoded_size"] = resp.decoded_size
            if bodies is not None:
                response.update(body_fields(header(resp.headers, "content-type"),
                                            bodies.response, bodies.response_truncated))
        t = timings(req, resp)
        timing = {"total_ms": t.total, "send_ms": t.send, "wait_ms": t.wait,
                  "receive_ms": t.receive}
        error = resp.error or None
    else:
        error = UNFINISHED
    request: dict[str, Any] = {
        "method": req.method,
        "url": req.url,
        "version": req.version,
        "headers": req.headers,
        "body_size": resp.request_body_size if resp is not None else None,
    }
    if bodies is not None:
        request.update(body_fields(header(req.headers, "content-type"), bodies.request,
                                   bodies.request_truncated))
    return {
        "type": "http",
        "time": iso_time(req.time),
        "exchange": req.exchange,
        "request": request,
        "response": response,
        "timings": timing,
        "client": req.client,
        "server": req.server,
        "tls": tls,
        "error": error,
    }


_WS_OPCODES = {1: "text", 2: "binary", 8: "close"}


def ws_record(msg: WsMessage) -> dict[str, Any]:
    """The ``ws`` object for one WebSocket message."""
    record: dict[str, Any] = {
        "type": "ws",
        "time": iso_time(msg.time),
        "exchange": msg.exchange,
        "url": msg.url,
        "direction": "send" if msg.from_client else "receive",
        "opcode": _WS_OPCODES.get(msg.opcode, str(msg.opcode)),
        "size": msg.size,
        "compressed": msg.compressed,
        "truncated": msg.truncated,
        "data": None,
    }
    if msg.data is not None:
        if msg.opcode == 1:
            record["data"] = msg.data.decode("utf-8", "replace")
        else:
            record["data"] = base64.b64encode(msg.data).decode("ascii")
            record["data_encoding"] = "base64"
    if msg.opcode == 8:
        record["close_code"] = msg.close_code or None
        record["close_reason"] = msg.close_reason
    return record
