"""Packets on the TUN device: parse what the command's kernel sends, build what we send back.

Role in the pipeline: each tcp shard reads its queue of the device, calls
:func:`parse_ip`, then :func:`parse_tcp` / :func:`parse_udp` / :func:`parse_icmp_echo`,
feeds the result to its core, and turns the core's output back into packets with
:func:`build_tcp_vnet` (headers and payload apart, for ``writev``), :func:`build_udp` and
:func:`build_icmp_echo_reply`. Where a tun stage steers packets to the shards (with
``--dump-pcap``), it calls :func:`flow_hash_key` on every packet it reads to pick one.
``--dump-tcp`` prints :func:`describe` of each packet; :func:`strip_vnet` and
:func:`build_tcp` serve the tests and the cold paths.

Theory of operation
-------------------
* Parsing reads fixed offsets with ``struct.unpack_from`` on ``bytes`` or ``memoryview``
  and creates one small object per packet (:class:`IpPacket`, then a
  :class:`~httptap.net.tcp.segment.Segment`). Every parser either returns a result or raises
  :class:`ProtocolError`, whatever the input; nothing else escapes.
* Parsers check structure (lengths, header lengths, option lengths) but never checksums:
  every packet comes from the local kernel, which computed them (or, on a TUN device
  opened with ``IFF_VNET_HDR``, left a partial sum that only the receiving end finishes).
* IP fragments are refused (``ProtocolError("fragment")``): the kernel's TCP never sends
  them on an MTU 65520 link, and we do not reassemble.
* Builders return ``bytes`` ready for ``write()`` on the TUN fd. With ``vnet=True`` the
  packet starts with a 10-byte ``struct virtio_net_hdr`` asking the kernel to finish the
  TCP/UDP checksum (``VIRTIO_NET_HDR_F_NEEDS_CSUM``); the checksum field then holds the
  folded, uncomplemented pseudo-header sum. With ``vnet=False`` the checksum is computed
  here (see :func:`internet_checksum`, about 1 GB/s for large payloads).
* Checksum arithmetic uses the fact that 65536 = 1 (mod 65535): the 16-bit
  ones'-complement sum of a buffer is congruent, modulo 0xFFFF, to the buffer read as one
  big-endian integer. So a sum is ``int.from_bytes`` (in 2 KiB pieces, the fastest size
  measured) and one ``%`` at the end, and 32-bit fields such as sequence numbers can be
  added as they are.
* Options we build follow the Linux kernel's layout (``tcp_options_write``): MSS first,
  then SACK-permitted folded into the timestamp option's NOPs, then window scale, then
  SACK blocks, each padded with NOPs to 4 bytes.

Not implemented: IPv4 options on output, IPv6 extension headers on output, AH/ESP,
jumbograms, fragment reassembly, ICMP errors.
"""

from __future__ import annotations

import struct
from typing import Final

from httptap.net.tcp.segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, Segment

__all__ = [
    "IPPROTO_ICMP", "IPPROTO_ICMPV6", "IPPROTO_TCP", "IPPROTO_UDP", "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VNET_HDR_LEN", "IpPacket", "ProtocolError", "build_icmp_echo_reply", "build_tcp", "build_tcp_vnet",
    "build_udp", "describe", "flow_hash_key", "internet_checksum", "parse_icmp_echo",
    "parse_ip", "parse_tcp", "parse_udp", "strip_vnet",
]

IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_ICMPV6: Final = 58

VNET_HDR_LEN: Final = 10
VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1

ICMP_ECHO_REPLY: Final = 0
ICMP_ECHO_REQUEST: Final = 8
ICMPV6_ECHO_REQUEST: Final = 128
ICMPV6_ECHO_REPLY: Final = 129

TTL: Final = 64  # TTL / hop limit of everything we build
IP4_DF: Final = 0x4000
TCP_MAX_OPTIONS: Final = 40

_IP6_EXT_HEADERS: Final = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_IP6_FRAGMENT: Final = 44

_IP4 = struct.Struct("!BBHHHBBH4s4s")   # ver/ihl tos total id frag ttl proto csum src dst
_IP6 = struct.Struct("!IHBB16s16s")     # ver/tc/flow plen next hlim src dst
_TCP = struct.Struct("!HHIIBBHHH")      # sport dport seq ack off flags win csum urg
_UDP = struct.Struct("!HHHH")           # sport dport len csum
_ICMP_ECHO = struct.Struct("!BBHHH")    # type code csum ident seq
_VNET = struct.Struct("<BBHHHH")        # flags gso_type hdr_len gso_size csum_start csum_offset
_U16 = struct.Struct("!H")
_U32X2 = struct.Struct("!II")
_U32X3 = struct.Struct("!III")
_OPT_MSS = struct.Struct("!BBH")

