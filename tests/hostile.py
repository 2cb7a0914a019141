"""Hostile traffic for the robustness tests, run as the command under httptap.

``python hostile.py flood SEED COUNT V4 V6 URL SHA256``: inject COUNT malformed IPv4,
IPv6, TCP, UDP and ICMP packets (drawn from ``random.Random(SEED)``) straight onto the
TUN device through an ``AF_PACKET`` socket on the ``httptap`` interface, below the
kernel's own IP stack, so httptap's tcp stage reads them as they are; then download URL
over HTTPS and check its SHA-256. Every packet is addressed to the test host (V4, V6:
traffic must not leave the machine) on ports nothing listens on and never to port 53 (a
DNS question could be forwarded to the host's resolvers). An ``AF_PACKET`` socket needs
CAP_NET_RAW in the namespace: the command has it when httptap runs as root.

``python hostile.py keepalive HOST PORT CONNECTIONS ROUNDS PATH``: open CONNECTIONS
keep-alive connections at once, then in each of ROUNDS send one request on every
connection and read every response (non-blocking, one thread); after each round print
``round N`` and wait for a line on stdin, so the test can measure between rounds.

Standard library only; bounded in count and time (every wait has a deadline).
"""

from __future__ import annotations

import hashlib
import random
import resource
import selectors
import socket
import struct
import sys
import time
import urllib.request

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
DEADLINE = 60.0  # seconds: any phase taking longer fails the command


# --------------------------------------------------------------------------- packets

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _port(rng: random.Random) -> int:
    """A port nothing on the test host listens on (and never 53)."""
    return rng.randint(20000, 29999)


def _transport(rng: random.Random, proto: int) -> tuple[bytes, int]:
    """A TCP, UDP or ICMP(v6) segment, malformed in a random way, with a zero checksum;
    and where its checksum goes."""
    payload = rng.randbytes(rng.choice((0, 0, 1, 7, 40, 200, 1400)))
    if proto == 6:
        offset = rng.choice((5, 5, 5, rng.randint(0, 15)))
        flags = rng.choice((0x02, 0x10, 0x18, 0x04, 0x11, 0x12, rng.randint(0, 0x1FF)))
        options = rng.randbytes(max(0, offset - 5) * 4) if rng.random() < 0.5 else b""
        return struct.pack("!HHIIHHHH", rng.randint(1024, 65535), _port(rng),
                           rng.getrandbits(32), rng.getrandbits(32),
                           (offset << 12) | flags, rng.randint(0, 65535), 0,
                           rng.randint(0, 65535)) + options + payload, 16
    if proto == 17:
        length = rng.choice((8 + len(payload), rng.randint(0, 65535)))
        return struct.pack("!HHHH", rng.randint(1024, 65535), _port(rng), length, 0) \
            + payload, 6
    # ICMP (1) or ICMPv6 (58), or any other protocol number: echo requests, random types
    kind = rng.choice((8, 128, rng.randint(0, 255)))
    return struct.pack("!BBHHH", kind, rng.randint(0, 3), 0, rng.randint(0, 65535),
                       rng.randint(0, 65535)) + payload, 2


def _sum_into(rng: random.Random, seg: bytes, at: int, pseudo: bytes) -> bytes:
    """Half of the segments get a valid checksum (``pseudo``: the pseudo-header, if any)."""
    if rng.random() < 0.5:
        seg = seg[:at] + struct.pack("!H", _checksum(pseudo + seg)) + seg[at + 2:]
    return seg


def ipv4_packet(rng: random.Random, src: bytes, dst: bytes) -> bytes:
    proto = rng.choice((6, 17, 1, 6, 17, 1, rng.randint(0, 255)))
    seg, at = _transport(rng, proto)
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg)) if proto != 1 else b""
    seg = _sum_into(rng, seg, at, pseudo)
    ihl = rng.choice((5, 5, 5, rng.randint(0, 15)))
    options = rng.randbytes(max(0, ihl - 5) * 4)
    total = rng.choice((20 + len(options) + len(seg), rng.randint(0, 65535)))
    frag = rng.choice((0, 0, 0x4000, rng.randint(0, 0xFFFF)))  # DF, or any flags/offset
    version = rng.choice((4, 4, 4, 4, rng.randint(0, 15)))
    head = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, total & 0xFFFF,
                       rng.randint(0, 65535), frag, rng.randint(0, 255), proto, 0, src, dst)
    head += options
    if rng.random() < 0.7:
        head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
    return head + seg


