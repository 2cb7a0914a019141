"""The HAR sink: every exchange in one HAR 1.2 file (``--dump-har PATH``, ``--sink har:PATH``).

Role in the pipeline: the sink stage hands every proxy event to :class:`HarSink`, which
appends each entry, as soon as it is known, to a spool file in the run directory (see
"the spool" below: memory stays bounded, and what was spooled survives the sink) and
writes the whole file from the spool at :meth:`HarSink.close` (called on every way out).
If the sink stage dies, the supervisor writes the file from the spool it left
(:func:`assemble_spool`). The write is atomic: the JSON goes to a temporary file in the
same directory, is fsync'ed, and replaces ``PATH`` with ``os.replace``; a crash or a full
disk mid-write leaves either the old file or none, never half of one.

What goes into an entry (http://www.softwareishard.com/blog/har-12-spec/):

- ``startedDateTime``: when the request head was read; ``time`` and ``timings``: ``send``,
  ``wait`` and ``receive`` in milliseconds (see ``common.timings``); httptap does not see
  DNS, connect or TLS setup separately, so ``blocked``, ``dns``, ``connect``, ``ssl`` are -1.
- ``request``: ``cookies`` from ``Cookie``, ``queryString`` from the URL, ``postData``
  when a request body was captured (text as text, anything else base64 with
  ``"encoding": "base64"``), ``bodySize`` as read from the command.
- A body kept only in part (``--max-body-size``) has a ``comment`` in its ``postData`` or
  ``content``: ``"truncated: the first N of M bytes are kept (--max-body-size)"``.
- ``response``: ``cookies`` parsed from each ``Set-Cookie``, ``content`` with ``size``
  (decoded), ``compression`` (bytes saved by content coding), ``mimeType`` and, when the
  body was captured, ``text`` (text types decoded in their charset, others or undecodable
  text base64 with ``"encoding": "base64"``); ``redirectURL`` from ``Location``.
- ``headersSize`` is -1 (the raw heads are not kept); ``serverIPAddress`` is the address
  the command connected to; ``connection`` is the command's source port.
- An exchange that ended without a response, or was still open at exit, has status 0
  and an ``_error`` string. Entries are sorted by ``startedDateTime``.

- WebSocket: the messages of a connection that a 101 switched to WebSocket go, as
  browsers export them, in ``_webSocketMessages`` on that 101's entry: ``type``
  (``send``: from the command, ``receive``), ``time`` (epoch seconds), ``opcode``
  (1 text, 2 binary, 8 close) and ``data`` (text as text; binary and close payloads
  base64, as Chrome's DevTools protocol gives them); ``_truncated`` when only the first
  64 KiB were kept. They are collected by exchange id and the 101 entry is spooled again
  with them when the WebSocket ends, or at close (:meth:`HarSink._attach_websocket_messages`).

DNS and TCP summaries are not part of HAR and are ignored.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

import msgspec

from .. import __version__
from ..plumbing.messages import (BodyChunk, DnsExchange, HttpRequest, HttpResponse, HttpResponseHead,
                        TcpSummary, WsEnd, WsMessage)
from ..run.outputs import PRIVATE_MODE
from .bodies import NO_BODIES, Bodies
from .common import (UNFINISHED, body_is_text, decode_text_strict, header, header_values,
                     host_of, iso_time, port_of, timings)

Json = dict[str, Any]


class HarSink:
    """``spool``: the file entries are spooled to (created 0600, removed at close); None:
    an anonymous temporary file."""

    def __init__(self, path: str | os.PathLike[str], spool: str | None = None) -> None:
        self.path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"HAR file directory does not exist: {directory}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write the HAR file in {directory}")
        self._requests: dict[int, HttpRequest] = {}
        self._spool_path = spool
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        if spool is None:
            self._spool_fd = _anonymous_file(flags)
        else:
            self._spool_fd = os.open(spool, flags | os.O_CREAT | os.O_TRUNC, 0o600)
        self._closed = False
        self._switched: dict[int, tuple[float, Json]] = {}  # 101 entries, by exchange id
        self._ws_messages: dict[int, list[Json]] = {}  # their WebSocket messages

    # --- events ----------------------------------------------------------------------------

    def request(self, req: HttpRequest) -> None:
        if self._closed:
            return
        self._requests[req.exchange] = req
        # Spooled at once, as unfinished: should the sink die before the response, the
        # supervisor still lists the request, with an error.
        spool_entry(self._spool_fd, REQUEST, req.exchange, req.time, entry(req, None))

    def response_head(self, head: HttpResponseHead) -> None:
        pass  # a record is written whole, when the response completes

    def body_chunk(self, chunk: BodyChunk) -> None:
        pass  # bodies come whole with the response

    def response(self, resp: HttpResponse, bodies: Bodies = NO_BODIES) -> None:
        if self._closed:
            return
        req = self._requests.get(resp.exchange)
        if req is None:  # a response to a request we never saw: keep what we know
            req = HttpRequest(exchange=resp.exchange, time=resp.time, method="", url="",
                              version=resp.version, headers=[], client="", server="")
        built = entry(req, resp, bodies)
        spool_entry(self._spool_fd, COMPLETE, resp.exchange, req.time, built)
        self._requests.pop(resp.exchange, None)
        if resp.status == 101:  # spooled again with its WebSocket messages when they end
            self._switched[resp.exchange] = (req.time, built)

    def tcp(self, summary: TcpSummary) -> None:
        pass

    def dns(self, dns: DnsExchange) -> None:
        pass

    def ws(self, msg: WsMessage) -> None:
        if self._closed:
            return
        self._ws_messages.setdefault(msg.exchange, []).append(ws_message(msg))

    def ws_end(self, end: WsEnd) -> None:
        if self._closed:
            return
        self._attach_websocket_messages(end.exchange)

    def _attach_websocket_messages(self, exchange: int) -> None:
        """Spool the 101 entry of ``exchange`` again, now with its WebSocket messages
        (the later line replaces the first), and forget both."""
        messages = self._ws_messages.pop(exchange, None)
        switched = self._switched.pop(exchange, None)
        if messages is not None and switched is not None:
            started, built = switched
            built["_resourceType"] = "websocket"
            built["_webSocketMessages"] = messages
            spool_entry(self._spool_fd, COMPLETE, exchange, started, built)

    def stats(self, table: dict[str, object]) -> None:
        pass

    def flush(self) -> None:
        pass  # the spool is written as events come; the file at close

    def close(self) -> None:
        """Write the file from the spool (once: later calls do nothing). Exchanges still
        open are in the spool as unfinished entries."""
        if self._closed:
            return
        self._closed = True
        for exchange in list(self._ws_messages):
            self._attach_websocket_messages(exchange)
        self._requests.clear()
        try:
            assemble(self._spool_fd, self.path)
        except Exception:
            self._remove_spool()  # tried and failed: the caller reports it
            raise
        except BaseException:
            # Interrupted (the supervisor's SIGTERM): the spool stays for the supervisor.
            os.close(self._spool_fd)
            raise
        self._remove_spool()

    def _remove_spool(self) -> None:
        """Close the spool; remove its file, so that the supervisor assembles only the
        spools of a sink that did not get this far."""
        os.close(self._spool_fd)
        if self._spool_path is not None:
            try:
                os.unlink(self._spool_path)
            except FileNotFoundError:
                pass


def _anonymous_file(flags: int) -> int:
    """A temporary file with no name (gone with its descriptor)."""
    try:
        return os.open(tempfile.gettempdir(), flags | os.O_TMPFILE, 0o600)
    except OSError:  # a file system without O_TMPFILE
        fd, name = tempfile.mkstemp(prefix="httptap-har-")
        os.unlink(name)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        return fd


# --- the spool -----------------------------------------------------------------------------
#
# One line per record, appended with a single write as each event arrives:
#     KIND SP EXCHANGE SP STARTED SP ENTRY-JSON LF
# KIND is R (a request, its entry as if it never completed) or E (the completed entry,
# replacing the R of the same exchange). STARTED (the request's time, a float) orders
# the entries. A line without its LF (the sink died while writing it) is ignored, so the
# spool is valid whenever the sink stops, and the HAR file is written from it without
# holding more than one entry in memory (plus a small index).

REQUEST, COMPLETE = b"R", b"E"


def spool_path(directory: str, index: int) -> str:
    """The spool of the ``index``-th sink spec when it is a HAR sink."""
    return os.path.join(directory, f"har{index}.spool")


def spool_entry(fd: int, kind: bytes, exchange: int, started: float, item: Json) -> None:
    line = b"%s %d %s %s\n" % (kind, exchange, repr(started).encode(), _encode_entry(item))
    view = memoryview(line)
    while view:
        view = view[os.write(fd, view):]


def _encode_entry(item: Json) -> bytes:
    try:
        return msgspec.json.encode(item)
    except UnicodeEncodeError:  # a lone surrogate in some string: escape it
        return json.dumps(item, ensure_ascii=True, separators=(",", ":")).encode()


def spool_index(fd: int) -> list[tuple[int, int]]:
    """(offset, length) of each entry's JSON in the spool, in ``startedDateTime`` order:
    one per exchange, its completed entry if there is one."""
    found: dict[int, tuple[float, int, int, int]] = {}  # exchange -> started, seq, offset, length
    offset = 0
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        for seq, line in enumerate(f):
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                break  # cut short: the writer died mid-line
            parts = line.split(b" ", 3)
            try:
                kind, exchange, started = parts[0], int(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                continue
            if kind == COMPLETE or (kind == REQUEST and exchange not in found):
                first = found.get(exchange, (0.0, seq))[1]
                head = len(line) - len(parts[3])
                found[exchange] = (started, first, start + head, len(parts[3]) - 1)
    return [(off, length) for _, _, off, length in sorted(found.values())]


def assemble(spool_fd: int, path: str) -> int:
    """Write the HAR file ``path`` (atomically) from a spool; returns the entry count."""
    index = spool_index(spool_fd)
    empty = msgspec.json.format(msgspec.json.encode(har_log([])), indent=2)
    head, tail = empty.rsplit(b"[]", 1)  # "entries" comes last
    with atomic_output(path) as out:
        out.write(head + b"[")
        for i, (offset, length) in enumerate(index):
            raw = os.pread(spool_fd, length, offset)
            formatted = msgspec.json.format(raw, indent=2).replace(b"\n", b"\n" + ENTRY_INDENT)
            out.write((b",\n" if i else b"\n") + ENTRY_INDENT + formatted)
        out.write((b"\n    ]" if index else b"]") + tail + b"\n")
    return len(index)


ENTRY_INDENT = b" " * 6  # entries sit in {"log": {"entries": [ ... ]}}


def assemble_spool(spool: str, path: str) -> int | None:
    """The HAR file from the spool a dead sink left behind; None if there is none."""
    try:
        fd = os.open(spool, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return assemble(fd, path)
    finally:
        os.close(fd)
        os.unlink(spool)


def har_log(entries: list[Json]) -> Json:
    return {"log": {
        "version": "1.2",
        "creator": {"name": "httptap", "version": __version__},
        "pages": [],
        "entries": entries,
    }}


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """A file that replaces ``path`` when the block ends without an exception (a reader
    never sees a partial file): written to a temporary file in the same directory,
    fsync'ed, renamed over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        os.fchmod(fd, PRIVATE_MODE)  # bodies, cookies: 0600 whatever the umask
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not every filesystem allows this
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# --- one entry -----------------------------------------------------------------------------