# The 12-byte option block of nearly every data segment: NOP NOP TS(kind 8, len 10).
_NOP_NOP_TS: Final = 0x0101080A
# The same with SACK-permitted in place of the NOPs, as Linux sends it on a SYN.
_SACKOK_TS: Final = 0x0402080A
_NOP_NOP_SACKOK: Final = b"\x01\x01\x04\x02"

_VNET_NO_CSUM: Final = bytes(VNET_HDR_LEN)

_CHUNK: Final = 2048  # bytes per int.from_bytes call when summing; even, fastest measured


class ProtocolError(ValueError):
    """The bytes are not a packet we can handle. The only exception the parsers raise."""


class IpPacket:
    """One parsed IP packet.

    ``src``/``dst`` are packed addresses (4 or 16 bytes); ``proto`` is the IPv4 protocol or
    the IPv6 next header after any extension headers; ``ttl`` is the TTL or hop limit;
    ``payload`` is a view of the L4 part, cut to the length the IP header declares;
    ``l4_offset`` is where that part starts in the packet.
    """

    __slots__ = ("version", "src", "dst", "proto", "ttl", "payload", "l4_offset")

    def __init__(self, version: int, src: bytes, dst: bytes, proto: int, ttl: int,
                 payload: memoryview, l4_offset: int) -> None:
        self.version = version
        self.src = src
        self.dst = dst
        self.proto = proto
        self.ttl = ttl
        self.payload = payload
        self.l4_offset = l4_offset

    def __repr__(self) -> str:
        return (f"IpPacket(v{self.version} proto={self.proto} ttl={self.ttl} "
                f"{self.src.hex()} > {self.dst.hex()} len={len(self.payload)})")


# --------------------------------------------------------------------------- checksums

def _sum16(data: bytes | bytearray | memoryview) -> int:
    """A non-negative integer congruent (mod 0xFFFF) to the ones'-complement sum of data.

    Words are big-endian; an odd trailing byte is padded with a zero byte (RFC 1071).
    """
    n = len(data)
    if n & 1:
        n -= 1
        tail = data[n] << 8
        data = memoryview(data)[:n]
    else:
        tail = 0
    if n <= _CHUNK:
        return int.from_bytes(data, "big") + tail
    mv = memoryview(data)
    from_bytes = int.from_bytes
    total = tail
    for i in range(0, n, _CHUNK):
        total += from_bytes(mv[i:i + _CHUNK], "big")
    return total


