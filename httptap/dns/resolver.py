"""The DNS server the command talks to: answer A/AAAA from the host, forward the rest.

Role in the pipeline: the proxy stage (asyncio on uvloop, in the host's network
namespace) gives every DNS message the command sends to port 53 of any address -- a UDP
datagram, or one message of a TCP stream cut by ``httptap.dns.message.TcpDnsReader`` -- to
:meth:`Resolver.answer`, sends back the bytes it returns, and turns the
:class:`DnsInfo` into a ``httptap.plumbing.messages.DnsExchange`` for ``--print-dns`` and the sinks.

Theory of operation
-------------------
* **A and AAAA, class IN** are answered here, through the host's own resolver
  (``loop.getaddrinfo`` with ``AF_INET`` / ``AF_INET6``), so the host's ``/etc/hosts``,
  ``nsswitch.conf`` and VPN resolvers all count. The name is passed without its trailing
  dot, because glibc's ``files`` backend does not match ``localhost.``.
  ``EAI_NONAME`` becomes NXDOMAIN -- unless the name has addresses of the other family
  (glibc says ``EAI_NONAME`` for the AAAA of a name ``/etc/hosts`` lists only with IPv4),
  which makes it NODATA. ``EAI_NODATA`` / ``EAI_ADDRFAMILY`` or no address of the family
  is NODATA (NOERROR, no answers); anything else (``EAI_AGAIN``, ...) is SERVFAIL.
  getaddrinfo gives no TTL, so these answers carry :data:`LOCAL_TTL` (60 s).
* ``host.httptap.local.`` is A :data:`HOST_ADDR` (AAAA: NODATA); the proxy maps that
  address to the host's 127.0.0.1.
* **Everything else** -- other types or classes, IP literals and names that are not
  hostnames (``_srv._tcp.x`` is fine, ``a\\.b`` or the root is not) -- is forwarded as
  the raw query to the host's nameservers (``nameserver`` lines of ``/etc/resolv.conf``)
  in order: UDP from a fresh socket, :data:`UPSTREAM_TIMEOUT` per server; a truncated
  answer (TC) is asked again over TCP. The upstream answer is returned byte for byte,
  real TTLs included. No nameserver, or none answering, is SERVFAIL.
* Answers made here set RA and answer every question (the worst RCODE wins when there
  are several). A query that does not parse gets FORMERR when its header can be read;
  a response, or fewer than 12 bytes, is dropped (``None``). A non-QUERY opcode gets
  NOTIMP. :meth:`Resolver.answer` never raises (except ``CancelledError``).
* With ``udp=True`` an answer larger than the sender's UDP size (512, or its EDNS
  payload size) is cut to header and question with TC set, so the client retries over
  TCP.

Not implemented: caching (the host's resolver caches, if it does), DNSSEC validation,
EDNS in answers made here, SOA records in negative answers made here (so clients do not
cache NXDOMAIN for long), ``search``/``options`` lines of resolv.conf (the command's own
stub has already applied its search list; the name we get is absolute).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import message as dns

LOCAL_TTL = 60                   # seconds, for answers from getaddrinfo (it has no TTLs)
HOST_NAME = "host.httptap.local."
HOST_ADDR = "169.254.77.65"
UPSTREAM_TIMEOUT = 2.0           # seconds per nameserver, for UDP and again for TCP
RESOLV_CONF = "/etc/resolv.conf"
DNS_PORT = 53

_HOSTNAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.$")
_EAI_NODATA = {getattr(socket, n) for n in ("EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, n)}
_RCODE_RANK = {dns.NOERROR: 0, dns.NXDOMAIN: 1, dns.SERVFAIL: 2}

GetAddrInfo = Callable[..., Awaitable[list[tuple[Any, ...]]]]


@dataclass(slots=True)
class DnsInfo:
    """What ``--print-dns`` and the sinks show of one exchange (the first question)."""
    name: str            # "example.com."
    qtype: str           # "A", "TYPE65534"
    answers: list[str]   # answer records' data as text: "93.184.215.14", '"v=spf1 -all"'
    rcode: str           # "NOERROR", "NXDOMAIN", ...


def read_resolv_conf(path: str = RESOLV_CONF) -> list[tuple[str, int]]:
    """The ``nameserver`` addresses of a resolv.conf, in order, each with port 53.
    Lines that do not hold an IP address are skipped; a missing file gives ``[]``."""
    servers = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                ipaddress.ip_address(words[1].split("%", 1)[0])
            except ValueError:
                continue
            servers.append((words[1], DNS_PORT))
    return servers


def _matches(data: bytes, ident: int) -> bool:
    """``data`` is a response with id ``ident``."""
    return (len(data) >= dns.HEADER_SIZE and struct.unpack_from("!H", data)[0] == ident
            and bool(data[2] & (dns.QR >> 8)))


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self, ident: int, done: asyncio.Future[bytes | None]) -> None:
        self.ident = ident
        self.done = done

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if _matches(data, self.ident) and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():     # ICMP port unreachable: no server there
            self.done.set_result(None)


class Resolver:
    """Answers the command's DNS queries; one per proxy shard (it holds no sockets
    between queries)."""

    def __init__(self, nameservers: list[tuple[str, int]] | None = None, *,
                 getaddrinfo: GetAddrInfo | None = None,
                 timeout: float = UPSTREAM_TIMEOUT,
                 resolv_conf: str = RESOLV_CONF) -> None:
        """``nameservers`` overrides ``resolv_conf``'s; ``getaddrinfo`` (called like
        ``loop.getaddrinfo(host, None, family=..., type=...)``) replaces the running
        loop's, for tests."""
        self.nameservers = list(nameservers) if nameservers is not None \
            else read_resolv_conf(resolv_conf)
        self._getaddrinfo = getaddrinfo
        self.timeout = timeout

    async def answer(self, query: bytes, *, udp: bool = False) -> tuple[bytes | None, DnsInfo | None]:
        """The response to send back (``None``: send nothing), and what to report
        (``None`` when there is no readable question). ``udp=True`` when the query came
        in a datagram: the response then fits the sender's UDP size."""
        try:
            response, info, limit = await self._answer(bytes(query))
        except Exception:    # a bug here must not take the proxy down: SERVFAIL
            response, info, limit = dns.build_error(query, dns.SERVFAIL), None, dns.MAX_UDP_PLAIN
        if response is not None and udp:
            response = dns.truncate(response, limit)
        return response, info

    async def _answer(self, data: bytes) -> tuple[bytes | None, DnsInfo | None, int]:
        try:
            query = dns.parse_query(data)
        except dns.DnsError:
            return dns.build_error(data, dns.FORMERR), None, dns.MAX_UDP_PLAIN
        limit = query.udp_size
        if not query.questions:
            return dns.build_error(query, dns.FORMERR), None, limit
        first = query.questions[0]
        if query.opcode != dns.OPCODE_QUERY:
            return (dns.build_error(query, dns.NOTIMP),
                    DnsInfo(first.name, dns.qtype_name(first.qtype), [], "NOTIMP"), limit)
        if all(_answered_here(q) for q in query.questions):
            records: list[dns.Record] = []
            rcode = dns.NOERROR
            for q in query.questions:
                qrcode, qrecords = await self._lookup(q)
                records += qrecords
                if _RCODE_RANK[qrcode] > _RCODE_RANK[rcode]:
                    rcode = qrcode
            response = dns.build_response(query, records, rcode, ra=True)
            texts = [_record_text(r) for r in records
                     if r.name.lower() == first.name.lower() and r.rtype == first.qtype]
            return response, DnsInfo(first.name, dns.qtype_name(first.qtype), texts,
                                      dns.rcode_name(rcode)), limit
        forwarded = await self._forward(query)
        if forwarded is None:
            return (dns.build_error(query, dns.SERVFAIL),
                    DnsInfo(first.name, dns.qtype_name(first.qtype), [], "SERVFAIL"), limit)
        return forwarded, _forwarded_info(first, forwarded), limit

    # --- answered here --------------------------------------------------------------

    async def _lookup(self, q: dns.Question) -> tuple[int, list[dns.Record]]:
        if q.name.lower() == HOST_NAME:
            return dns.NOERROR, ([dns.a_record(q.name, HOST_ADDR, LOCAL_TTL)]
                                 if q.qtype == dns.TYPE_A else [])
        family = socket.AF_INET if q.qtype == dns.TYPE_A else socket.AF_INET6
        host = q.name[:-1]
        try:
            infos = await self._call_getaddrinfo(host, family)
        except socket.gaierror as e:
            if e.errno in _EAI_NODATA:
                return dns.NOERROR, []
            if e.errno == socket.EAI_NONAME:
                return (dns.NOERROR if await self._exists(host) else dns.NXDOMAIN), []
            return dns.SERVFAIL, []
        except (OSError, UnicodeError, ValueError):
            return dns.SERVFAIL, []
        addresses: list[str] = []
        for fam, _type, _proto, _canon, sockaddr in infos:
            addr = str(sockaddr[0]).split("%", 1)[0]
            if fam == family and addr not in addresses:
                addresses.append(addr)
        make = dns.a_record if family == socket.AF_INET else dns.aaaa_record
        try:
            return dns.NOERROR, [make(q.name, a, LOCAL_TTL) for a in addresses]
        except dns.DnsError:
            return dns.SERVFAIL, []

    async def _exists(self, host: str) -> bool:
        """The name has addresses of some family."""
        try:
            return bool(await self._call_getaddrinfo(host, socket.AF_UNSPEC))
        except (OSError, UnicodeError, ValueError):
            return False

    def _call_getaddrinfo(self, host: str, family: int) -> Awaitable[list[tuple[Any, ...]]]:
        gai = self._getaddrinfo or asyncio.get_running_loop().getaddrinfo
        return gai(host, None, family=family, type=socket.SOCK_STREAM)

    # --- forwarded ------------------------------------------------------------------

    async def _forward(self, query: dns.Query) -> bytes | None:
        for server in self.nameservers:
            response = await self._udp_exchange(server, query)
            if response is None:
                continue
            if response[2] & (dns.TC >> 8):
                full = await self._tcp_exchange(server, query)
                return full if full is not None else response
            return response
        return None

    async def _udp_exchange(self, server: tuple[str, int], query: dns.Query) -> bytes | None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes | None] = loop.create_future()
        transport = None
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpExchange(query.id, done), remote_addr=server)
            transport.sendto(query.raw)
            return await asyncio.wait_for(done, self.timeout)
        except (OSError, asyncio.TimeoutError):
            return None
        finally:
            if transport is not None:
                transport.close()

    async def _tcp_exchange(self, server: tuple[str, int], query: dns.Query) -> bytes | None:
        writer = None

        async def exchange() -> bytes | None:
            nonlocal writer
            reader, writer = await asyncio.open_connection(server[0], server[1])
            writer.write(dns.frame_tcp(query.raw))
            await writer.drain()
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                message = await reader.readexactly(length)
                if _matches(message, query.id):
                    return message

        try:
            return await asyncio.wait_for(exchange(), self.timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, dns.DnsError):
            return None
        finally:
            if writer is not None:
                writer.close()


def _answered_here(q: dns.Question) -> bool:
    if q.qclass != dns.CLASS_IN or q.qtype not in (dns.TYPE_A, dns.TYPE_AAAA):
        return False
    if not _HOSTNAME.match(q.name):
        return False
    try:
        ipaddress.ip_address(q.name[:-1])
    except ValueError:
        return True
    return False       # an IP literal: getaddrinfo would echo it; DNS says NXDOMAIN


def _record_text(record: dns.Record) -> str:
    return str(ipaddress.ip_address(record.rdata))


def _forwarded_info(first: dns.Question, response: bytes) -> DnsInfo:
    qtype = dns.qtype_name(first.qtype)
    try:
        parsed = dns.parse_response(response)
    except dns.DnsError:
        return DnsInfo(first.name, qtype, [], dns.rcode_name(response[3] & 0xF))
    return DnsInfo(first.name, qtype, [a.text for a in parsed.answers],
                   dns.rcode_name(parsed.rcode))
