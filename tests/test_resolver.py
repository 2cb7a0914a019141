"""The DNS server the command talks to (httptap.dns.resolver), on uvloop as in the proxy.

No test sends anything past loopback: getaddrinfo is replaced by a table (except for
``localhost``, which the host's /etc/hosts answers), and the "host's nameservers" are a
small fake DNS server each test starts on 127.0.0.1, on UDP and TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from httptap.dns import message as dns
from httptap.dns.resolver import HOST_ADDR, LOCAL_TTL, DnsInfo, Resolver, read_resolv_conf

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(coro)


def query(name: str, qtype: int = dns.TYPE_A, ident: int = 0x1234, flags: int = dns.RD,
          qclass: int = dns.CLASS_IN, extra_questions: int = 0) -> bytes:
    q = dns.encode_name(name) + struct.pack("!HH", qtype, qclass)
    return struct.pack("!HHHHHH", ident, flags, 1 + extra_questions, 0, 0, 0) + q


# --- a getaddrinfo double -------------------------------------------------------------

ADDRS: dict[str, list[str]] = {
    "known.test": ["10.1.2.3", "10.1.2.3", "10.1.2.4", "2001:db8::7"],
    "v4only.test": ["10.9.9.9"],
}


def fake_getaddrinfo(calls: list[tuple[str, int]] | None = None) -> Callable[..., Awaitable[Any]]:
    async def gai(host: str, port: Any, *, family: int = 0, type: int = 0) -> list[Any]:
        if calls is not None:
            calls.append((host, family))
        if host == "again.test":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == "nodata.test":
            raise socket.gaierror(socket.EAI_NODATA, "No address associated with hostname")
        if host == "bug.test":
            raise RuntimeError("a bug in the resolver library")
        out = []
        for a in ADDRS.get(host.lower(), []):
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            if family in (socket.AF_UNSPEC, fam):
                sockaddr = (a, 0, 0, 0) if fam == socket.AF_INET6 else (a, 0)
                out.append((fam, socket.SOCK_STREAM, 6, "", sockaddr))
        if not out:   # what glibc says for a name /etc/hosts has with the other family only
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return out
    return gai


# --- a fake upstream nameserver on 127.0.0.1 -----------------------------------------

TXT_TTL = 4321


def txt_rdata(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


class FakeUpstream:
    """Answers TXT for ``hello.test.`` (TTL 4321); for ``big.test.`` a truncated UDP
    reply and 40 TXT records over TCP; ``silent.test.`` never; anything else NXDOMAIN."""

    def __init__(self) -> None:
        self.udp_queries: list[bytes] = []
        self.tcp_queries: list[bytes] = []
        self.port = 0

    def reply(self, data: bytes, tcp: bool) -> bytes | None:
        q = dns.parse_query(data)
        name = q.questions[0].name
        if name == "silent.test.":
            return None
        if name == "hello.test.":
            return dns.build_response(q, [dns.Record(name, dns.TYPE_TXT, TXT_TTL,
                                                     txt_rdata(b"hello", b"world"))], aa=True)
        if name == "big.test.":
            if not tcp:
                return dns.truncate(dns.build_response(q, []), 0)
            records = [dns.Record(name, dns.TYPE_TXT, 77, txt_rdata(b"%02d" % i + b"x" * 30))
                       for i in range(40)]
            return dns.build_response(q, records)
        return dns.build_response(q, [], dns.NXDOMAIN)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.udp_queries.append(data)
        out = self.reply(data, tcp=False)
        if out is not None:
            self.transport.sendto(b"junk-from-elsewhere", addr)    # ignored: not a response
            self.transport.sendto(out, addr)

    async def tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(n)
                self.tcp_queries.append(data)
                out = self.reply(data, tcp=True)
                if out is not None:
                    writer.write(dns.frame_tcp(out))
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeUpstream]:
        loop = asyncio.get_running_loop()
        outer = self

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                outer.datagram_received(data, addr)

        for _ in range(20):   # UDP and TCP on the same (free) port
            transport, _ = await loop.create_datagram_endpoint(Proto,
                                                                local_addr=("127.0.0.1", 0))
            port = transport.get_extra_info("sockname")[1]
            try:
                tcp = await asyncio.start_server(self.tcp_client, "127.0.0.1", port)
            except OSError:
                transport.close()
                continue
            break
        else:  # pragma: no cover
            pytest.fail("no free port for the fake nameserver")
        self.transport, self.port = transport, port
        try:
            yield self
        finally:
            transport.close()
            tcp.close()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- answered here ----------------------------------------------------------------------

def test_localhost_from_the_hosts_file() -> None:
    hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
    if not any(line.split()[:1] == ["127.0.0.1"] and "localhost" in line.split()[1:]
               for line in hosts.splitlines()):
        pytest.skip("/etc/hosts has no '127.0.0.1 localhost' line (we never ask real DNS)")
    # "files" comes before "dns" in nsswitch.conf everywhere we run, and it has the
    # answer, so this A query never leaves the machine.
    out, info = run(Resolver([]).answer(query("localhost.", ident=77)))
    r = dns.parse_response(out or b"")
    assert (r.id, r.rcode) == (77, dns.NOERROR)
    assert r.flags & dns.RA and r.flags & dns.RD
    assert [(a.name, a.rtype, a.ttl, a.text) for a in r.answers] == [
        ("localhost.", dns.TYPE_A, LOCAL_TTL, "127.0.0.1")]
    assert info == DnsInfo("localhost.", "A", ["127.0.0.1"], "NOERROR")


def test_a_and_aaaa_from_getaddrinfo() -> None:
    calls: list[tuple[str, int]] = []
    res = Resolver([], getaddrinfo=fake_getaddrinfo(calls))
    out, info = run(res.answer(query("Known.Test.")))
    assert [a.text for a in dns.parse_response(out or b"").answers] == ["10.1.2.3", "10.1.2.4"]
    assert info == DnsInfo("Known.Test.", "A", ["10.1.2.3", "10.1.2.4"], "NOERROR")
    assert calls == [("Known.Test", socket.AF_INET)]      # no trailing dot for glibc
    out, info = run(res.answer(query("known.test.", dns.TYPE_AAAA)))
    r = dns.parse_response(out or b"")
    assert [(a.rtype, a.text, a.ttl) for a in r.answers] == [(dns.TYPE_AAAA, "2001:db8::7", 60)]
    assert info is not None and info.qtype == "AAAA"


def test_unknown_name_is_nxdomain() -> None:
    out, info = run(Resolver([], getaddrinfo=fake_getaddrinfo()).answer(query("nope.test.")))
    r = dns.parse_response(out or b"")
    assert (r.rcode, r.answers, len(r.questions)) == (dns.NXDOMAIN, [], 1)
    assert r.flags & dns.RA
    assert info == DnsInfo("nope.test.", "A", [], "NXDOMAIN")


def test_name_with_only_the_other_family_is_nodata() -> None:
    calls: list[tuple[str, int]] = []
    res = Resolver([], getaddrinfo=fake_getaddrinfo(calls))
    out, info = run(res.answer(query("v4only.test.", dns.TYPE_AAAA)))
    r = dns.parse_response(out or b"")
    assert (r.rcode, r.answers) == (dns.NOERROR, [])
    assert calls == [("v4only.test", socket.AF_INET6), ("v4only.test", socket.AF_UNSPEC)]


@pytest.mark.parametrize("name, rcode", [("nodata.test.", dns.NOERROR),
                                         ("again.test.", dns.SERVFAIL),
                                         ("bug.test.", dns.SERVFAIL)])
def test_getaddrinfo_errors(name: str, rcode: int) -> None:
    out, info = run(Resolver([], getaddrinfo=fake_getaddrinfo()).answer(query(name)))
    r = dns.parse_response(out or b"")
    assert (r.id, r.rcode, r.answers) == (0x1234, rcode, [])


def test_host_httptap_local() -> None:
    res = Resolver([], getaddrinfo=fake_getaddrinfo())
    out, info = run(res.answer(query("HOST.httptap.local.")))
    r = dns.parse_response(out or b"")
    assert [(a.name, a.text) for a in r.answers] == [("HOST.httptap.local.", HOST_ADDR)]
    assert info == DnsInfo("HOST.httptap.local.", "A", [HOST_ADDR], "NOERROR")
    out, info = run(res.answer(query("host.httptap.local.", dns.TYPE_AAAA)))
    r = dns.parse_response(out or b"")
    assert (r.rcode, r.answers) == (dns.NOERROR, [])


def test_every_question_is_answered() -> None:
    data = (struct.pack("!HHHHHH", 5, dns.RD, 2, 0, 0, 0)
            + dns.encode_name("known.test.") + b"\0\1\0\1"
            + dns.encode_name("host.httptap.local.") + b"\0\1\0\1")
    out, info = run(Resolver([], getaddrinfo=fake_getaddrinfo()).answer(data))
    r = dns.parse_response(out or b"")
    assert [q.name for q in r.questions] == ["known.test.", "host.httptap.local."]
    assert [(a.name, a.text) for a in r.answers] == [
        ("known.test.", "10.1.2.3"), ("known.test.", "10.1.2.4"),
        ("host.httptap.local.", HOST_ADDR)]
    assert info is not None and info.answers == ["10.1.2.3", "10.1.2.4"]


def test_large_local_answer_over_udp_is_truncated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ADDRS, "many.test", [f"10.0.{i // 256}.{i % 256}" for i in range(60)])
    res = Resolver([], getaddrinfo=fake_getaddrinfo())
    tcp_out, _ = run(res.answer(query("many.test.")))
    udp_out, _ = run(res.answer(query("many.test."), udp=True))
    assert len(dns.parse_response(tcp_out or b"").answers) == 60
    r = dns.parse_response(udp_out or b"")
    assert r.truncated and r.answers == [] and len(udp_out or b"") <= 512


# --- malformed ------------------------------------------------------------------------

def test_malformed_query_gets_formerr() -> None:
    data = struct.pack("!HHHHHH", 0xCAFE, dns.RD, 1, 0, 0, 0) + b"\x07exam"
    out, info = run(Resolver([]).answer(data))
    r = dns.parse_response(out or b"")
    assert (r.id, r.rcode, r.questions) == (0xCAFE, dns.FORMERR, [])
    assert info is None


def test_no_question_gets_formerr_and_other_opcodes_notimp() -> None:
    out, _ = run(Resolver([]).answer(struct.pack("!HHHHHH", 1, 0, 0, 0, 0, 0)))
    assert dns.parse_response(out or b"").rcode == dns.FORMERR
    out, info = run(Resolver([]).answer(query("a.test.", flags=2 << dns.OPCODE_SHIFT)))
    assert dns.parse_response(out or b"").rcode == dns.NOTIMP
    assert info == DnsInfo("a.test.", "A", [], "NOTIMP")


@pytest.mark.parametrize("data", [b"", b"\x12", b"x" * 11,
                                  query("a.test.", flags=dns.QR)])   # a response: no reply
def test_short_messages_and_responses_are_dropped(data: bytes) -> None:
    assert run(Resolver([]).answer(data)) == (None, None)


@given(st.binary(max_size=120))
def test_fuzz_answer_never_raises(data: bytes) -> None:
    out, info = run(Resolver([], getaddrinfo=fake_getaddrinfo()).answer(data, udp=True))
    if out is not None:
        r = dns.parse_response(out)
        assert r.id == struct.unpack_from("!H", data)[0]
        assert len(out) <= 512


# --- forwarded ------------------------------------------------------------------------

def test_txt_is_forwarded_with_the_upstream_ttl() -> None:
    async def main() -> None:
        async with FakeUpstream().running() as up:
            q = query("hello.test.", dns.TYPE_TXT, ident=0x5151)
            out, info = await Resolver([up.address]).answer(q)
            assert up.udp_queries == [q]          # forwarded byte for byte
            assert out == up.reply(q, tcp=False)  # and answered byte for byte
            r = dns.parse_response(out or b"")
            assert [(a.ttl, a.text) for a in r.answers] == [(TXT_TTL, '"hello" "world"')]
            assert r.flags & dns.AA
            assert info == DnsInfo("hello.test.", "TXT", ['"hello" "world"'], "NOERROR")
    run(main())


def test_truncated_answer_is_asked_again_over_tcp() -> None:
    async def main() -> None:
        async with FakeUpstream().running() as up:
            q = query("big.test.", dns.TYPE_TXT)
            res = Resolver([up.address])
            out, info = await res.answer(q)
            assert (up.udp_queries, up.tcp_queries) == ([q], [q])
            r = dns.parse_response(out or b"")
            assert not r.truncated and len(r.answers) == 40 and r.answers[0].ttl == 77
            assert info is not None and info.answers[0] == '"00' + "x" * 30 + '"'
            # over UDP the full answer does not fit: the client is told to use TCP
            out, _ = await res.answer(q, udp=True)
            r = dns.parse_response(out or b"")
            assert r.truncated and r.answers == []
    run(main())


def test_upstream_nxdomain_and_literal_addresses_are_forwarded() -> None:
    calls: list[tuple[str, int]] = []

    async def main() -> None:
        async with FakeUpstream().running() as up:
            res = Resolver([up.address], getaddrinfo=fake_getaddrinfo(calls))
            for name, qtype, qclass in [("1.2.3.4.", dns.TYPE_A, dns.CLASS_IN),
                                        ("odd\\.name.test.", dns.TYPE_A, dns.CLASS_IN),
                                        ("known.test.", dns.TYPE_A, 3),        # CHAOS
                                        ("x.test.", dns.TYPE_MX, dns.CLASS_IN)]:
                out, info = await res.answer(query(name, qtype, qclass=qclass))
                assert dns.parse_response(out or b"").rcode == dns.NXDOMAIN
                assert info is not None and info.rcode == "NXDOMAIN"
            assert len(up.udp_queries) == 4
    run(main())
    assert calls == []


def test_dead_nameservers_give_servfail_and_the_next_is_tried() -> None:
    async def main() -> None:
        async with FakeUpstream().running() as up:
            refused = ("127.0.0.1", free_udp_port())     # nothing listens: ICMP refused
            q = query("hello.test.", dns.TYPE_TXT)
            out, _ = await Resolver([refused, up.address], timeout=5).answer(q)
            assert dns.parse_response(out or b"").answers[0].ttl == TXT_TTL
            silent = query("silent.test.", dns.TYPE_TXT, ident=99)
            out, info = await Resolver([up.address, up.address], timeout=0.2).answer(silent)
            r = dns.parse_response(out or b"")
            assert (r.id, r.rcode, r.flags & dns.RA) == (99, dns.SERVFAIL, dns.RA)
            assert info == DnsInfo("silent.test.", "TXT", [], "SERVFAIL")
            assert len(up.udp_queries) == 3
    run(main())


def test_no_nameserver_gives_servfail() -> None:
    out, info = run(Resolver([]).answer(query("x.test.", dns.TYPE_TXT)))
    assert dns.parse_response(out or b"").rcode == dns.SERVFAIL


def test_read_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.com\nnameserver 10.0.0.2\n"
                    "nameserver   fe80::1%eth0 \nnameserver not-an-address\n"
                    "nameserver\noptions ndots:2\nnameserver 2001:db8::53\n")
    assert read_resolv_conf(str(conf)) == [("10.0.0.2", 53), ("fe80::1%eth0", 53),
                                           ("2001:db8::53", 53)]
    assert read_resolv_conf(str(tmp_path / "missing")) == []
    assert Resolver(resolv_conf=str(conf)).nameservers[0] == ("10.0.0.2", 53)
    assert Resolver([("127.0.0.1", 5353)], resolv_conf=str(conf)).nameservers == [
        ("127.0.0.1", 5353)]