def _fold(total: int) -> int:
    """End-around-carry fold of a non-negative sum to 16 bits: 0 for 0, else 1..0xFFFF."""
    return (total - 1) % 0xFFFF + 1 if total else 0


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The RFC 1071 checksum of data, with ``initial`` (e.g. a pseudo-header sum) added.

    A buffer that already holds its correct checksum gives 0.
    """
    return 0xFFFF - _fold(initial + _sum16(data))


# --------------------------------------------------------------------------- parsing

def strip_vnet(pkt: bytes | bytearray | memoryview) -> memoryview:
    """The IP packet after the virtio-net header of a packet read from an IFF_VNET_HDR TUN fd."""
    if len(pkt) < VNET_HDR_LEN:
        raise ProtocolError("truncated virtio-net header")
    return memoryview(pkt)[VNET_HDR_LEN:]


def parse_ip(pkt: bytes | bytearray | memoryview) -> IpPacket:
    """Parse an IPv4 or IPv6 packet (no virtio-net header) down to its L4 part."""
    n = len(pkt)
    if not n:
        raise ProtocolError("empty packet")
    version = pkt[0] >> 4
    if version == 4:
        if n < 20:
            raise ProtocolError("truncated IPv4 header")
        vihl, _tos, total, _id, frag, ttl, proto, _csum, src, dst = _IP4.unpack_from(pkt)
        hl = (vihl & 0x0F) << 2
        if hl < 20:
            raise ProtocolError("bad IPv4 header length")
        if total < hl:
            raise ProtocolError("bad IPv4 total length")
        if total > n:
            raise ProtocolError("truncated IPv4 packet")
        if frag & 0x3FFF:  # MF or a fragment offset
            raise ProtocolError("fragment")
        return IpPacket(4, src, dst, proto, ttl, memoryview(pkt)[hl:total], hl)
    if version == 6:
        if n < 40:
            raise ProtocolError("truncated IPv6 header")
        _vtf, plen, nxt, hlim, src, dst = _IP6.unpack_from(pkt)
        end = 40 + plen
        if end > n:
            raise ProtocolError("truncated IPv6 packet")
        off = 40
        while nxt in _IP6_EXT_HEADERS:
            if off + 8 > end:
                raise ProtocolError("truncated IPv6 extension header")
            nxt, ext_len = pkt[off], (pkt[off + 1] + 1) << 3
            off += ext_len
            if off > end:
                raise ProtocolError("truncated IPv6 extension header")
        if nxt == _IP6_FRAGMENT:
            raise ProtocolError("fragment")
        return IpPacket(6, src, dst, nxt, hlim, memoryview(pkt)[off:end], off)
    raise ProtocolError(f"not an IP packet (version {version})")


def parse_tcp(payload: bytes | bytearray | memoryview) -> tuple[int, int, Segment]:
    """Parse a TCP header and its options; returns ``(sport, dport, segment)``.

    The segment's payload is a copy (``bytes``), so it outlives the packet buffer. The
    checksum is not verified. Window scale is reported as sent (the core clamps it to 14).
    """
    n = len(payload)
    if n < 20:
        raise ProtocolError("truncated TCP header")
    sport, dport, seq, ack, off, flags, window, _csum, _urg = _TCP.unpack_from(payload)
    hl = (off >> 4) << 2
    if hl < 20:
        raise ProtocolError("bad TCP data offset")
    if hl > n:
        raise ProtocolError("truncated TCP header")
    seg = Segment(seq, ack, flags, window, bytes(payload[hl:]))
    if hl > 20:
        if hl == 32:
            kinds, ts_val, ts_ecr = _U32X3.unpack_from(payload, 20)
            if kinds == _NOP_NOP_TS:  # the usual data-segment options: just a timestamp
                seg.ts_val = ts_val
                seg.ts_ecr = ts_ecr
                return sport, dport, seg
        _parse_tcp_options(payload, hl, seg)
    return sport, dport, seg


def _parse_tcp_options(buf: bytes | bytearray | memoryview, end: int, seg: Segment) -> None:
    """Read the options in ``buf[20:end]`` into ``seg``; unknown kinds are skipped."""
    i = 20
    while i < end:
        kind = buf[i]
        if kind == 0:  # end of option list
            return
        if kind == 1:  # NOP
            i += 1
            continue
        if i + 2 > end:
            raise ProtocolError("truncated TCP option")
        length = buf[i + 1]
        if length < 2 or i + length > end:
            raise ProtocolError(f"bad length {length} for TCP option {kind}")
        if kind == 2:
            if length != 4:
                raise ProtocolError("bad MSS option")
            seg.mss = _U16.unpack_from(buf, i + 2)[0]
        elif kind == 3:
            if length != 3:
                raise ProtocolError("bad window scale option")
            seg.wscale = buf[i + 2]
        elif kind == 4:
            if length != 2:
                raise ProtocolError("bad SACK-permitted option")
            seg.sack_permitted = True
        elif kind == 5:
            if length < 10 or (length - 2) & 7:
                raise ProtocolError("bad SACK option")
            edges = struct.unpack_from(f"!{(length - 2) >> 2}I", buf, i + 2)
            seg.sack = tuple(zip(edges[0::2], edges[1::2]))
        elif kind == 8:
            if length != 10:
                raise ProtocolError("bad timestamp option")
            seg.ts_val, seg.ts_ecr = _U32X2.unpack_from(buf, i + 2)
        i += length


def parse_udp(payload: bytes | bytearray | memoryview) -> tuple[int, int, bytes]:
    """Parse a UDP header; returns ``(sport, dport, data)`` with data cut to the UDP length."""
    n = len(payload)
    if n < 8:
        raise ProtocolError("truncated UDP header")
    sport, dport, length, _csum = _UDP.unpack_from(payload)
    if length < 8:
        raise ProtocolError("bad UDP length")
    if length > n:
        raise ProtocolError("truncated UDP datagram")
    return sport, dport, bytes(payload[8:length])


def parse_icmp_echo(ip: IpPacket) -> tuple[int, int, int, int, bytes]:
    """Parse an ICMPv4 or ICMPv6 echo request; returns ``(type, code, ident, seq, data)``.

    Any other ICMP message (an ICMPv6 router solicitation, say) raises ProtocolError too,
    so callers drop everything that is not a ping with one ``except``.
    """
    if ip.version == 4 and ip.proto == IPPROTO_ICMP:
        request = ICMP_ECHO_REQUEST
    elif ip.version == 6 and ip.proto == IPPROTO_ICMPV6:
        request = ICMPV6_ECHO_REQUEST
    else:
        raise ProtocolError("not ICMP")
    payload = ip.payload
    if len(payload) < 8:
        raise ProtocolError("truncated ICMP message")
    icmp_type, code, _csum, ident, seq = _ICMP_ECHO.unpack_from(payload)
    if icmp_type != request:
        raise ProtocolError(f"not an echo request (ICMP type {icmp_type})")
    return icmp_type, code, ident, seq, bytes(payload[8:])


def flow_hash_key(pkt: bytes | bytearray | memoryview) -> bytes | None:
    """A key naming the packet's flow, for steering it to a shard; None if not TCP/UDP.

    The key is (proto, src, dst, sport, dport) as raw bytes, read at fixed offsets. It is
    direction-dependent: only packets from the command are keyed. Never raises;
    malformed packets and fragments also give None (any shard may take them, and the
    shard's parser rejects them).
    """
    n = len(pkt)
    if n < 20:
        return None
    b0 = pkt[0]
    if b0 >> 4 == 4:
        proto = pkt[9]
        hl = (b0 & 0x0F) << 2
        if (proto != IPPROTO_TCP and proto != IPPROTO_UDP) or hl < 20 or n < hl + 4:
            return None
        if pkt[6] & 0x3F or pkt[7]:  # MF or fragment offset: no ports to read
            return None
        return b"".join((pkt[9:10], pkt[12:20], pkt[hl:hl + 4]))
    if b0 >> 4 == 6 and n >= 44:
        nxt = pkt[6]
        if nxt == IPPROTO_TCP or nxt == IPPROTO_UDP:
            return b"".join((pkt[6:7], pkt[8:44]))
        if nxt in _IP6_EXT_HEADERS:  # rare: walk the extension headers
            try:
                ip = parse_ip(pkt)
            except ProtocolError:
                return None
            if (ip.proto == IPPROTO_TCP or ip.proto == IPPROTO_UDP) and len(ip.payload) >= 4:
                return b"".join((bytes((ip.proto,)), ip.src, ip.dst, ip.payload[:4]))
    return None


# --------------------------------------------------------------------------- building

def _ip_header(src: bytes, dst: bytes, proto: int, l4_len: int, addr_sum: int) -> bytes:
    """The IPv4 (DF, TTL 64, id 0, checksummed) or IPv6 header for an L4 part of l4_len bytes."""
    if len(src) == 4 and len(dst) == 4:
        total = 20 + l4_len
        if total > 0xFFFF:
            raise ValueError(f"IPv4 packet too large ({total} bytes)")
        # Header words: 0x4500, total, id 0, DF, TTL<<8|proto, checksum, addresses.
        csum = 0xFFFF - _fold(0x4500 + total + IP4_DF + (TTL << 8) + proto + addr_sum)
        return _IP4.pack(0x45, 0, total, 0, IP4_DF, TTL, proto, csum, src, dst)
    if len(src) == 16 and len(dst) == 16:
        if l4_len > 0xFFFF:
            raise ValueError(f"IPv6 payload too large ({l4_len} bytes)")
        return _IP6.pack(0x60000000, l4_len, proto, TTL, src, dst)
    raise ValueError("addresses must both be 4 or both be 16 bytes")


def _tcp_options(seg: Segment) -> bytes:
    """The segment's options laid out as Linux does, a multiple of 4 bytes."""
    ts_val = seg.ts_val
    if seg.mss is None and seg.wscale is None and not seg.sack_permitted and not seg.sack:
        if ts_val is None:
            return b""
        return _U32X3.pack(_NOP_NOP_TS, ts_val, seg.ts_ecr or 0)
    parts = []
    if seg.mss is not None:
        parts.append(_OPT_MSS.pack(2, 4, seg.mss))
    if ts_val is not None:
        parts.append(_U32X3.pack(_SACKOK_TS if seg.sack_permitted else _NOP_NOP_TS,
                                 ts_val, seg.ts_ecr or 0))
    elif seg.sack_permitted:
        parts.append(_NOP_NOP_SACKOK)
    if seg.wscale is not None:
        parts.append(bytes((1, 3, 3, seg.wscale)))
    if seg.sack:
        used = sum(map(len, parts))
        blocks = seg.sack[:(TCP_MAX_OPTIONS - used - 4) >> 3]  # what fits, as the kernel does
        if blocks:
            edges = [edge for block in blocks for edge in block]
            parts.append(bytes((1, 1, 5, 2 + 8 * len(blocks))))
            parts.append(struct.pack(f"!{len(edges)}I", *edges))
    return b"".join(parts)


def build_tcp_vnet(src: bytes, dst: bytes, sport: int, dport: int,
                   seg: Segment) -> tuple[bytes, bytes | memoryview]:
    """``build_tcp(..., vnet=True)`` as two parts, the headers (virtio-net, IP, TCP) and
    the payload, uncopied: ``os.writev`` hands both to the device, which saves copying
    every byte the command receives once more (the payload is a view of the send buffer).
    """
    opts, thl, ip, pseudo = _tcp_headers(src, dst, seg)
    iphl = len(ip)
    return b"".join((
        _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, iphl + thl, 0, iphl, 16), ip,
        _TCP.pack(sport, dport, seg.seq, seg.ack, thl << 2, seg.flags, seg.window,
                  _fold(pseudo), 0),
        opts)), seg.payload


