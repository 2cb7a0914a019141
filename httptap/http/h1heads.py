"""HTTP/1.x heads (RFC 9112): finding a head's end, parsing its start line and fields,
and what its fields say about the body that follows (:class:`Framing`). The limits of
what the observer accepts live here, with :class:`HttpError`, the one exception the
parsing raises. Pure; used by the readers (``h1readers``)."""

from __future__ import annotations

import re

from .contentcoding import parse_content_encoding
from .events import RequestHead

#: Largest request or response head (request line plus headers) accepted.
MAX_HEAD = 64 * 1024
#: Most header fields in one head. Far above what real peers send (Apache refuses
#: requests with over 100), low enough that a head of tiny fields stays cheap to keep.
MAX_HEADERS = 1000
#: Largest chunk-size line (with extensions), and largest trailer section.
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 64 * 1024


class HttpError(Exception):
    """The bytes are not HTTP/1.x this observer can follow.

    Raised inside the readers only; the observer's public methods catch it,
    set ``failed``, keep the message in ``error`` and emit a :class:`ProtocolError`.
    The message names the problem as the user sees it ("request head over 64 KiB",
    "invalid chunked encoding", "response is not HTTP"). ``request`` is the head of a
    request whose line was read but whose head failed, so it can still be reported.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.request: RequestHead | None = None




TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"


def head_end(data: bytes | bytearray, start: int, end: int) -> int:
    """Where the first empty line (``\r?\n\r?\n``) within ``data[start:end]`` ends, or -1.

    Two ``find`` calls (memchr speed) instead of a regex search, which stepped through
    every byte of the head in Python's regex engine: 9% of the proxy's time on keep-alive
    traffic. Every match of the pattern contains ``\n\r\n`` or ``\n\n``, so the first
    one ends at the earlier of their first occurrences' ends."""
    crlf = data.find(b"\n\r\n", start, end)
    lf = data.find(b"\n\n", start, end if crlf < 0 else crlf + 2)
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1
REQUEST_LINE = re.compile(rf"([{TCHAR}]{{1,32}}) +([^\x00-\x20\x7f]+) +HTTP/1\.([0-9])")
STATUS_LINE = re.compile(r"HTTP/1\.([0-9]) +([0-9]{3})(?:[ \t]+(.*?))?[ \t]*")
HEADER_LINE = re.compile(rf"([{TCHAR}]+)[ \t]*:[ \t]*(.*?)[ \t]*")
METHOD_PREFIX = re.compile(rb"[" + TCHAR.encode() + rb"]{0,32}(?: |$)")
#: A chunk-size line (CR stripped), matched as bytes: no decoding per chunk.
CHUNK_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")
DIGITS = re.compile(r"[0-9]{1,19}")
HOST_IN_HEAD = re.compile(rb"\nhost[ \t]*:([^\r\n]*)\r?\n", re.IGNORECASE)


def parse_fields(lines: list[str], what: str) -> list[tuple[str, str]]:
    """Header (or trailer) lines, already split and without line ends; ``what`` names
    the section in errors ("request head", "trailer section")."""
    fields: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            # obs-fold (RFC 9112 §5.2): a continuation of the previous value.
            if not fields:
                raise HttpError(f"invalid {what}")  # a continuation line first
            name, value = fields[-1]
            more = line.strip(" \t")
            fields[-1] = (name, f"{value} {more}" if value else more)
            continue
        m = HEADER_LINE.fullmatch(line)
        if m is None:
            raise HttpError(f"invalid {what}")
        fields.append((m[1], m[2]))
    return fields


def split_first(head: bytes) -> tuple[str, str]:
    """A head's first line and its header block (without the empty line)."""
    text = head.decode("latin-1")
    eol = text.find("\n")
    first = text[:eol - 1] if eol > 0 and text[eol - 1] == "\r" else text[:eol]
    block = text[eol + 1:]
    return first, block[:-2] if block.endswith("\r\n") else block[:-1]


#: "token [ws]" before a field's colon: the name part of a well-formed field line.
NAME_PART = re.compile(rf"([{TCHAR}]+)[ \t]*")
#: Name parts already seen, each with its name: header names repeat from head to head
#: (Server, Date, Content-Type...), so most lines are checked by one dict lookup instead
#: of a regex. Bounded in count and key length (past that, NAME_PART checks them).
_NAMES: dict[str, str] = {}
_MAX_NAMES = 512
#: Whole field lines already parsed: most lines repeat from head to head (all but Date
#: on a static file's answers; all of a client's but the few that vary). Cleared when
#: full, so it follows what the connection's peers send now.
_LINES: dict[str, tuple[str, str]] = {}
_MAX_LINES = 1024
#: Longest name part or line kept in either (long lines, cookies, tokens, vary anyway):
#: the caches hold at most a few hundred KB.
_MAX_KEY = 200