def entry(req: HttpRequest, resp: HttpResponse | None, bodies: Bodies = NO_BODIES) -> Json:
    """The HAR entry for an exchange (``resp`` None: it never completed) with the bodies
    captured of it."""
    result: Json = {
        "startedDateTime": iso_time(req.time),
        "time": 0.0,
        "request": _request(req, resp, bodies),
        "response": _response(req, resp, bodies),
        "cache": {},
        "timings": {"blocked": -1, "dns": -1, "connect": -1, "send": 0.0, "wait": 0.0,
                    "receive": 0.0, "ssl": -1},
    }
    if resp is not None:
        t = timings(req, resp)
        result["time"] = t.total
        result["timings"].update(send=t.send, wait=t.wait, receive=t.receive)
    if req.server:
        result["serverIPAddress"] = host_of(req.server)
    if port_of(req.client):
        result["connection"] = port_of(req.client)
    error = UNFINISHED if resp is None else resp.error
    if error:
        result["_error"] = error
    return result


def _headers(headers: list[tuple[str, str]]) -> list[Json]:
    return [{"name": n, "value": v} for n, v in headers]


def _request(req: HttpRequest, resp: HttpResponse | None, bodies: Bodies) -> Json:
    try:
        query = urlsplit(req.url).query
    except ValueError:
        query = ""
    result: Json = {
        "method": req.method,
        "url": req.url,
        "httpVersion": req.version,
        "cookies": request_cookies(req.headers),
        "headers": _headers(req.headers),
        "queryString": [{"name": n, "value": v}
                        for n, v in parse_qsl(query, keep_blank_values=True, errors="replace")],
        "headersSize": -1,
        "bodySize": resp.request_body_size if resp is not None else -1,
    }
    if resp is not None and (bodies.request or bodies.request_truncated):
        ctype = header(req.headers, "content-type")
        post: Json = {"mimeType": ctype or "", **_body(ctype, bodies.request)}
        if bodies.request_truncated:
            post["comment"] = truncated_comment(len(bodies.request), resp.request_body_size)
        result["postData"] = post
    return result


