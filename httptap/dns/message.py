"""DNS messages: parse what the command's stub resolver sends, build what we answer.

Role in the pipeline: the proxy stage hands every datagram (and every length-prefixed
message of a TCP stream, cut by :class:`TcpDnsReader`) sent to port 53 to
``httptap.dns.resolver.Resolver``, which calls :func:`parse_query`, decides, and answers
with :func:`build_response` or :func:`build_error` -- or forwards the query's raw bytes
upstream and decodes the answer with :func:`parse_response` for ``--print-dns``.

Theory of operation (RFC 1035 section 4, RFC 3596 for AAAA, RFC 6891 for OPT)
------------------------------------------------------------------------------
* A message is a 12-byte header (id, flags, four section counts) and four sections:
  questions, answers, authority, additional. Every parser either returns a result or
  raises :class:`DnsError` (a ``ValueError``), whatever the input; nothing else escapes.
* Names are read label by label. A length byte with the top two bits set is a
  compression pointer (section 4.1.4). A pointer must point strictly before itself, at
  most :data:`MAX_POINTERS` pointers are followed, and the name may not grow past 255
  bytes on the wire (section 2.3.4), so a pointer loop always ends in ``DnsError``.
  Label types ``01`` and ``10`` (RFC 6891's extended labels, long obsolete) are refused.
* Names are text in presentation form with a trailing dot (``"example.com."``, the root
  is ``"."``); a byte that is not printable ASCII, or is one of ``. \\ " ( ) ; @ $`` or
  a space, is written ``\\DDD`` or ``\\X`` (RFC 1035 section 5.1), so
  every wire name has exactly one text form and :func:`encode_name` reverses it.
* A query keeps its raw bytes (for forwarding) and its question section as it came
  (with the sender's letter case, which 0x20-randomising resolvers check). Responses
  copy that section unchanged: the header is the same size, so any pointers in it stay
  valid, and answer names that equal a question's name are written as a pointer to it.
* A query's other sections are walked for structure only; an OPT record in the
  additional section gives the sender's UDP payload size (:attr:`Query.udp_size`).
  Responses never carry OPT: a responder without EDNS is allowed to omit it.

Not implemented: EDNS options and extended RCODEs, DNSSEC, name compression of suffixes
(only whole names that equal a question are compressed), zone transfers, and decoding of
record types other than A, AAAA, CNAME, NS, PTR, MX, TXT, SOA and SRV (those are shown in
RFC 3597's generic ``\\# N hex`` form).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

# --- numbers -----------------------------------------------------------------------------

HEADER = struct.Struct("!HHHHHH")   # id, flags, qdcount, ancount, nscount, arcount
HEADER_SIZE = 12
MAX_NAME = 255          # bytes on the wire, including the length bytes and the root
MAX_LABEL = 63
MAX_POINTERS = 127      # no valid name needs more: it has at most 127 labels
MAX_UDP_PLAIN = 512     # RFC 1035 section 4.2.1: the UDP limit without EDNS

# Flag bits (section 4.1.1).
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010
OPCODE_SHIFT = 11

OPCODE_QUERY = 0

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = range(6)

CLASS_IN = 1

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_SVCB = 64
TYPE_HTTPS = 65
TYPE_ANY = 255

_TYPE_NAMES = {
    TYPE_A: "A", TYPE_NS: "NS", TYPE_CNAME: "CNAME", TYPE_SOA: "SOA", TYPE_PTR: "PTR",
    TYPE_MX: "MX", TYPE_TXT: "TXT", TYPE_AAAA: "AAAA", TYPE_SRV: "SRV", TYPE_OPT: "OPT",
    TYPE_SVCB: "SVCB", TYPE_HTTPS: "HTTPS", TYPE_ANY: "ANY",
}
_RCODE_NAMES = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
                "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE"]


def qtype_name(qtype: int) -> str:
    """``"AAAA"`` for 28; ``"TYPE<n>"`` (RFC 3597) for types without a name here."""
    return _TYPE_NAMES.get(qtype, f"TYPE{qtype}")


def rcode_name(rcode: int) -> str:
    """``"NXDOMAIN"`` for 3; ``"RCODE<n>"`` for codes without a name."""
    return _RCODE_NAMES[rcode] if 0 <= rcode < len(_RCODE_NAMES) else f"RCODE{rcode}"


class DnsError(ValueError):
    """The bytes are not a DNS message we accept (or a name cannot be encoded)."""


# --- results -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Question:
    name: str           # presentation form with the trailing dot
    qtype: int
    qclass: int
    offset: int = 0     # where the name starts in the message (for compression pointers)


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    opcode: int
    rd: bool
    questions: list[Question]
    raw: bytes              # the whole message as received, for forwarding
    question_section: bytes  # raw[12:end of the last question]
    udp_size: int = MAX_UDP_PLAIN  # the largest UDP answer the sender takes (EDNS or 512)


@dataclass(frozen=True, slots=True)
class Record:
    """A resource record to put in a response; ``rdata`` is already in wire form."""
    name: str
    rtype: int
    ttl: int
    rdata: bytes
    rclass: int = CLASS_IN


@dataclass(frozen=True, slots=True)
class Answer:
    """A resource record read from a response; ``text`` is its rdata in presentation form
    (``"93.184.215.14"``, ``"10 mail.example.com."``, ``'"v=spf1 -all"'``)."""
    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes
    text: str


@dataclass(frozen=True, slots=True)
class Response:
    id: int
    flags: int
    rcode: int
    questions: list[Question]
    answers: list[Answer] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TC)


# --- names -------------------------------------------------------------------------------

_SPECIAL = frozenset(b'.\\"();@$ ')


def _label_text(label: bytes) -> str:
    out = []
    for b in label:
        if b in _SPECIAL:
            out.append("\\" + chr(b))
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset just after it (after the first pointer, if
    the name is compressed). Raises :class:`DnsError` for a truncated name, a forward or
    looping pointer, a reserved label type, or a name longer than 255 bytes."""
    labels: list[str] = []
    wire_len = 1            # the root's zero byte
    pointers = 0
    pos = offset
    end: int | None = None  # where the caller continues: after the first pointer
    while True:
        if pos >= len(data):
            raise DnsError("name runs past the end of the message")
        length = data[pos]
        if length == 0:
            if end is None:
                end = pos + 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= len(data):
                raise DnsError("compression pointer runs past the end of the message")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= pos:
                raise DnsError("compression pointer does not point backwards")
            pointers += 1
            if pointers > MAX_POINTERS:
                raise DnsError("compression pointer loop")
            if end is None:
                end = pos + 2
            pos = target
            continue
        if kind:
            raise DnsError(f"reserved label type {kind >> 6:#04b}")
        wire_len += length + 1
        if wire_len > MAX_NAME:
            raise DnsError("name longer than 255 bytes (or a compression pointer loop)")
        if pos + 1 + length > len(data):
            raise DnsError("label runs past the end of the message")
        labels.append(_label_text(data[pos + 1:pos + 1 + length]))
        pos += 1 + length
    return ("." if not labels else ".".join(labels) + "."), end