def _tcp_headers(src: bytes, dst: bytes, seg: Segment) -> tuple[bytes, int, bytes, int]:
    """TCP options, TCP header length, IP header and pseudo-header sum of a segment."""
    opts = _tcp_options(seg)
    thl = 20 + len(opts)
    tcp_len = thl + len(seg.payload)
    addr_sum = int.from_bytes(src + dst, "big")
    ip = _ip_header(src, dst, IPPROTO_TCP, tcp_len, addr_sum)
    return opts, thl, ip, addr_sum + IPPROTO_TCP + tcp_len


def build_tcp(src: bytes, dst: bytes, sport: int, dport: int, seg: Segment, *,
              vnet: bool) -> bytes:
    """An IPv4 (4-byte addresses) or IPv6 (16-byte) TCP packet carrying ``seg``.

    With ``vnet`` the packet starts with a virtio-net header asking the kernel to finish the
    TCP checksum; otherwise the checksum is computed here.
    """
    if vnet:
        headers, payload = build_tcp_vnet(src, dst, sport, dport, seg)
        return headers + payload
    opts, thl, ip, pseudo = _tcp_headers(src, dst, seg)
    payload = seg.payload
    off = thl << 2  # data offset in 32-bit words, in the high nibble
    # Header sum from the fields (32-bit seq/ack count as themselves, 65536 = 1 mod 0xFFFF).
    total = (pseudo + sport + dport + seg.seq + seg.ack + (off << 8 | seg.flags) + seg.window
             + (int.from_bytes(opts, "big") if opts else 0) + (_sum16(payload) if payload else 0))
    return b"".join((
        ip,
        _TCP.pack(sport, dport, seg.seq, seg.ack, off, seg.flags, seg.window,
                  0xFFFF - _fold(total), 0),
        opts, payload))