def _response(req: HttpRequest, resp: HttpResponse | None, bodies: Bodies) -> Json:
    if resp is None or (resp.status == 0 and resp.error):
        return {
            "status": 0, "statusText": "", "httpVersion": resp.version if resp else "",
            "cookies": [], "headers": [], "content": {"size": 0, "mimeType": ""},
            "redirectURL": "", "headersSize": -1, "bodySize": -1,
        }
    ctype = header(resp.headers, "content-type")
    content: Json = {"size": resp.decoded_size, "mimeType": ctype or ""}
    if resp.decoded_size > resp.body_size:
        content["compression"] = resp.decoded_size - resp.body_size
    if bodies.response:
        content.update(_body(ctype, bodies.response))
    if bodies.response_truncated:
        content["comment"] = truncated_comment(len(bodies.response), resp.decoded_size)
    return {
        "status": resp.status,
        "statusText": resp.reason,
        "httpVersion": resp.version,
        "cookies": response_cookies(resp.headers, resp.time),
        "headers": _headers(resp.headers),
        **({"_trailers": _headers(resp.trailers)} if resp.trailers else {}),
        "content": content,
        "redirectURL": header(resp.headers, "location") or "",
        "headersSize": -1,
        "bodySize": resp.body_size,
    }


def truncated_comment(kept: int, size: int) -> str:
    return f"truncated: the first {kept} of {size} bytes are kept (--max-body-size)"