def name_labels(name: str) -> list[bytes]:
    """The labels of a presentation-form name (the trailing dot is optional; ``"."`` and
    ``""`` are the root). Raises :class:`DnsError` for a bad escape, an empty label, a
    label over 63 bytes or a name over 255."""
    labels: list[bytes] = []
    cur = bytearray()
    i, n = 0, len(name)
    if name in ("", "."):
        return []
    while i < n:
        c = name[i]
        if c == "\\":
            digits = name[i + 1:i + 4]
            if len(digits) == 3 and all(d in "0123456789" for d in digits):
                if int(digits) > 255:
                    raise DnsError(f"bad escape in name {name!r}")
                cur.append(int(digits))
                i += 4
                continue
            if i + 1 >= n:
                raise DnsError(f"name ends in a backslash: {name!r}")
            ch = name[i + 1]
            if ch in "0123456789":
                raise DnsError(f"bad escape in name {name!r}")
            cur += ch.encode("utf-8")
            i += 2
            continue
        if c == ".":
            if not cur:
                raise DnsError(f"empty label in name {name!r}")
            labels.append(bytes(cur))
            cur = bytearray()
            i += 1
            continue
        cur += c.encode("utf-8")
        i += 1
    if cur:
        labels.append(bytes(cur))
    for label in labels:
        if len(label) > MAX_LABEL:
            raise DnsError(f"label longer than 63 bytes in {name!r}")
    if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME:
        raise DnsError(f"name longer than 255 bytes: {name!r}")
    return labels