def build_udp(src: bytes, dst: bytes, sport: int, dport: int,
              data: bytes | bytearray | memoryview, *, vnet: bool) -> bytes:
    """An IPv4 or IPv6 UDP datagram, with the checksum left to the kernel when ``vnet``."""
    length = 8 + len(data)
    addr_sum = int.from_bytes(src + dst, "big")
    ip = _ip_header(src, dst, IPPROTO_UDP, length, addr_sum)
    pseudo = addr_sum + IPPROTO_UDP + length
    if vnet:
        iphl = len(ip)
        return b"".join((
            _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, iphl + 8, 0, iphl, 6), ip,
            _UDP.pack(sport, dport, length, _fold(pseudo)), data))
    csum = 0xFFFF - _fold(pseudo + sport + dport + length + _sum16(data))
    # A computed 0 goes out as 0xFFFF: 0 means "no checksum" for IPv4 (RFC 768).
    return b"".join((ip, _UDP.pack(sport, dport, length, csum or 0xFFFF), data))


def build_icmp_echo_reply(ip: IpPacket, *, vnet: bool) -> bytes:
    """The echo reply to an echo request (raises ProtocolError if ``ip`` is not one).

    The checksum is always computed here (with the pseudo-header for ICMPv6): the
    virtio-net header, if any, has no flags.
    """
    _type, _code, ident, seq, data = parse_icmp_echo(ip)
    src, dst = ip.dst, ip.src
    length = 8 + len(data)
    addr_sum = int.from_bytes(src + dst, "big")
    if ip.version == 4:
        proto, reply, total = IPPROTO_ICMP, ICMP_ECHO_REPLY, 0
    else:
        proto, reply = IPPROTO_ICMPV6, ICMPV6_ECHO_REPLY
        total = addr_sum + IPPROTO_ICMPV6 + length  # ICMPv6 covers a pseudo-header
    header = _ip_header(src, dst, proto, length, addr_sum)
    total += (reply << 8) + ident + seq + _sum16(data)
    icmp = _ICMP_ECHO.pack(reply, 0, 0xFFFF - _fold(total), ident, seq)
    if vnet:
        return b"".join((_VNET_NO_CSUM, header, icmp, data))
    return b"".join((header, icmp, data))