def parse_block(block: str, what: str) -> list[tuple[str, str]]:
    """A head's header fields; ``what`` ("request head", "response head") names it in errors."""
    # Most heads are well formed (keep-alive traffic parses a head per request and per
    # response): every line "token [ws] : value \r?\n", no CR but before an LF. Such a
    # block is split on LF and each line partitioned and stripped, which is exact there
    # (a loop over str.partition beats a capturing regex: 1.5 vs 4-11 us for a typical
    # nginx response head). The lines' name parts are checked as they are split (most
    # by a dict lookup), not by a regex over the whole block first, which stepped
    # through every byte in Python's regex engine: half of the head's parse time.
    if "\r" not in block or block.count("\r") == block.count("\r\n"):
        lines = block.split("\n")
        if not lines.pop():             # the block ends with its last line's LF
            names = _NAMES
            known = _LINES
            fields = []
            for line in lines:
                field = known.get(line)
                if field is None:
                    part, colon, value = line.partition(":")
                    name = names.get(part)
                    if name is None or not colon:
                        m = NAME_PART.fullmatch(part)
                        if m is None or not colon:
                            break
                        name = m[1]
                        if len(names) < _MAX_NAMES and len(part) <= _MAX_KEY:
                            names[part] = name
                    field = (name, value.strip(" \t\r"))
                    if len(line) <= _MAX_KEY:
                        if len(known) >= _MAX_LINES:
                            known.clear()
                        known[line] = field
                fields.append(field)
            else:
                return fields
    # Anything else (obs-fold, stray CRs, bad lines) takes the line-by-line path.
    lines = block.split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return parse_fields(lines, what)


_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _UPGRADE, _CONTENT_ENCODING = range(5)
_FRAMING_FIELDS = {"content-length": _CONTENT_LENGTH, "transfer-encoding": _TRANSFER_ENCODING,
                   "connection": _CONNECTION, "upgrade": _UPGRADE,
                   "content-encoding": _CONTENT_ENCODING}
#: Field names as sent (any case) and which of the above each is (-1: none): names repeat
#: from head to head, so most are looked up once, without lower-casing. Bounded, as
#: ``_NAMES``.
_FIELD_OF: dict[str, int] = {}


def _field_of(name: str) -> int:
    field = _FRAMING_FIELDS.get(name.lower(), -1)
    if len(_FIELD_OF) < _MAX_NAMES and len(name) <= _MAX_KEY:
        _FIELD_OF[name] = field
    return field


class Framing:
    """What a head's headers say about its body and connection."""

    __slots__ = ("length", "chunked", "te", "close", "keep_alive", "upgrade", "codings")

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.length: int | None = None
        self.chunked = False
        self.te = False                 # Transfer-Encoding present
        self.close = False
        self.keep_alive = False
        self.upgrade = False
        codings: list[str] = []
        te_codings: list[str] = []
        if len(headers) > MAX_HEADERS:
            raise HttpError("too many headers")
        field_of = _FIELD_OF
        for name, value in headers:
            # One dict lookup per field (most are none of these) instead of lower-casing
            # and a chain of string comparisons.
            field = field_of.get(name)
            if field is None:
                field = _field_of(name)
            if field < 0:
                continue
            if field == _CONTENT_LENGTH:
                if value.isdigit() and value.isascii() and len(value) <= 19:
                    # The usual one number: what the loop below does, without it.
                    n = int(value)
                    if self.length is not None and self.length != n:
                        raise HttpError("invalid Content-Length")  # conflicting values
                    self.length = n
                    continue
                for item in value.split(","):
                    item = item.strip(" \t")
                    if not DIGITS.fullmatch(item):
                        raise HttpError("invalid Content-Length")
                    n = int(item)
                    if self.length is not None and self.length != n:
                        raise HttpError("invalid Content-Length")  # conflicting values
                    self.length = n
            elif field == _TRANSFER_ENCODING:
                self.te = True
                te_codings.extend(c.strip(" \t").lower() for c in value.split(",")
                                  if c.strip(" \t"))
            elif field == _CONNECTION:
                for token in value.split(","):
                    token = token.strip(" \t").lower()
                    if token == "close":
                        self.close = True
                    elif token == "keep-alive":
                        self.keep_alive = True
            elif field == _UPGRADE:
                self.upgrade = True
            else:
                codings.append(value)
        if self.te:
            self.chunked = bool(te_codings) and te_codings[-1] == "chunked"
            self.length = None          # RFC 9112 §6.3: Transfer-Encoding wins
        self.codings = parse_content_encoding(codings) if codings else codings

