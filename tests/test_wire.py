"""Tests for httptap.net.wire: round trips, dpkt cross-checks, checksums, and fuzzing.

Checksums are verified against a deliberately slow reference (RFC 1071 word by word), and
packets are cross-checked with dpkt in both directions. The fuzz tests hold wire to one
invariant: whatever the bytes, a parser returns a result or raises ProtocolError.
"""

from __future__ import annotations

import random
import struct

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httptap.net.tcp.segment import ACK, FIN, PSH, RST, SYN, Segment
from httptap.net.wire import (
    VNET_HDR_LEN, IpPacket, ProtocolError, build_icmp_echo_reply, build_tcp, build_udp,
    describe, flow_hash_key, internet_checksum, parse_icmp_echo, parse_ip, parse_tcp,
    parse_udp, strip_vnet,
)

# The packet parsers get twice the examples of the "fast" profile (tests/conftest.py
# registers the profiles and loads one from HYPOTHESIS_PROFILE); "deep" as it is.
FUZZ = settings(max_examples=max(200, settings.default.max_examples))

V4_CLIENT = bytes((10, 1, 1, 100))
V4_SERVER = bytes((93, 184, 215, 14))
V6_CLIENT = bytes.fromhex("fd000000000000000000000000000064")
V6_SERVER = bytes.fromhex("2606280000000000000000000000000e")
ADDRESS_PAIRS = [(V4_CLIENT, V4_SERVER), (V6_CLIENT, V6_SERVER)]
ADDR_IDS = ["v4", "v6"]


# --------------------------------------------------------------------------- references