def encode_name(name: str) -> bytes:
    """The uncompressed wire form of a presentation-form name."""
    return b"".join(bytes([len(label)]) + label for label in name_labels(name)) + b"\0"


def _name_key(name: str) -> bytes:
    """The form in which two names compare equal (ASCII case-insensitive, section 2.3.3)."""
    return encode_name(name).lower()


# --- queries -----------------------------------------------------------------------------

def _header(data: bytes) -> tuple[int, int, int, int, int, int]:
    if len(data) < HEADER_SIZE:
        raise DnsError("shorter than a DNS header")
    return HEADER.unpack_from(data)


def _read_question(data: bytes, offset: int) -> tuple[Question, int]:
    name, pos = read_name(data, offset)
    if pos + 4 > len(data):
        raise DnsError("question runs past the end of the message")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    return Question(name, qtype, qclass, offset), pos + 4


def _read_questions(data: bytes, count: int) -> tuple[list[Question], int]:
    """The ``count`` questions after the header, and the offset after them: the walk
    every message starts with (queries, responses, truncation)."""
    pos = HEADER_SIZE
    questions = []
    for _ in range(count):
        q, pos = _read_question(data, pos)
        questions.append(q)
    return questions, pos


def _read_rr(data: bytes, offset: int) -> tuple[str, int, int, int, int, int]:
    """Walk one resource record: its name, type, class and TTL, and where its data
    starts and ends (the next record starts there)."""
    name, pos = read_name(data, offset)
    if pos + 10 > len(data):
        raise DnsError("record header runs past the end of the message")
    rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
    pos += 10
    if pos + rdlen > len(data):
        raise DnsError("record data runs past the end of the message")
    return name, rtype, rclass, ttl, pos, pos + rdlen


def _skip_rr(data: bytes, offset: int) -> tuple[int, int, int]:
    """Walk one resource record; return its type, class and the offset after it."""
    _, rtype, rclass, _ttl, _start, end = _read_rr(data, offset)
    return rtype, rclass, end


def parse_query(data: bytes) -> Query:
    """Parse a query. Raises :class:`DnsError` for anything malformed, and for a message
    with the QR bit set (a response is never answered). Bytes after the last record are
    ignored."""
    data = bytes(data)
    ident, flags, qdcount, ancount, nscount, arcount = _header(data)
    if flags & QR:
        raise DnsError("not a query (QR is set)")
    questions, pos = _read_questions(data, qdcount)
    qend = pos
    udp_size = MAX_UDP_PLAIN
    for i in range(ancount + nscount + arcount):
        rtype, rclass, pos = _skip_rr(data, pos)
        if rtype == TYPE_OPT and i >= ancount + nscount:
            udp_size = max(MAX_UDP_PLAIN, rclass)   # RFC 6891 section 6.2.5
    return Query(ident, flags, (flags >> OPCODE_SHIFT) & 0xF, bool(flags & RD), questions,
                 data, data[HEADER_SIZE:qend], udp_size)


# --- building ----------------------------------------------------------------------------

def a_record(name: str, ip: str, ttl: int) -> Record:
    """An A record; raises :class:`DnsError` if ``ip`` is not an IPv4 address."""
    try:
        return Record(name, TYPE_A, ttl, ipaddress.IPv4Address(ip).packed)
    except ValueError as e:
        raise DnsError(str(e)) from None