def ipv6_packet(rng: random.Random, src: bytes, dst: bytes) -> bytes:
    nxt = rng.choice((6, 17, 58, 6, 17, 58, 0, 43, 44, 60, 59, rng.randint(0, 255)))
    upper = nxt if nxt in (6, 17, 58) else rng.choice((6, 17, 58))
    seg, at = _transport(rng, upper)
    seg = _sum_into(rng, seg, at, src + dst + struct.pack("!I3xB", len(seg), upper))
    if nxt not in (6, 17, 58):  # an extension header (or "no next header"), as garbled
        seg = struct.pack("!BB", upper, rng.randint(0, 255)) + rng.randbytes(6) + seg
    length = rng.choice((len(seg), rng.randint(0, 65535)))
    first = (rng.choice((6, 6, 6, rng.randint(0, 15))) << 28) | rng.getrandbits(28)
    return struct.pack("!IHBB16s16s", first, length & 0xFFFF, nxt, rng.randint(0, 255),
                       src, dst) + seg


def flood(seed: int, count: int, v4: str, v6: str) -> tuple[dict[str, int], int]:
    """Send ``count`` packets; returns how many of each kind were sent, and how many
    ``sendto`` refused."""
    rng = random.Random(seed)
    name = "httptap"
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    src4, dst4 = socket.inet_aton("10.1.1.100"), socket.inet_aton(v4)
    src6 = socket.inet_pton(socket.AF_INET6, "fd01:1:1::100")
    dst6 = socket.inet_pton(socket.AF_INET6, v6) if v6 else None
    sent = {"ipv4": 0, "ipv6": 0, "truncated": 0, "garbage": 0}
    refused = 0
    deadline = time.monotonic() + DEADLINE
    for i in range(count):
        if i % 1000 == 0 and time.monotonic() > deadline:
            raise SystemExit(f"flood: only {i} packets sent in {DEADLINE} s")
        roll = rng.random()
        if roll < 0.05:
            kind, pkt, proto = "garbage", rng.randbytes(rng.randint(0, 100)), ETH_P_IP
        elif roll < 0.5 or dst6 is None:
            kind, pkt, proto = "ipv4", ipv4_packet(rng, src4, dst4), ETH_P_IP
        else:
            kind, pkt, proto = "ipv6", ipv6_packet(rng, src6, dst6), ETH_P_IPV6
        if rng.random() < 0.1:
            kind, pkt = "truncated", pkt[:rng.randint(0, len(pkt))]
        if not pkt:
            pkt = b"\x45"
        try:
            sock.sendto(pkt, (name, proto))
        except OSError:
            # ENOBUFS and the like: refused by the kernel before the device. Counted;
            # the test reads how many the tcp stage received from --stats.
            refused += 1
        sent[kind] += 1
    sock.close()
    return sent, refused


def download(url: str) -> str:
    with urllib.request.urlopen(url, timeout=DEADLINE) as r:  # noqa: S310 - the test host
        h = hashlib.sha256()
        while chunk := r.read(1 << 16):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- keep-alive

def keepalive(host: str, port: int, connections: int, rounds: int, path: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 64), hard))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    socks = []
    deadline = time.monotonic() + DEADLINE
    # Connect all at once (non-blocking), then wait until every one is connected.
    for _ in range(connections):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
    pending = set(socks)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SystemExit(f"keepalive: {len(pending)} connections never connected")
        for key, _ in sel.select(left):
            err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise SystemExit(f"keepalive: connect failed: {err}")
            sel.unregister(key.fileobj)
            pending.discard(key.fileobj)
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    for n in range(1, rounds + 1):
        bufs = {s: bytearray() for s in socks}
        for s in socks:
            s.setblocking(True)
            s.sendall(request)
            s.setblocking(False)
        waiting = set(socks)
        deadline = time.monotonic() + DEADLINE
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"keepalive: round {n}: {len(waiting)} responses missing")
            for key, _ in sel.select(left):
                s = key.fileobj
                data = s.recv(65536)
                if not data:
                    raise SystemExit(f"keepalive: round {n}: a connection closed")
                buf = bufs[s]
                buf += data
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = bytes(buf[:end]).decode("latin-1")
                if not head.startswith("HTTP/1.1 200 "):
                    raise SystemExit(f"keepalive: round {n}: {head.splitlines()[0]!r}")
                length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                              if line.lower().startswith("content-length:"))
                if len(buf) >= end + 4 + length:
                    waiting.discard(s)
        print(f"round {n}", flush=True)
        if sys.stdin.readline() == "":
            raise SystemExit("keepalive: stdin closed")
    for s in socks:
        s.close()


def main(argv: list[str]) -> int:
    if argv[0] == "flood":
        seed, count, v4, v6, url, digest = argv[1:7]
        sent, refused = flood(int(seed), int(count), v4, v6)
        print("sent", sum(sent.values()), " ".join(f"{k}={v}" for k, v in sent.items()),
              f"refused={refused}", flush=True)
        got = download(url)
        print("download", "intact" if got == digest else f"corrupt {got}", flush=True)
        return 0 if got == digest else 1
    if argv[0] == "keepalive":
        host, port, connections, rounds, path = argv[1:6]
        keepalive(host, int(port), int(connections), int(rounds), path)
        return 0
    raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