def _body(content_type: str | None, body: bytes) -> Json:
    """``{"text": ...}`` for text, ``{"text": base64, "encoding": "base64"}`` otherwise."""
    if body_is_text(content_type, body):
        text = decode_text_strict(content_type, body)
        if text is not None:
            return {"text": text}
    return {"text": base64.b64encode(body).decode("ascii"), "encoding": "base64"}


def ws_message(msg: WsMessage) -> Json:
    """One ``_webSocketMessages`` item, as Chrome and Firefox export it."""
    data = msg.data or b""
    result: Json = {
        "type": "send" if msg.from_client else "receive",
        "time": msg.time,
        "opcode": msg.opcode,
        "data": (data.decode("utf-8", "replace") if msg.opcode == 1
                 else base64.b64encode(data).decode("ascii")),
    }
    if msg.truncated:
        result["_truncated"] = True
    return result


# --- cookies -------------------------------------------------------------------------------

def request_cookies(headers: list[tuple[str, str]]) -> list[Json]:
    """``Cookie: a=1; b=2`` -> ``[{"name": "a", "value": "1"}, {"name": "b", ...}]``."""
    cookies = []
    for value in header_values(headers, "cookie"):
        for pair in value.split(";"):
            name, sep, val = pair.strip().partition("=")
            if name or sep:
                cookies.append({"name": name.strip(), "value": val.strip()})
    return cookies


def response_cookies(headers: list[tuple[str, str]], now: float) -> list[Json]:
    """Every ``Set-Cookie`` as a HAR cookie (RFC 6265 section 5.2, leniently): ``Max-Age``
    wins over ``Expires``; an unparseable date is left out."""
    cookies = []
    for value in header_values(headers, "set-cookie"):
        first, *attributes = value.split(";")
        name, sep, val = first.partition("=")
        if not sep:  # no "=": a nameless cookie whose value is the whole pair
            name, val = "", name
        cookie: Json = {"name": name.strip(), "value": val.strip()}
        max_age: int | None = None
        expires: str | None = None
        for attribute in attributes:
            key, _, arg = attribute.partition("=")
            key, arg = key.strip().lower(), arg.strip()
            if key == "path":
                cookie["path"] = arg
            elif key == "domain":
                cookie["domain"] = arg
            elif key == "httponly":
                cookie["httpOnly"] = True
            elif key == "secure":
                cookie["secure"] = True
            elif key == "samesite":
                cookie["sameSite"] = arg
            elif key == "max-age":
                try:
                    max_age = int(arg)
                except ValueError:
                    pass
            elif key == "expires":
                expires = _cookie_date(arg)
        if max_age is not None:
            try:
                cookie["expires"] = iso_time(now + max_age)
            except (ValueError, OverflowError, OSError):  # beyond year 9999
                pass
        elif expires is not None:
            cookie["expires"] = expires
        cookies.append(cookie)
    return cookies


def _cookie_date(value: str) -> str | None:
    try:
        return iso_time(parsedate_to_datetime(value.replace("-", " ")).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