# --------------------------------------------------------------------------- describing

# Flag letters in tcpdump's order.
_FLAG_LETTERS: Final = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."),
                        (URG, "U"), (ECE, "E"), (CWR, "W"))


def _format_addr(addr: bytes) -> str:
    import ipaddress  # not on the hot path; keeps import time down for the stages

    return str(ipaddress.ip_address(addr))


def _endpoint(addr: bytes, port: int) -> str:
    text = _format_addr(addr)
    return f"{text}:{port}" if len(addr) == 4 else f"[{text}]:{port}"


def _describe_tcp_options(seg: Segment) -> str:
    parts = []
    if seg.mss is not None:
        parts.append(f"mss={seg.mss}")
    if seg.wscale is not None:
        parts.append(f"wscale={seg.wscale}")
    if seg.sack_permitted:
        parts.append("sackOK")
    if seg.ts_val is not None:
        parts.append(f"ts={seg.ts_val}/{seg.ts_ecr}")
    if seg.sack:
        parts.append("sack=" + ",".join(f"{left}-{right}" for left, right in seg.sack))
    return "".join(" " + part for part in parts)


def describe(pkt: bytes | bytearray | memoryview) -> str:
    """A one-line summary of an IP packet for ``--dump-tcp``; never raises."""
    try:
        ip = parse_ip(pkt)
    except ProtocolError as exc:
        return f"malformed packet ({len(pkt)} bytes): {exc}"
    family = f"IPv{ip.version}"
    try:
        if ip.proto == IPPROTO_TCP:
            sport, dport, seg = parse_tcp(ip.payload)
            flags = "".join(letter for bit, letter in _FLAG_LETTERS if seg.flags & bit)
            return (f"{family} {_endpoint(ip.src, sport)} > {_endpoint(ip.dst, dport)} TCP "
                    f"[{flags}] seq={seg.seq} ack={seg.ack} win={seg.window} "
                    f"len={len(seg.payload)}{_describe_tcp_options(seg)}")
        if ip.proto == IPPROTO_UDP:
            sport, dport, data = parse_udp(ip.payload)
            return (f"{family} {_endpoint(ip.src, sport)} > {_endpoint(ip.dst, dport)} UDP "
                    f"len={len(data)}")
        head = f"{family} {_format_addr(ip.src)} > {_format_addr(ip.dst)}"
        if ip.proto == IPPROTO_ICMP or ip.proto == IPPROTO_ICMPV6:
            name = "ICMP" if ip.proto == IPPROTO_ICMP else "ICMPv6"
            if len(ip.payload) < 4:
                raise ProtocolError("truncated ICMP message")
            icmp_type, code = ip.payload[0], ip.payload[1]
            request = ICMP_ECHO_REQUEST if ip.proto == IPPROTO_ICMP else ICMPV6_ECHO_REQUEST
            if icmp_type == request and ip.version == (4 if ip.proto == IPPROTO_ICMP else 6):
                _t, _c, ident, seq, data = parse_icmp_echo(ip)
                return f"{head} {name} echo request id={ident} seq={seq} len={len(data)}"
            return f"{head} {name} type={icmp_type} code={code} len={len(ip.payload)}"
        return f"{head} proto={ip.proto} len={len(ip.payload)}"
    except ProtocolError as exc:
        return (f"{family} {_format_addr(ip.src)} > {_format_addr(ip.dst)} "
                f"proto={ip.proto} malformed: {exc}")