def aaaa_record(name: str, ip: str, ttl: int) -> Record:
    """An AAAA record (RFC 3596); raises :class:`DnsError` if ``ip`` is not IPv6."""
    try:
        return Record(name, TYPE_AAAA, ttl, ipaddress.IPv6Address(ip).packed)
    except ValueError as e:
        raise DnsError(str(e)) from None


def _response_flags(query_flags: int, rcode: int, *, ra: bool, aa: bool, tc: bool = False) -> int:
    flags = QR | (query_flags & ((0xF << OPCODE_SHIFT) | RD | CD)) | (rcode & 0xF)
    if ra:
        flags |= RA
    if aa:
        flags |= AA
    if tc:
        flags |= TC
    return flags


def build_response(query: Query, answers: list[Record], rcode: int = NOERROR, *,
                   ra: bool = True, aa: bool = False) -> bytes:
    """A response to ``query``: its id, opcode, RD and CD echoed, its question section
    copied as it came, then ``answers``. Raises :class:`DnsError` if a record's name or
    data cannot be encoded or the message would pass 65535 bytes."""
    out = bytearray(HEADER.pack(query.id, _response_flags(query.flags, rcode, ra=ra, aa=aa),
                                len(query.questions), len(answers), 0, 0))
    out += query.question_section
    pointers: dict[bytes, int] = {}
    for q in query.questions:
        try:
            pointers.setdefault(_name_key(q.name), q.offset)
        except DnsError:    # pragma: no cover - names read from the wire always encode
            pass
    for rr in answers:
        key = _name_key(rr.name)
        where = pointers.get(key)
        if where is not None and where < 0x4000:
            out += struct.pack("!H", 0xC000 | where)
        else:
            if len(out) < 0x4000:
                pointers[key] = len(out)
            out += encode_name(rr.name)
        if not 0 <= rr.ttl <= 0x7FFFFFFF or len(rr.rdata) > 0xFFFF:
            raise DnsError("TTL or record data out of range")
        out += struct.pack("!HHIH", rr.rtype, rr.rclass, rr.ttl, len(rr.rdata)) + rr.rdata
    if len(out) > 0xFFFF:
        raise DnsError("response longer than 65535 bytes")
    return bytes(out)


def build_error(data_or_query: bytes | Query, rcode: int) -> bytes | None:
    """An error response (FORMERR, SERVFAIL, NOTIMP, ...) to a query, or to bytes that
    may not parse. The questions are echoed when they can be read; otherwise only the
    header's id, opcode and RD are. Returns ``None`` -- drop, do not answer -- for fewer
    than 12 bytes and for a message that is itself a response. Never raises."""
    if isinstance(data_or_query, Query):
        return build_response(data_or_query, [], rcode)
    data = bytes(data_or_query)
    try:
        return build_response(parse_query(data), [], rcode)
    except DnsError:
        pass
    if len(data) < HEADER_SIZE:
        return None
    ident, flags = struct.unpack_from("!HH", data)
    if flags & QR:
        return None
    return HEADER.pack(ident, _response_flags(flags, rcode, ra=True, aa=False), 0, 0, 0, 0)


def truncate(response: bytes, limit: int) -> bytes:
    """``response`` if it fits in ``limit`` bytes; otherwise its header and questions with
    TC set and no records (RFC 2181 section 9: the client retries over TCP). A response
    whose questions cannot be read keeps only its header."""
    if len(response) <= limit or len(response) < HEADER_SIZE:
        return response
    ident, flags, qdcount, *_ = HEADER.unpack_from(response)
    try:
        _, pos = _read_questions(response, qdcount)
    except DnsError:
        qdcount, pos = 0, HEADER_SIZE
    return HEADER.pack(ident, flags | TC, qdcount, 0, 0, 0) + response[HEADER_SIZE:pos]


# --- responses ---------------------------------------------------------------------------

