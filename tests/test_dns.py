"""DNS messages (httptap.dns.message): parsing, building, compression, framing, and fuzzing.

Messages are written out by hand here, byte by byte, so the tests do not lean on the
builders they check.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httptap.dns import message as dns
from httptap.dns.message import DnsError


def qname(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def header(ident: int = 0x1234, flags: int = dns.RD, qd: int = 1, an: int = 0,
           ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def query_bytes(name: bytes = qname(b"example", b"com"), qtype: int = dns.TYPE_A,
                ident: int = 0x1234, flags: int = dns.RD) -> bytes:
    return header(ident, flags) + name + struct.pack("!HH", qtype, dns.CLASS_IN)


OPT = b"\0" + struct.pack("!HHIH", dns.TYPE_OPT, 1232, 0, 0)   # EDNS, 1232-byte UDP size


# --- queries --------------------------------------------------------------------------

def test_parse_simple_query() -> None:
    data = query_bytes(qname(b"Example", b"COM"), dns.TYPE_AAAA, ident=0xBEEF)
    q = dns.parse_query(data)
    assert (q.id, q.opcode, q.rd) == (0xBEEF, 0, True)
    assert q.questions == [dns.Question("Example.COM.", dns.TYPE_AAAA, dns.CLASS_IN, 12)]
    assert q.raw == data
    assert q.question_section == data[12:]
    assert q.udp_size == 512


def test_parse_root_and_no_rd() -> None:
    q = dns.parse_query(query_bytes(b"\0", dns.TYPE_NS, flags=0))
    assert q.questions[0].name == "."
    assert q.rd is False


def test_edns_udp_size_and_trailing_bytes() -> None:
    data = header(ar=1) + qname(b"a", b"b") + struct.pack("!HH", 1, 1) + OPT
    assert dns.parse_query(data).udp_size == 1232
    assert dns.parse_query(data + b"junk").udp_size == 1232     # trailing bytes ignored
    with pytest.raises(DnsError):
        dns.parse_query(data[:-1])                               # truncated OPT


def test_response_is_not_a_query() -> None:
    with pytest.raises(DnsError, match="not a query"):
        dns.parse_query(query_bytes(flags=dns.QR))


@pytest.mark.parametrize("data", [
    b"", b"\x12\x34", header()[:11],
    header(),                                       # qdcount 1, nothing follows
    header() + qname(b"a"),                         # no type and class
    header() + b"\x05abc",                          # label runs out
    header() + b"\x40abc\0" + b"\0\1\0\1",          # label type 01
    header() + b"\x80abc\0" + b"\0\1\0\1",          # label type 10
    header() + b"\xc0",                             # half a pointer
])
def test_malformed_queries(data: bytes) -> None:
    with pytest.raises(DnsError):
        dns.parse_query(data)


def test_names_in_presentation_form() -> None:
    data = query_bytes(qname(b"a.b", b"x y", b"\\", b"\x00\xff", b"_srv"))
    assert dns.parse_query(data).questions[0].name == "a\\.b.x\\ y.\\\\.\\000\\255._srv."
    assert dns.encode_name("a\\.b.x\\ y.\\\\.\\000\\255._srv.") == qname(
        b"a.b", b"x y", b"\\", b"\x00\xff", b"_srv")


# --- compression ----------------------------------------------------------------------

def test_compression_pointer_to_an_earlier_name() -> None:
    # second question: "www" + pointer to "example.com" at offset 12
    data = (header(qd=2) + qname(b"example", b"com") + b"\0\1\0\1"
            + b"\3www\xc0\x0c" + b"\0\x1c\0\1")
    q = dns.parse_query(data)
    assert [x.name for x in q.questions] == ["example.com.", "www.example.com."]
    assert q.questions[1].qtype == dns.TYPE_AAAA


def test_pointer_to_itself_is_an_error() -> None:
    with pytest.raises(DnsError, match="backwards"):
        dns.parse_query(header() + b"\xc0\x0c" + b"\0\1\0\1")


def test_forward_pointer_is_an_error() -> None:
    # two pointers pointing at each other: the first points forward
    with pytest.raises(DnsError, match="backwards"):
        dns.parse_query(header() + b"\xc0\x0e\xc0\x0c" + b"\0\1\0\1")


def test_backward_pointer_loop_is_an_error() -> None:
    # offset 12: label "a", then at 14 a pointer back to 12: a.a.a.a... forever
    with pytest.raises(DnsError, match="loop|longer"):
        dns.parse_query(header() + b"\1a\xc0\x0c" + b"\0\1\0\1")


def test_long_chain_of_pointers_is_an_error() -> None:
    # 200 pointers, each to the one before it: every one points backwards, yet no name
    # needs more than 127
    # offset 12 is the root; the pointer at 13 points to it, the one at 15 to 13, ...
    body = b"\0" + b"".join(struct.pack("!H", 0xC000 | max(12, 13 + 2 * i - 2))
                            for i in range(200))
    data = header() + body
    assert dns.read_name(data, 13) == (".", 15)
    assert dns.read_name(data, 13 + 2 * 126)[0] == "."       # 127 pointers: fine
    with pytest.raises(DnsError, match="loop"):
        dns.read_name(data, len(data) - 2)


def test_name_length_limits() -> None:
    four_63 = [b"x" * 63] * 4        # 4 * 64 + 1 = 257 bytes: too long
    with pytest.raises(DnsError, match="255"):
        dns.parse_query(query_bytes(qname(*four_63)))
    ok = [b"x" * 63] * 3 + [b"x" * 61]   # exactly 255
    assert len(dns.parse_query(query_bytes(qname(*ok))).questions[0].name) == 254
    with pytest.raises(DnsError, match="63"):
        dns.encode_name("x" * 64 + ".com.")
    with pytest.raises(DnsError, match="255"):
        dns.encode_name(".".join(["x" * 63] * 4))
    with pytest.raises(DnsError, match="empty label"):
        dns.encode_name("a..b.")
    for bad in ("a\\", "a\\256.", "a\\12."):
        with pytest.raises(DnsError):
            dns.encode_name(bad)
    assert dns.encode_name(".") == dns.encode_name("") == b"\0"
    assert dns.encode_name("a.b") == dns.encode_name("a.b.") == qname(b"a", b"b")


# --- building responses ---------------------------------------------------------------

def test_build_response_round_trip() -> None:
    q = dns.parse_query(query_bytes(qname(b"Example", b"com"), ident=0x4242,
                                    flags=dns.RD | dns.CD))
    data = dns.build_response(q, [dns.a_record("Example.com.", "93.184.215.14", 60),
                                  dns.a_record("example.COM.", "10.0.0.1", 30),
                                  dns.aaaa_record("other.example.", "2001:db8::1", 5)],
                              dns.NOERROR)
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data)
    assert (ident, qd, an, ns, ar) == (0x4242, 1, 3, 0, 0)
    assert flags == dns.QR | dns.RD | dns.RA | dns.CD
    assert data[12:12 + len(q.question_section)] == q.question_section
    # answer names equal to the question (any case) are a pointer to offset 12
    assert data[12 + len(q.question_section):][:2] == b"\xc0\x0c"
    r = dns.parse_response(data)
    assert r.id == 0x4242 and r.rcode == dns.NOERROR and not r.truncated
    assert [(a.name, a.rtype, a.ttl, a.text) for a in r.answers] == [
        ("Example.com.", dns.TYPE_A, 60, "93.184.215.14"),
        ("Example.com.", dns.TYPE_A, 30, "10.0.0.1"),
        ("other.example.", dns.TYPE_AAAA, 5, "2001:db8::1"),
    ]


def test_build_response_echoes_every_question_and_flags() -> None:
    data = (header(ident=7, flags=0, qd=2) + qname(b"a") + b"\0\1\0\1"
            + qname(b"b") + b"\0\x1c\0\1")
    q = dns.parse_query(data)
    out = dns.build_response(q, [dns.aaaa_record("b.", "::1", 60)], dns.NXDOMAIN,
                             ra=False, aa=True)
    r = dns.parse_response(out)
    assert [x.name for x in r.questions] == ["a.", "b."]
    assert r.rcode == dns.NXDOMAIN
    assert r.flags & dns.AA and not r.flags & dns.RA and not r.flags & dns.RD
    assert out[-16 - 10 - 2:-16 - 10] == struct.pack("!H", 0xC000 | q.questions[1].offset)


def test_record_helpers_reject_bad_addresses() -> None:
    with pytest.raises(DnsError):
        dns.a_record("a.", "::1", 1)
    with pytest.raises(DnsError):
        dns.aaaa_record("a.", "1.2.3.4", 1)
    q = dns.parse_query(query_bytes())
    with pytest.raises(DnsError):
        dns.build_response(q, [dns.Record("a.", 1, -1, b"\0\0\0\0")])


def test_build_error_formerr_from_unparsable_bytes() -> None:
    data = header(ident=0xABCD, flags=dns.RD | (2 << dns.OPCODE_SHIFT)) + b"\x05ab"
    out = dns.build_error(data, dns.FORMERR)
    assert out == struct.pack("!HHHHHH", 0xABCD,
                              dns.QR | (2 << dns.OPCODE_SHIFT) | dns.RD | dns.RA | 1, 0, 0, 0, 0)


def test_build_error_echoes_readable_questions() -> None:
    data = query_bytes(ident=9, flags=dns.RD | (4 << dns.OPCODE_SHIFT))
    r = dns.parse_response(dns.build_error(data, dns.NOTIMP) or b"")
    assert (r.id, r.rcode, [q.name for q in r.questions]) == (9, dns.NOTIMP, ["example.com."])
    assert (r.flags >> dns.OPCODE_SHIFT) & 0xF == 4
    q = dns.parse_query(query_bytes(ident=10))
    assert dns.parse_response(dns.build_error(q, dns.SERVFAIL) or b"").rcode == dns.SERVFAIL


def test_build_error_drops_short_messages_and_responses() -> None:
    assert dns.build_error(b"", dns.FORMERR) is None
    assert dns.build_error(header()[:11], dns.FORMERR) is None
    assert dns.build_error(header(flags=dns.QR) + b"\xff", dns.FORMERR) is None


def test_truncate() -> None:
    q = dns.parse_query(query_bytes())
    many = [dns.a_record("example.com.", f"10.0.{i // 256}.{i % 256}", 60) for i in range(100)]
    full = dns.build_response(q, many)
    assert len(full) > 512
    assert dns.truncate(full, 65535) == full
    cut = dns.truncate(full, 512)
    r = dns.parse_response(cut)
    assert r.truncated and r.answers == [] and r.questions == q.questions
    assert cut == full[:2] + struct.pack("!H", struct.unpack_from("!H", full, 2)[0] | dns.TC) \
        + b"\0\1\0\0\0\0\0\0" + q.question_section


# --- parsing responses ----------------------------------------------------------------

def rr(name: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return name + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def test_parse_response_decodes_record_types() -> None:
    question = qname(b"example", b"com") + b"\0\xff\0\1"   # ANY
    ptr = b"\xc0\x0c"
    records = [
        rr(ptr, dns.TYPE_CNAME, 300, b"\3www" + ptr),
        rr(ptr, dns.TYPE_TXT, 3600, b"\x0bv=spf1 -all\x04a\"b\\"),
        rr(ptr, dns.TYPE_MX, 10, b"\0\x0a\4mail" + ptr),
        rr(ptr, dns.TYPE_NS, 10, qname(b"ns1", b"example", b"net")),
        rr(ptr, dns.TYPE_SRV, 10, b"\0\1\0\2\x01\xbb" + ptr),
        rr(ptr, dns.TYPE_SOA, 10, b"\3ns1" + ptr + b"\4host" + ptr
           + struct.pack("!IIIII", 1, 2, 3, 4, 5)),
        rr(ptr, 65534, 10, b"\x01\x02"),
        rr(ptr, dns.TYPE_A, 10, b"\1\2\3"),                  # bad length: generic form
        rr(ptr, dns.TYPE_TXT, 10, b"\x05ab"),                # bad string: generic form
    ]
    data = (header(ident=5, flags=dns.QR | dns.RA | dns.NXDOMAIN, an=len(records))
            + question + b"".join(records))
    r = dns.parse_response(data)
    assert (r.id, r.rcode) == (5, dns.NXDOMAIN)
    assert [(a.rtype, a.ttl, a.text) for a in r.answers] == [
        (dns.TYPE_CNAME, 300, "www.example.com."),
        (dns.TYPE_TXT, 3600, '"v=spf1 -all" "a\\"b\\\\"'),
        (dns.TYPE_MX, 10, "10 mail.example.com."),
        (dns.TYPE_NS, 10, "ns1.example.net."),
        (dns.TYPE_SRV, 10, "1 2 443 example.com."),
        (dns.TYPE_SOA, 10, "ns1.example.com. host.example.com. 1 2 3 4 5"),
        (65534, 10, "\\# 2 0102"),
        (dns.TYPE_A, 10, "\\# 3 010203"),
        (dns.TYPE_TXT, 10, "\\# 3 056162"),
    ]
    assert r.answers[0].rdata == b"\3www" + ptr


def test_parse_response_rejects_queries_and_truncation() -> None:
    with pytest.raises(DnsError, match="not a response"):
        dns.parse_response(query_bytes())
    data = header(flags=dns.QR, an=1) + qname(b"a") + b"\0\1\0\1" \
        + rr(b"\xc0\x0c", dns.TYPE_A, 1, b"\1\2\3\4")
    assert dns.parse_response(data).answers[0].text == "1.2.3.4"
    for cut in range(12, len(data)):
        with pytest.raises(DnsError):
            dns.parse_response(data[:cut])


# --- names of numbers -----------------------------------------------------------------

def test_type_and_rcode_names() -> None:
    assert [dns.qtype_name(t) for t in (1, 28, 5, 15, 16, 12, 33, 2, 6, 65, 64, 255)] == \
        ["A", "AAAA", "CNAME", "MX", "TXT", "PTR", "SRV", "NS", "SOA", "HTTPS", "SVCB", "ANY"]
    assert dns.qtype_name(65534) == "TYPE65534"
    assert [dns.rcode_name(r) for r in range(6)] == \
        ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"]
    assert dns.rcode_name(15) == "RCODE15"


# --- TCP framing ----------------------------------------------------------------------

def test_tcp_framing_byte_by_byte() -> None:
    msgs = [query_bytes(ident=i) for i in range(3)] + [b"", b"x" * 300]
    stream = b"".join(dns.frame_tcp(m) for m in msgs)
    reader = dns.TcpDnsReader()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += reader.feed(stream[i:i + 1])
        assert reader.pending < 302
    assert got == msgs
    assert reader.pending == 0


def test_tcp_framing_in_one_piece_and_limits() -> None:
    assert dns.frame_tcp(b"abc") == b"\0\3abc"
    reader = dns.TcpDnsReader()
    assert reader.feed(dns.frame_tcp(b"a") + dns.frame_tcp(b"bc") + b"\0\5xy") == [b"a", b"bc"]
    assert reader.pending == 4
    assert reader.feed(b"zzw") == [b"xyzzw"]
    with pytest.raises(DnsError):
        dns.frame_tcp(b"x" * 65536)


# --- fuzzing --------------------------------------------------------------------------

labels = st.binary(min_size=1, max_size=63)
names = st.lists(labels, max_size=4).filter(lambda ls: sum(len(x) + 1 for x in ls) < 255)


@given(st.binary(max_size=300))
def test_fuzz_parse_query(data: bytes) -> None:
    try:
        q = dns.parse_query(data)
    except DnsError:
        return
    assert isinstance(q, dns.Query)
    for question in q.questions:    # every name read back encodes again
        dns.encode_name(question.name)
    dns.build_response(q, [])


@given(st.binary(max_size=300))
def test_fuzz_parse_response(data: bytes) -> None:
    try:
        dns.parse_response(data)
    except DnsError:
        pass


@given(st.binary(max_size=300), st.sampled_from([dns.FORMERR, dns.SERVFAIL, dns.NOTIMP]))
def test_fuzz_build_error(data: bytes, rcode: int) -> None:
    out = dns.build_error(data, rcode)
    if out is None:
        assert len(data) < 12 or data[2] & 0x80
        return
    r = dns.parse_response(out)
    assert r.id == struct.unpack_from("!H", data)[0] and r.rcode == rcode


@given(names, st.integers(0, 65535), st.integers(0, 65535),
       st.lists(st.tuples(st.integers(0, 1000), st.binary(max_size=40)), max_size=5))
def test_fuzz_mutated_queries(labels_: list[bytes], qtype: int, ident: int,
                              flips: list[tuple[int, bytes]]) -> None:
    data = bytearray(query_bytes(qname(*labels_), qtype, ident))
    q = dns.parse_query(bytes(data))
    assert dns.encode_name(q.questions[0].name) == qname(*labels_)
    assert dns.read_name(bytes(data), 12) == (q.questions[0].name, 12 + len(qname(*labels_)))
    for at, piece in flips:
        at %= len(data) + 1
        data[at:at + len(piece)] = piece
        try:
            dns.parse_query(bytes(data))
        except DnsError:
            pass
        dns.build_error(bytes(data), dns.FORMERR)