def ref_sum(data: bytes) -> int:
    """RFC 1071 ones'-complement sum, one 16-bit word at a time."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def l4_verifies(src: bytes, dst: bytes, proto: int, l4: bytes) -> bool:
    return ref_sum(pseudo_header(src, dst, proto, len(l4)) + l4) == 0xFFFF


def complete_like_kernel(pkt: bytes) -> bytes:
    """Finish a NEEDS_CSUM packet as the kernel does; returns the IP packet."""
    flags, gso_type, _hdr_len, _gso_size, start, offset = struct.unpack_from("<BBHHHH", pkt)
    assert (flags, gso_type) == (1, 0)
    ip = bytearray(pkt[VNET_HDR_LEN:])
    csum = 0xFFFF - ref_sum(bytes(ip[start:]))
    struct.pack_into("!H", ip, start + offset, csum or 0xFFFF if offset == 6 else csum)
    return bytes(ip)


def expected_sack(seg: Segment) -> tuple[tuple[int, int], ...]:
    """The SACK blocks that fit in 40 option bytes after the other options."""
    used = ((4 if seg.mss is not None else 0) + (12 if seg.ts_val is not None else 0)
            + (4 if seg.sack_permitted and seg.ts_val is None else 0)
            + (4 if seg.wscale is not None else 0))
    return seg.sack[:(40 - used - 4) // 8]


# --------------------------------------------------------------------------- strategies

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 0xFFFF)


@st.composite
def segments(draw: st.DrawFn, max_payload: int = 2000) -> Segment:
    ts = draw(st.none() | st.tuples(u32, u32))
    return Segment(
        draw(u32), draw(u32), draw(st.integers(0, 255)), draw(u16),
        draw(st.binary(max_size=max_payload)),
        mss=draw(st.none() | u16), wscale=draw(st.none() | st.integers(0, 14)),
        sack_permitted=draw(st.booleans()),
        sack=tuple(draw(st.lists(st.tuples(u32, u32), max_size=5))),
        ts_val=None if ts is None else ts[0], ts_ecr=None if ts is None else ts[1])


addresses = st.sampled_from(ADDRESS_PAIRS)


def icmp_echo_request(src: bytes, dst: bytes, ident: int, seq: int, data: bytes) -> bytes:
    """An echo request built with dpkt (checksums included)."""
    if len(src) == 4:
        icmp = dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=ident, seq=seq,
                                                                       data=data))
        ip = dpkt.ip.IP(src=src, dst=dst, p=1, ttl=64, data=icmp)
        ip.len = len(ip)
        return bytes(ip)
    icmp6 = dpkt.icmp6.ICMP6(type=128, code=0, data=struct.pack("!HH", ident, seq) + data)
    icmp6_bytes = bytes(icmp6)
    csum = 0xFFFF - ref_sum(pseudo_header(src, dst, 58, len(icmp6_bytes)) + icmp6_bytes)
    icmp6_bytes = icmp6_bytes[:2] + struct.pack("!H", csum) + icmp6_bytes[4:]
    return struct.pack("!IHBB16s16s", 0x60000000, len(icmp6_bytes), 58, 64, src, dst) + icmp6_bytes


# --------------------------------------------------------------------------- the module

def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(ProtocolError, ValueError)


# --------------------------------------------------------------------------- checksum

@FUZZ
@given(st.binary(max_size=9000), st.integers(0, 2**40))
def test_internet_checksum_matches_reference(data: bytes, initial: int) -> None:
    padded = data + bytes(len(data) % 2)
    expected = 0xFFFF - ref_sum(padded + initial.to_bytes(6, "big"))
    got = internet_checksum(data, initial)
    # 0 and 0xFFFF are the same number in ones' complement; both verify.
    assert got == expected or {got, expected} == {0, 0xFFFF}
    assert ref_sum(padded + struct.pack("!H", got) + initial.to_bytes(6, "big")) in (0xFFFF, 0)


@pytest.mark.parametrize("size", [0, 1, 2, 2047, 2048, 2049, 4096, 65535, 65536])
def test_internet_checksum_sizes(size: int) -> None:
    data = random.Random(size).randbytes(size)  # seeded: the same bytes every run
    assert internet_checksum(data) == 0xFFFF - ref_sum(data) or size == 0
    assert internet_checksum(memoryview(data)) == internet_checksum(data)
    assert internet_checksum(bytearray(data)) == internet_checksum(data)


def test_internet_checksum_of_zeros_and_ones() -> None:
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(bytes(100)) == 0xFFFF
    assert internet_checksum(b"\xff" * 100) == 0


# --------------------------------------------------------------------------- TCP round trips

@FUZZ
@given(addresses, u16, u16, segments(), st.booleans())
def test_tcp_round_trip(addrs: tuple[bytes, bytes], sport: int, dport: int, seg: Segment,
                        vnet: bool) -> None:
    src, dst = addrs
    pkt = build_tcp(src, dst, sport, dport, seg, vnet=vnet)
    ip_pkt = strip_vnet(pkt) if vnet else pkt
    ip = parse_ip(ip_pkt)
    assert (ip.version, ip.src, ip.dst, ip.proto, ip.ttl) == (
        4 if len(src) == 4 else 6, src, dst, 6, 64)
    got_sport, got_dport, got = parse_tcp(ip.payload)
    assert (got_sport, got_dport) == (sport, dport)
    expected = Segment(seg.seq, seg.ack, seg.flags, seg.window, seg.payload, mss=seg.mss,
                       wscale=seg.wscale, sack_permitted=seg.sack_permitted,
                       sack=expected_sack(seg), ts_val=seg.ts_val, ts_ecr=seg.ts_ecr)
    assert got == expected
    assert type(got.payload) is bytes
    header_len = (ip.payload[12] >> 4) * 4
    assert header_len <= 60 and header_len == len(ip.payload) - len(seg.payload)


@pytest.mark.parametrize("src,dst", ADDRESS_PAIRS, ids=ADDR_IDS)
@pytest.mark.parametrize("vnet", [False, True])
def test_tcp_largest_payload(src: bytes, dst: bytes, vnet: bool) -> None:
    room = 0xFFFF - (20 if len(src) == 4 else 0) - 20 - 12
    seg = Segment(1, 2, ACK | PSH, 512, random.Random(room).randbytes(room), ts_val=3, ts_ecr=4)
    pkt = build_tcp(src, dst, 1, 2, seg, vnet=vnet)
    ip = parse_ip(strip_vnet(pkt) if vnet else pkt)
    assert parse_tcp(ip.payload)[2] == seg
    full = build_tcp(src, dst, 1, 2, seg, vnet=False)
    assert l4_verifies(src, dst, 6, bytes(parse_ip(full).payload))
    with pytest.raises(ValueError):
        build_tcp(src, dst, 1, 2, Segment(1, 2, ACK, 1, bytes(room + 1), ts_val=3), vnet=vnet)


def test_tcp_rejects_mismatched_addresses() -> None:
    with pytest.raises(ValueError):
        build_tcp(V4_CLIENT, V6_SERVER, 1, 2, Segment(0, 0, SYN, 0), vnet=False)
    with pytest.raises(ValueError):
        build_udp(b"\1\2\3", b"\1\2\3", 1, 2, b"", vnet=True)


# --------------------------------------------------------------------------- option layout

def tcp_options_of(pkt: bytes) -> bytes:
    payload = parse_ip(pkt).payload
    return bytes(payload[20:(payload[12] >> 4) * 4])


@pytest.mark.parametrize("seg,options", [
    (Segment(0, 0, ACK, 1), b""),
    (Segment(0, 0, ACK, 1, ts_val=0x01020304, ts_ecr=0x05060708),
     bytes.fromhex("0101080a0102030405060708")),
    # A Linux SYN: MSS, SACK-permitted folded into the timestamp's NOPs, window scale.
    (Segment(0, 0, SYN, 64240, mss=1460, sack_permitted=True, ts_val=1, ts_ecr=0, wscale=7),
     bytes.fromhex("020405b4" "0402080a0000000100000000" "01030307")),
    (Segment(0, 0, SYN, 64240, mss=1460, sack_permitted=True, wscale=7),
     bytes.fromhex("020405b4" "01010402" "01030307")),
    (Segment(0, 0, SYN, 64240, mss=1460, ts_val=1, ts_ecr=0),
     bytes.fromhex("020405b4" "0101080a0000000100000000")),
    (Segment(0, 0, SYN, 64240, mss=1460), bytes.fromhex("020405b4")),
    (Segment(0, 0, SYN, 64240, wscale=14), bytes.fromhex("0103030e")),
    (Segment(0, 0, ACK, 1, sack=((1, 2),)), bytes.fromhex("0101050a" "0000000100000002")),
    (Segment(0, 0, ACK, 1, ts_val=9, ts_ecr=8, sack=((1, 2), (3, 4))),
     bytes.fromhex("0101080a0000000900000008" "01010512" "00000001000000020000000300000004")),
])
def test_tcp_option_layout_matches_linux(seg: Segment, options: bytes) -> None:
    assert tcp_options_of(build_tcp(V4_CLIENT, V4_SERVER, 1, 2, seg, vnet=False)) == options


def test_sack_blocks_are_cut_to_fit() -> None:
    blocks = tuple((i, i + 1) for i in range(0, 10, 2))
    with_ts = build_tcp(V4_CLIENT, V4_SERVER, 1, 2,
                        Segment(0, 0, ACK, 1, sack=blocks, ts_val=1, ts_ecr=2), vnet=False)
    assert parse_tcp(parse_ip(with_ts).payload)[2].sack == blocks[:3]
    without_ts = build_tcp(V4_CLIENT, V4_SERVER, 1, 2, Segment(0, 0, ACK, 1, sack=blocks),
                           vnet=False)
    assert parse_tcp(parse_ip(without_ts).payload)[2].sack == blocks[:4]
    assert len(tcp_options_of(without_ts)) == 36


def tcp_with_options(options: bytes, payload: bytes = b"data") -> bytes:
    """A raw TCP header (checksum not filled in) with these options, padded with EOL."""
    options += bytes(-len(options) % 4)
    return struct.pack("!HHIIBBHHH", 1000, 80, 7, 9, (5 + len(options) // 4) << 4, ACK,
                       100, 0, 0) + options + payload


@pytest.mark.parametrize("options,fields", [
    # window scale on an odd offset, then end-of-list; what follows EOL is ignored
    ("020405b4" "030307" "00", dict(mss=1460, wscale=7)),
    ("01030307" "01010402", dict(wscale=7, sack_permitted=True)),
    ("030308" "00" "ffffffff", dict(wscale=8)),
    # unknown options (kind 30 len 5, kind 254 len 2) are skipped
    ("1e05aabbcc" "fe02" "010101" "0402", dict(sack_permitted=True)),
    # timestamp at an odd offset
    ("01" "080a0000000a0000000b" "01", dict(ts_val=10, ts_ecr=11)),
    ("010101" "050a0000000100000002" "0101", dict(sack=((1, 2),))),
    ("0101" "05120000000100000002fffffffe00000000" "0101", dict(sack=((1, 2), (0xFFFFFFFE, 0)))),
    ("01010101", {}),
    ("00000000", {}),
    # MSS of 0 is still an MSS
    ("02040000", dict(mss=0)),
])
def test_tcp_options_with_odd_padding(options: str, fields: dict[str, object]) -> None:
    _sport, _dport, seg = parse_tcp(tcp_with_options(bytes.fromhex(options)))
    assert seg == Segment(7, 9, ACK, 100, b"data", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [
    "02000000",              # length 0
    "02010000",              # length 1
    "02050000",              # MSS with the wrong length
    "0202" "0000",           # MSS too short
    "0304000000000000",      # window scale with length 4
    "040300" "00",           # SACK-permitted with length 3
    "080900000000000000000000",  # timestamp with length 9
    "050300000000",          # SACK with no block
    "050b0000000000000000000000000000",  # SACK length 11
    "0101" "0206",           # option running past the header
    "010101" "02",           # kind in the last byte, no length
    "1eff0000",              # unknown option past the header
])
def test_malformed_tcp_options(options: str) -> None:
    raw = bytes.fromhex(options)
    with pytest.raises(ProtocolError):
        parse_tcp(tcp_with_options(raw))


def test_tcp_header_lengths() -> None:
    good = tcp_with_options(b"")
    with pytest.raises(ProtocolError):
        parse_tcp(good[:19])
    with pytest.raises(ProtocolError):  # data offset 4 words
        parse_tcp(good[:12] + b"\x40" + good[13:])
    with pytest.raises(ProtocolError):  # data offset past the end
        parse_tcp(good[:12] + b"\xf0" + good[13:])
    assert parse_tcp(good[:20])[2].payload == b""


# --------------------------------------------------------------------------- dpkt cross-checks

@FUZZ
@given(addresses, u16, u16, segments(max_payload=600))
def test_dpkt_parses_what_we_build(addrs: tuple[bytes, bytes], sport: int, dport: int,
                                   seg: Segment) -> None:
    src, dst = addrs
    pkt = build_tcp(src, dst, sport, dport, seg, vnet=False)
    if len(src) == 4:
        ip = dpkt.ip.IP(pkt)
        assert (ip.v, ip.hl, ip.len, ip.ttl, ip.p, ip.df, ip.mf, ip.offset) == (
            4, 5, len(pkt), 64, 6, 1, 0, 0)
        assert ref_sum(pkt[:20]) == 0xFFFF  # header checksum
    else:
        ip = dpkt.ip6.IP6(pkt)
        assert (ip.v, ip.plen, ip.hlim, ip.nxt) == (6, len(pkt) - 40, 64, 6)
    assert (ip.src, ip.dst) == (src, dst)
    tcp = ip.data
    assert isinstance(tcp, dpkt.tcp.TCP)
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags, tcp.win) == (
        sport, dport, seg.seq, seg.ack, seg.flags, seg.window)
    assert tcp.data == seg.payload
    opts = dict(dpkt.tcp.parse_opts(tcp.opts))
    assert (struct.unpack("!H", opts[2])[0] if 2 in opts else None) == seg.mss
    assert (opts[3][0] if 3 in opts else None) == seg.wscale
    assert (4 in opts) == seg.sack_permitted
    assert (struct.unpack("!II", opts[8]) if 8 in opts else None) == (
        None if seg.ts_val is None else (seg.ts_val, seg.ts_ecr))
    assert l4_verifies(src, dst, 6, bytes(tcp))
    # dpkt computes the same checksum when asked to (0 and 0xFFFF both mean zero).
    ours = tcp.sum
    tcp.sum = 0
    ip.sum = 0
    theirs = dpkt.tcp.TCP(bytes(ip)[len(pkt) - len(tcp):]).sum
    assert ours == theirs or {ours, theirs} == {0, 0xFFFF}


def dpkt_tcp(sport: int, dport: int, seg: Segment, options: bytes) -> dpkt.tcp.TCP:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seg.seq, ack=seg.ack, flags=seg.flags,
                       win=seg.window, opts=options, data=seg.payload)
    tcp.off = (20 + len(options)) // 4
    return tcp


@FUZZ
@given(u16, u16, segments(max_payload=600), st.sampled_from([b"", b"\x01\x01\x01\x00",
                                                              b"\x07\x07\x04" + bytes(5)]))
def test_we_parse_what_dpkt_builds_v4(sport: int, dport: int, seg: Segment,
                                      ip_options: bytes) -> None:
    options = tcp_options_of(build_tcp(V4_CLIENT, V4_SERVER, 1, 2, seg, vnet=False))
    ip = dpkt.ip.IP(src=V4_CLIENT, dst=V4_SERVER, p=6, ttl=17, id=1234, opts=ip_options,
                    data=dpkt_tcp(sport, dport, seg, options))
    ip.hl = 5 + len(ip_options) // 4
    ip.len = len(ip)
    raw = bytes(ip) + b"\0" * 6  # trailing link-layer padding is not part of the packet
    parsed = parse_ip(raw)
    assert (parsed.version, parsed.src, parsed.dst, parsed.proto, parsed.ttl) == (
        4, V4_CLIENT, V4_SERVER, 6, 17)
    assert parsed.l4_offset == 20 + len(ip_options)
    got_sport, got_dport, got = parse_tcp(parsed.payload)
    assert (got_sport, got_dport) == (sport, dport)
    assert got.payload == seg.payload
    assert (got.seq, got.ack, got.flags, got.window, got.mss, got.wscale, got.ts_val) == (
        seg.seq, seg.ack, seg.flags, seg.window, seg.mss, seg.wscale, seg.ts_val)


@FUZZ
@given(u16, u16, segments(max_payload=600))
def test_we_parse_what_dpkt_builds_v6(sport: int, dport: int, seg: Segment) -> None:
    options = tcp_options_of(build_tcp(V6_CLIENT, V6_SERVER, 1, 2, seg, vnet=False))
    tcp = dpkt_tcp(sport, dport, seg, options)
    ip = dpkt.ip6.IP6(src=V6_CLIENT, dst=V6_SERVER, nxt=6, hlim=255, data=tcp)
    ip.plen = len(tcp)
    parsed = parse_ip(bytes(ip))
    assert (parsed.version, parsed.proto, parsed.ttl, parsed.l4_offset) == (6, 6, 255, 40)
    got_sport, got_dport, got = parse_tcp(parsed.payload)
    assert (got_sport, got_dport, got.seq, got.ack, got.payload) == (
        sport, dport, seg.seq, seg.ack, seg.payload)
    assert l4_verifies(V6_CLIENT, V6_SERVER, 6, bytes(parsed.payload))


def test_we_parse_dpkt_udp() -> None:
    udp = dpkt.udp.UDP(sport=5353, dport=53, data=b"\x12\x34question")
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=V4_CLIENT, dst=V4_SERVER, p=17, data=udp)
    ip.len = len(ip)
    parsed = parse_ip(bytes(ip))
    assert parsed.proto == 17
    assert parse_udp(parsed.payload) == (5353, 53, b"\x12\x34question")


# --------------------------------------------------------------------------- checksums and vnet

@FUZZ
@given(addresses, u16, u16, segments(max_payload=3000))
def test_tcp_checksums(addrs: tuple[bytes, bytes], sport: int, dport: int,
                       seg: Segment) -> None:
    src, dst = addrs
    full = build_tcp(src, dst, sport, dport, seg, vnet=False)
    assert l4_verifies(src, dst, 6, bytes(parse_ip(full).payload))
    partial = build_tcp(src, dst, sport, dport, seg, vnet=True)
    flags, gso_type, hdr_len, gso_size, start, offset = struct.unpack_from("<BBHHHH", partial)
    ip_header_len = 20 if len(src) == 4 else 40
    assert (flags, gso_type, gso_size, start, offset) == (1, 0, 0, ip_header_len, 16)
    assert hdr_len == ip_header_len + (full[ip_header_len + 12] >> 4) * 4
    # The preset field is the folded, uncomplemented pseudo-header sum.
    preset = struct.unpack_from("!H", partial, VNET_HDR_LEN + start + offset)[0]
    assert preset == ref_sum(pseudo_header(src, dst, 6, len(full) - ip_header_len))
    assert complete_like_kernel(partial) == full


@FUZZ
@given(addresses, u16, u16, st.binary(max_size=3000))
def test_udp_round_trip_and_checksums(addrs: tuple[bytes, bytes], sport: int, dport: int,
                                      data: bytes) -> None:
    src, dst = addrs
    full = build_udp(src, dst, sport, dport, data, vnet=False)
    ip = parse_ip(full)
    assert (ip.proto, ip.src, ip.dst, ip.ttl) == (17, src, dst, 64)
    assert parse_udp(ip.payload) == (sport, dport, data)
    assert l4_verifies(src, dst, 17, bytes(ip.payload))
    assert struct.unpack_from("!H", ip.payload, 6)[0] != 0
    partial = build_udp(src, dst, sport, dport, data, vnet=True)
    assert struct.unpack_from("<BBHHHH", partial) == (
        1, 0, ip.l4_offset + 8, 0, ip.l4_offset, 6)
    assert parse_udp(parse_ip(strip_vnet(partial)).payload) == (sport, dport, data)
    assert complete_like_kernel(partial) == full
    if len(src) == 16:
        pkt = dpkt.ip6.IP6(full)
    else:
        pkt = dpkt.ip.IP(full)
        assert ref_sum(full[:20]) == 0xFFFF
    assert (pkt.data.sport, pkt.data.dport, pkt.data.data) == (sport, dport, data)


@pytest.mark.parametrize("src,dst", ADDRESS_PAIRS, ids=ADDR_IDS)
def test_udp_zero_checksum_is_sent_as_ffff(src: bytes, dst: bytes) -> None:
    first = build_udp(src, dst, 53, 5353, b"\0\0", vnet=False)
    csum = struct.unpack_from("!H", parse_ip(first).payload, 6)[0]
    # Putting the first checksum in the data makes the computed checksum zero.
    pkt = build_udp(src, dst, 53, 5353, struct.pack("!H", csum), vnet=False)
    udp = bytes(parse_ip(pkt).payload)
    assert struct.unpack_from("!H", udp, 6)[0] == 0xFFFF
    assert l4_verifies(src, dst, 17, udp)


# --------------------------------------------------------------------------- IP parsing

def v4_header(payload: bytes, *, proto: int = 6, frag: int = 0x4000, options: bytes = b"",
              total: int | None = None) -> bytes:
    hl = 20 + len(options)
    total = hl + len(payload) if total is None else total
    return struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, 0, total, 0, frag, 64, proto, 0,
                       V4_CLIENT, V4_SERVER) + options + payload


def test_ipv4_options_and_lengths() -> None:
    tcp = tcp_with_options(b"")
    rr = b"\x07\x07\x04" + bytes(4) + b"\x00"  # record route, then end of options
    ip = parse_ip(v4_header(tcp, options=rr))
    assert ip.l4_offset == 28 and bytes(ip.payload) == tcp
    ip = parse_ip(v4_header(tcp) + b"padding")
    assert bytes(ip.payload) == tcp
    for bad in (v4_header(tcp, total=len(tcp) + 21),          # longer than the buffer
                v4_header(tcp, total=19),                      # shorter than the header
                v4_header(tcp)[:19],                           # truncated header
                b"\x44" + v4_header(tcp)[1:],                  # IHL 4
                b"\x4f" + v4_header(tcp)[1:]):                 # IHL 15, past the end
        with pytest.raises(ProtocolError):
            parse_ip(bad)


@pytest.mark.parametrize("frag", [0x2000, 0x6000, 0x0001, 0x4001, 0x1FFF])
def test_ipv4_fragments_are_refused(frag: int) -> None:
    pkt = v4_header(tcp_with_options(b""), frag=frag)
    with pytest.raises(ProtocolError, match="fragment"):
        parse_ip(pkt)
    assert flow_hash_key(pkt) is None


def test_not_ip() -> None:
    for bad in (b"", b"\x50" + bytes(40), b"\x00" * 60, b"\x60" * 39):
        with pytest.raises(ProtocolError):
            parse_ip(bad)


def v6_packet(chain: list[tuple[int, bytes]], final_proto: int, payload: bytes) -> bytes:
    """An IPv6 packet with extension headers given as (header type, body after 2 bytes)."""
    body = b""
    types = [t for t, _ in chain] + [final_proto]
    for (_t, rest), nxt in zip(chain, types[1:]):
        assert (len(rest) + 2) % 8 == 0
        body += bytes((nxt, (len(rest) + 2) // 8 - 1)) + rest
    body += payload
    return struct.pack("!IHBB16s16s", 0x60000000, len(body), types[0], 64,
                       V6_CLIENT, V6_SERVER) + body


def test_ipv6_extension_headers() -> None:
    tcp = tcp_with_options(bytes.fromhex("0101080a0000000100000002"))
    chain = [(0, b"\x05\x02\x00\x00\x01\x00"),           # hop-by-hop: router alert, PadN
             (43, b"\x00\x01" + bytes(4) + V6_SERVER),    # routing type 0, 1 address left
             (60, bytes(14))]                             # destination options, padding
    pkt = v6_packet(chain, 6, tcp)
    ip = parse_ip(pkt)
    assert (ip.proto, ip.l4_offset, bytes(ip.payload)) == (6, 40 + 8 + 24 + 16, tcp)
    assert parse_tcp(ip.payload)[2].ts_val == 1
    assert dpkt.ip6.IP6(pkt).p == 6  # dpkt walks the same chain to TCP
    assert flow_hash_key(pkt) == flow_hash_key(v6_packet([], 6, tcp))
    assert describe(pkt).startswith("IPv6 [fd00::64]:1000 > [2606:2800::e]:80 TCP")
    # no next header: an empty L4 part with protocol 59
    assert parse_ip(v6_packet(chain, 59, b"")).proto == 59


def test_ipv6_fragment_and_truncation() -> None:
    tcp = tcp_with_options(b"")
    with pytest.raises(ProtocolError, match="fragment"):
        parse_ip(v6_packet([(0, bytes(6)), (44, bytes(6))], 6, tcp))
    with pytest.raises(ProtocolError, match="fragment"):
        parse_ip(v6_packet([], 44, bytes(8) + tcp))
    full = v6_packet([(0, bytes(6))], 6, tcp)
    with pytest.raises(ProtocolError):
        parse_ip(full[:-1])  # payload length says more than we have
    # an extension header that claims more than the payload holds
    long_ext = full[:40] + bytes((6, 200)) + full[42:]
    with pytest.raises(ProtocolError):
        parse_ip(long_ext)
    # a payload length too short for the extension header
    with pytest.raises(ProtocolError):
        parse_ip(full[:4] + struct.pack("!H", 4) + full[6:])


# --------------------------------------------------------------------------- UDP parsing

def test_udp_lengths() -> None:
    good = struct.pack("!HHHH", 1, 2, 11, 0) + b"abcXYZ"
    assert parse_udp(good) == (1, 2, b"abc")  # cut to the UDP length
    for bad in (good[:7], struct.pack("!HHHH", 1, 2, 7, 0), struct.pack("!HHHH", 1, 2, 9, 0)):
        with pytest.raises(ProtocolError):
            parse_udp(bad)


# --------------------------------------------------------------------------- ICMP echo

@pytest.mark.parametrize("client,gateway", ADDRESS_PAIRS, ids=ADDR_IDS)
@pytest.mark.parametrize("vnet", [False, True])
@pytest.mark.parametrize("data", [b"", b"x", b"ping data 123", random.Random(1401).randbytes(1401)])
def test_icmp_echo(client: bytes, gateway: bytes, vnet: bool, data: bytes) -> None:
    request = parse_ip(icmp_echo_request(client, gateway, 0x1234, 7, data))
    v4 = len(client) == 4
    assert parse_icmp_echo(request) == (8 if v4 else 128, 0, 0x1234, 7, data)
    reply = build_icmp_echo_reply(request, vnet=vnet)
    if vnet:
        assert reply[:VNET_HDR_LEN] == bytes(VNET_HDR_LEN)  # no NEEDS_CSUM for ICMP
        reply = reply[VNET_HDR_LEN:]
    ip = parse_ip(reply)
    assert (ip.src, ip.dst, ip.proto, ip.ttl) == (gateway, client, 1 if v4 else 58, 64)
    icmp = bytes(ip.payload)
    assert icmp[:2] == (b"\x00\x00" if v4 else b"\x81\x00")
    assert icmp[4:] == struct.pack("!HH", 0x1234, 7) + data
    if v4:
        assert ref_sum(icmp) == 0xFFFF
        assert ref_sum(reply[:20]) == 0xFFFF
        parsed = dpkt.ip.IP(reply).data
        assert (parsed.type, parsed.data.id, parsed.data.seq, parsed.data.data) == (
            0, 0x1234, 7, data)
    else:
        assert l4_verifies(gateway, client, 58, icmp)
        assert dpkt.ip6.IP6(reply).data.type == 129


def test_icmp_non_echo_is_refused() -> None:
    v4_reply = parse_ip(build_icmp_echo_reply(
        parse_ip(icmp_echo_request(V4_CLIENT, V4_SERVER, 1, 2, b"")), vnet=False))
    router_solicitation = parse_ip(v6_packet([], 58, bytes.fromhex("85000000") + bytes(4)))
    short = parse_ip(v4_header(b"\x08\x00\x00\x00", proto=1))
    tcp = parse_ip(v4_header(tcp_with_options(b"")))
    mixed = IpPacket(6, V6_CLIENT, V6_SERVER, 1, 64, memoryview(b"\x08" + bytes(7)), 40)
    for ip in (v4_reply, router_solicitation, short, tcp, mixed):
        with pytest.raises(ProtocolError):
            parse_icmp_echo(ip)
        with pytest.raises(ProtocolError):
            build_icmp_echo_reply(ip, vnet=True)


# --------------------------------------------------------------------------- flow keys

def test_flow_hash_key() -> None:
    seg = Segment(1, 0, SYN, 100)
    a = flow_hash_key(build_tcp(V4_CLIENT, V4_SERVER, 40000, 80, seg, vnet=False))
    assert a == b"\x06" + V4_CLIENT + V4_SERVER + struct.pack("!HH", 40000, 80)
    assert a == flow_hash_key(build_tcp(V4_CLIENT, V4_SERVER, 40000, 80,
                                        Segment(9, 9, ACK, 1, b"later"), vnet=False))
    assert a == flow_hash_key(memoryview(build_tcp(V4_CLIENT, V4_SERVER, 40000, 80, seg,
                                                   vnet=True))[VNET_HDR_LEN:])
    keys = {a,
            flow_hash_key(build_tcp(V4_CLIENT, V4_SERVER, 40001, 80, seg, vnet=False)),
            flow_hash_key(build_udp(V4_CLIENT, V4_SERVER, 40000, 80, b"", vnet=False)),
            flow_hash_key(build_tcp(V6_CLIENT, V6_SERVER, 40000, 80, seg, vnet=False)),
            flow_hash_key(build_udp(V6_CLIENT, V6_SERVER, 40000, 80, b"", vnet=False))}
    assert len(keys) == 5 and None not in keys
    ping = icmp_echo_request(V4_CLIENT, V4_SERVER, 1, 1, b"")
    assert flow_hash_key(ping) is None
    assert flow_hash_key(icmp_echo_request(V6_CLIENT, V6_SERVER, 1, 1, b"")) is None
    assert flow_hash_key(v6_packet([(0, bytes(6))], 58, bytes(8))) is None
    for junk in (b"", b"\x45", b"\x45" + bytes(19), b"\x46" + bytes(22), b"\x60" + bytes(30)):
        assert flow_hash_key(junk) is None


# --------------------------------------------------------------------------- describe

def test_describe() -> None:
    syn = build_tcp(V4_CLIENT, V4_SERVER, 51234, 80,
                    Segment(1000, 0, SYN, 64240, mss=1460, sack_permitted=True, ts_val=1,
                            ts_ecr=0, wscale=7), vnet=False)
    assert describe(syn) == ("IPv4 10.1.1.100:51234 > 93.184.215.14:80 TCP [S] seq=1000 ack=0 "
                             "win=64240 len=0 mss=1460 wscale=7 sackOK ts=1/0")
    data = build_tcp(V6_SERVER, V6_CLIENT, 443, 51234,
                     Segment(5, 6, PSH | ACK, 501, b"hello", sack=((1, 2),)), vnet=False)
    assert describe(data) == ("IPv6 [2606:2800::e]:443 > [fd00::64]:51234 TCP [P.] seq=5 "
                              "ack=6 win=501 len=5 sack=1-2")
    fin = build_tcp(V4_CLIENT, V4_SERVER, 1, 2, Segment(0, 0, FIN | ACK, 0), vnet=False)
    assert " TCP [F.] " in describe(fin)
    rst = build_tcp(V4_CLIENT, V4_SERVER, 1, 2, Segment(0, 0, RST, 0), vnet=False)
    assert " TCP [R] " in describe(rst)
    dns = build_udp(V4_CLIENT, V4_SERVER, 5353, 53, b"query", vnet=False)
    assert describe(dns) == "IPv4 10.1.1.100:5353 > 93.184.215.14:53 UDP len=5"
    ping = icmp_echo_request(V6_CLIENT, V6_SERVER, 3, 4, b"abc")
    assert describe(ping) == "IPv6 fd00::64 > 2606:2800::e ICMPv6 echo request id=3 seq=4 len=3"
    ping4 = icmp_echo_request(V4_CLIENT, V4_SERVER, 3, 4, b"")
    reply = build_icmp_echo_reply(parse_ip(ping4), vnet=False)
    assert describe(reply) == "IPv4 93.184.215.14 > 10.1.1.100 ICMP type=0 code=0 len=8"
    assert describe(b"\x45\x00") == "malformed packet (2 bytes): truncated IPv4 header"
    assert "malformed: truncated TCP header" in describe(v4_header(b"\0" * 10))
    assert describe(v4_header(b"gre", proto=47)).endswith("proto=47 len=3")


# --------------------------------------------------------------------------- fuzzing

def run_everything(pkt: bytes) -> None:
    """Feed one packet to every parser; only ProtocolError may come out."""
    key = flow_hash_key(pkt)  # never raises
    assert key is None or isinstance(key, bytes)
    assert isinstance(describe(pkt), str)  # never raises
    try:
        ip = parse_ip(pkt)
    except ProtocolError:
        return
    assert len(ip.src) == len(ip.dst) == (4 if ip.version == 4 else 16)
    for parse in (parse_tcp, parse_udp):
        try:
            parse(ip.payload)
        except ProtocolError:
            pass
    try:
        reply = build_icmp_echo_reply(ip, vnet=False)
    except ProtocolError:
        pass
    else:
        parse_ip(reply)  # what we build parses


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    run_everything(data)
    for parse in (parse_tcp, parse_udp, strip_vnet):
        try:
            parse(data)
        except ProtocolError:
            pass


@FUZZ
@given(st.sampled_from([4, 6]), st.integers(0, 255), st.binary(max_size=100))
def test_fuzz_icmp_echo(version: int, proto: int, payload: bytes) -> None:
    src, dst = ADDRESS_PAIRS[version == 6]
    ip = IpPacket(version, src, dst, proto, 64, memoryview(payload), 20)
    try:
        parse_icmp_echo(ip)
        build_icmp_echo_reply(ip, vnet=True)
    except ProtocolError:
        pass


@st.composite
def valid_packets(draw: st.DrawFn) -> bytes:
    src, dst = draw(addresses)
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "v6ext", "v4opt"]))
    if kind == "tcp":
        return build_tcp(src, dst, draw(u16), draw(u16), draw(segments(max_payload=50)),
                         vnet=False)
    if kind == "udp":
        return build_udp(src, dst, draw(u16), draw(u16), draw(st.binary(max_size=50)),
                         vnet=False)
    if kind == "icmp":
        return icmp_echo_request(src, dst, draw(u16), draw(u16), draw(st.binary(max_size=50)))
    tcp = bytes(parse_ip(build_tcp(src, dst, 1, 2, draw(segments(max_payload=20)),
                                   vnet=False)).payload)
    if kind == "v6ext":
        return v6_packet([(0, bytes(6)), (60, bytes(14))], draw(st.sampled_from([6, 17, 58])),
                         tcp)
    return v4_header(tcp, options=b"\x01\x01\x01\x00")


@FUZZ
@given(valid_packets(), st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)),
                                 max_size=4),
       st.none() | st.integers(0, 120), st.binary(max_size=8))
def test_fuzz_mutated_packets(pkt: bytes, changes: list[tuple[int, int]], cut: int | None,
                              extra: bytes) -> None:
    run_everything(pkt)
    mutated = bytearray(pkt)
    for index, value in changes:
        if index < len(mutated):
            mutated[index] = value
    if cut is not None:
        del mutated[cut:]
    mutated += extra
    run_everything(bytes(mutated))
    run_everything(memoryview(mutated))
