"""The test hosts' DNS server: ``DNSZone``, a tiny authoritative responder (TXT, A, AAAA of
fixed names, NXDOMAIN otherwise), served over TCP here and over UDP by
``plumbing.serve_udp``.
"""

from __future__ import annotations

import socket
import socketserver
import struct

from hostservers.content import DNS_A_NAME, DNS_TTL, DNS_TXT, DNS_TXT_NAME
from hostservers.plumbing import _DualStackMixin, _QuietErrors

class DNSZone:
    """A tiny authoritative responder: a few fixed records, NXDOMAIN for other names.

    ``answer(query)`` takes one DNS message and returns the response (or None
    for something not worth answering: too short, or itself a response).
    """

    TYPES = {"A": 1, "TXT": 16, "AAAA": 28}

    def __init__(self, a: str | None = None, aaaa: str | None = None) -> None:
        self.records: dict[str, list[tuple[int, bytes]]] = {
            DNS_TXT_NAME: [(16, bytes([len(DNS_TXT)]) + DNS_TXT)],
            DNS_A_NAME: [],
        }
        if a:
            self.records[DNS_A_NAME].append((1, socket.inet_pton(socket.AF_INET, a)))
        if aaaa:
            self.records[DNS_A_NAME].append((28, socket.inet_pton(socket.AF_INET6, aaaa)))

    def answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack(">HHH", query[:6])
        if flags & 0x8000:
            return None
        opcode = (flags >> 11) & 0xF
        base = 0x8000 | (opcode << 11) | 0x0400 | (flags & 0x0100)     # QR, AA, RD copied

        def bare(rcode: int) -> bytes:
            return struct.pack(">HHHHHH", qid, base | rcode, 0, 0, 0, 0)

        if opcode != 0:
            return bare(4)                                             # NOTIMP
        if qdcount != 1:
            return bare(1)                                             # FORMERR
        labels, pos = [], 12
        while True:
            if pos >= len(query):
                return bare(1)
            n = query[pos]
            if n == 0:
                pos += 1
                break
            if n & 0xC0 or pos + 1 + n > len(query):                   # no pointers in queries
                return bare(1)
            labels.append(query[pos + 1:pos + 1 + n])
            pos += 1 + n
        if pos + 4 > len(query) or pos - 12 > 255:
            return bare(1)
        qtype, qclass = struct.unpack(">HH", query[pos:pos + 4])
        question = query[12:pos + 4]
        name = b".".join(labels).decode("ascii", "replace").lower()
        records = self.records.get(name) if qclass in (1, 255) else None
        if records is None:
            return struct.pack(">HHHHHH", qid, base | 3, 1, 0, 0, 0) + question
        answers = [(t, rdata) for t, rdata in records if qtype in (t, 255)]
        out = struct.pack(">HHHHHH", qid, base, 1, len(answers), 0, 0) + question
        for t, rdata in answers:
            out += struct.pack(">HHHIH", 0xC00C, t, 1, DNS_TTL, len(rdata)) + rdata
        return out


class DNSTCPHandler(socketserver.BaseRequestHandler):
    """DNS over TCP: two-byte length prefix, any number of queries per connection."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30.0)
        rfile = sock.makefile("rb")
        while True:
            prefix = rfile.read(2)
            if len(prefix) < 2:
                return
            (length,) = struct.unpack(">H", prefix)
            query = rfile.read(length)
            if len(query) < length:
                return
            reply = self.server.zone.answer(query)  # type: ignore[attr-defined]
            if reply is None:
                return
            sock.sendall(struct.pack(">H", len(reply)) + reply)


class DNSTCPServer(_QuietErrors, _DualStackMixin, socketserver.ThreadingTCPServer):
    def __init__(self, family: socket.AddressFamily, address: tuple[str, int], zone: DNSZone):
        self.address_family = family
        self.zone = zone
        super().__init__(address, DNSTCPHandler)
