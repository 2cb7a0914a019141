"""The few rtnetlink requests that configure the command's network namespace: an interface
up (with MTU and queue length), an address on it, a default route through it.

Role: the launcher (``run.namespace``) calls :func:`configure` right after creating the
TUN device. This used to be pyroute2's ``IPRoute``; importing it cost the launcher
60-100 ms of CPU on the path to running the command, for six messages this module builds
in a few lines (rtnetlink(7), ``linux/rtnetlink.h``, ``linux/if_addr.h``).

Messages are built by pure functions (bytes out, tested against the kernel's layouts);
:class:`Rtnl` sends each one with ``NLM_F_ACK`` and raises ``OSError`` with the kernel's
errno when it is refused, naming what was asked.
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_NEWROUTE = 24

IFF_UP = 0x1
IFLA_MTU = 4
IFLA_TXQLEN = 13
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_F_NODAD = 0x02       # an address usable at once: a point-to-point TUN has no neighbours
RTA_OIF = 4
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4        # what pyroute2 set, and what "ip route" shows as "proto static"
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

_NLMSGHDR = struct.Struct("=IHHII")       # length, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")     # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")      # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")      # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")            # length, type
_ERROR = struct.Struct("=i")              # -errno (0: the acknowledgement)


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _u32(value: int) -> bytes:
    return struct.pack("=I", value)


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One request: the netlink header (``NLM_F_REQUEST | NLM_F_ACK`` added) and ``body``."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK,
                          seq, 0) + body


def link_up(index: int, mtu: int | None = None, txqlen: int | None = None) -> tuple[int, int, bytes]:
    """(type, flags, body) setting link ``index`` up, with its MTU and queue length."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    if mtu is not None:
        body += _attr(IFLA_MTU, _u32(mtu))
    if txqlen is not None:
        body += _attr(IFLA_TXQLEN, _u32(txqlen))
    return RTM_NEWLINK, 0, body


def add_address(index: int, address: str, prefixlen: int, flags: int = 0) -> tuple[int, int, bytes]:
    """(type, flags, body) adding ``address/prefixlen`` (IPv4 or IPv6) to link ``index``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    packed = socket.inet_pton(family, address)
    body = (_IFADDRMSG.pack(family, prefixlen, flags, RT_SCOPE_UNIVERSE, index)
            + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed))
    return RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body


def add_default_route(index: int, family: int) -> tuple[int, int, bytes]:
    """(type, flags, body) adding a default route of ``family`` out of link ``index``."""
    body = (_RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE,
                        RTN_UNICAST, 0)
            + _attr(RTA_OIF, _u32(index)))
    return RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body


def ack_error(data: bytes, seq: int) -> int | None:
    """In what the kernel answered: the errno of the acknowledgement of request ``seq`` (0
    when it succeeded), or None when ``data`` holds none."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, got_seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break  # malformed, or cut short
        if kind == NLMSG_ERROR and got_seq == seq and length >= _NLMSGHDR.size + _ERROR.size:
            error: int = _ERROR.unpack_from(data, offset + _NLMSGHDR.size)[0]
            return -error
        offset += (length + 3) & ~3
    return None


class Rtnl:
    """An rtnetlink socket that sends one request at a time and waits for its answer."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        self.seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, what: str, request: tuple[int, int, bytes]) -> None:
        """Send ``request``; raise ``OSError`` (saying ``what`` was asked) if refused."""
        self.seq += 1
        kind, flags, body = request
        self.sock.sendto(message(kind, flags, self.seq, body), (0, 0))
        for _ in range(64):  # answers to earlier requests are all read: bounded anyway
            error = ack_error(self.sock.recv(65536), self.seq)
            if error == 0:
                return
            if error is not None:
                raise OSError(error, f"{what}: {os.strerror(error)}")
        raise OSError(f"{what}: no answer from the kernel")