def _char_strings(rdata: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(rdata):
        n = rdata[pos]
        if pos + 1 + n > len(rdata):
            raise DnsError("character-string runs past the record data")
        out.append(rdata[pos + 1:pos + 1 + n])
        pos += 1 + n
    return out


def _quoted(s: bytes) -> str:
    out = []
    for b in s:
        if b in b'"\\':
            out.append("\\" + chr(b))
        elif 0x20 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'


def _rdata_text(data: bytes, start: int, end: int, rtype: int) -> str:
    """Presentation form of the rdata at ``data[start:end]`` (names in it may point
    anywhere earlier in the message); RFC 3597's generic form when it does not decode."""
    try:
        return _decoded_rdata(data, start, end, rtype)
    except DnsError:
        rdata = data[start:end]
        return f"\\# {len(rdata)} {rdata.hex()}" if rdata else "\\# 0"


def _decoded_rdata(data: bytes, start: int, end: int, rtype: int) -> str:
    rdata = data[start:end]
    if rtype == TYPE_A and len(rdata) == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == TYPE_AAAA and len(rdata) == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (TYPE_CNAME, TYPE_NS, TYPE_PTR):
        name, pos = read_name(data[:end], start)
        if pos == end:
            return name
    elif rtype == TYPE_MX and len(rdata) >= 3:
        name, pos = read_name(data[:end], start + 2)
        if pos == end:
            return f"{struct.unpack_from('!H', rdata)[0]} {name}"
    elif rtype == TYPE_SRV and len(rdata) >= 7:
        name, pos = read_name(data[:end], start + 6)
        if pos == end:
            prio, weight, port = struct.unpack_from("!HHH", rdata)
            return f"{prio} {weight} {port} {name}"
    elif rtype == TYPE_TXT and rdata:
        return " ".join(_quoted(s) for s in _char_strings(rdata))
    elif rtype == TYPE_SOA:
        mname, pos = read_name(data[:end], start)
        rname, pos = read_name(data[:end], pos)
        if pos + 20 == end:
            numbers = struct.unpack_from("!IIIII", data, pos)
            return f"{mname} {rname} " + " ".join(map(str, numbers))
    else:
        return f"\\# {len(rdata)} {rdata.hex()}" if rdata else "\\# 0"
    raise DnsError(f"bad {qtype_name(rtype)} record data")


def parse_response(data: bytes) -> Response:
    """Parse a response: header, questions and the answer section (authority and
    additional records are not read). Raises :class:`DnsError` for anything malformed,
    including a message without the QR bit."""
    data = bytes(data)
    ident, flags, qdcount, ancount, _, _ = _header(data)
    if not flags & QR:
        raise DnsError("not a response (QR is clear)")
    questions, pos = _read_questions(data, qdcount)
    answers = []
    for _ in range(ancount):
        name, rtype, rclass, ttl, start, pos = _read_rr(data, pos)
        answers.append(Answer(name, rtype, rclass, ttl, data[start:pos],
                              _rdata_text(data, start, pos, rtype)))
    return Response(ident, flags, flags & 0xF, questions, answers)


# --- TCP framing (RFC 1035 section 4.2.2, RFC 7766) ---------------------------------------

def frame_tcp(msg: bytes) -> bytes:
    """``msg`` with its two-byte length prefix, as sent on a TCP stream."""
    if len(msg) > 0xFFFF:
        raise DnsError("message longer than 65535 bytes")
    return struct.pack("!H", len(msg)) + msg


class TcpDnsReader:
    """Cuts a TCP byte stream into DNS messages: ``feed`` any pieces, get whole
    messages back in order. A zero-length message is returned as ``b""``."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 2:
            n = (self._buf[0] << 8) | self._buf[1]
            if len(self._buf) < 2 + n:
                break
            out.append(bytes(self._buf[2:2 + n]))
            del self._buf[:2 + n]
        return out

    @property
    def pending(self) -> int:
        """Bytes held back: a message not yet complete (non-zero at EOF means the peer
        closed mid-message)."""
        return len(self._buf)
