"""Upstream TLS sessions kept for resumption, without CPython's leak on reading them.

On CPython 3.10 to 3.12.7 and 3.13.0, every read of ``SSLObject.session`` leaks a copy
of the session (CPython gh-116810): ~6-18 KB at each upstream HTTPS connection, linear
growth in ``perf/bench_memory.py --https``. ``ClientTls.session`` therefore reads it only
when the connection did not resume the session it was offered. These tests run a
``ClientTls`` against an in-memory TLS server many times, count the reads of
``SSLObject.session``, and check that resumption still happens (and that a server
that will not resume gets its new session read).
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from httptap.tls import tlsterm
from httptap.tls.ca import CertificateAuthority
from httptap.tls.tlsterm import ClientTls

CONNECTIONS = 20


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.ephemeral()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the reads of ``ssl.SSLObject.session`` (the leaking getter)."""
    count = [0]
    original = ssl.SSLObject.session

    def getter(self: ssl.SSLObject) -> Any:
        count[0] += 1
        return original.fget(self)  # type: ignore[attr-defined]

    monkeypatch.setattr(ssl.SSLObject, "session",
                        property(getter, original.fset))  # type: ignore[attr-defined]
    return count


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's certificate is not what is tested here
    return ctx


def _connect(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext,
             session: ssl.SSLSession | None) -> ClientTls:
    """One connection: handshake, a request and a response (the TLS 1.3 ticket comes with
    the server's first records), as the flow core drives an upstream session."""
    tls = ClientTls(client_ctx, "up.test", session)
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    s_in.write(tls.start())
    for _ in range(10):
        try:
            server.do_handshake()
            break
        except ssl.SSLWantReadError:
            _plain, out = tls.receive(s_out.read())
            s_in.write(out)
    _plain, out = tls.receive(s_out.read())
    s_in.write(out)
    s_in.write(tls.send(b"GET / HTTP/1.1\r\n\r\n"))
    assert server.read(100) == b"GET / HTTP/1.1\r\n\r\n"
    server.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    plain, _out = tls.receive(s_out.read())
    assert bytes(plain) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert tls.handshake_done
    return tls


def _run(ca: CertificateAuthority, same_server: bool) -> tuple[list[ClientTls], list[Any]]:
    """CONNECTIONS connections, each offered the session the previous one kept; with
    ``same_server`` false every connection meets a new server context (new ticket keys:
    no ticket is ever taken; contexts are cached per ALPN list, hence one each)."""
    client_ctx = _client_context()
    conns, kept = [], []
    session = None
    for i in range(CONNECTIONS):
        server_ctx = ca.server_context("up.test", None if same_server else [f"x-{i}"])
        tls = _connect(client_ctx, server_ctx, session)
        session = tls.session
        assert session is not None and session.has_ticket
        conns.append(tls)
        kept.append(session)
    return conns, kept


def test_resumed_connections_hand_back_their_session_without_reading_it(
        ca: CertificateAuthority, reads: list[int], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tlsterm, "SESSION_READ_LEAKS", True, raising=False)
    conns, kept = _run(ca, same_server=True)
    assert not conns[0].resumed and all(c.resumed for c in conns[1:])
    assert reads[0] == 1  # only the full handshake's session was read
    assert all(s is kept[0] for s in kept)


def test_where_reading_does_not_leak_each_connection_keeps_its_new_session(
        ca: CertificateAuthority, reads: list[int], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tlsterm, "SESSION_READ_LEAKS", False)
    conns, kept = _run(ca, same_server=True)
    assert all(c.resumed for c in conns[1:])
    assert reads[0] == CONNECTIONS


def test_a_server_that_does_not_resume_gets_its_new_session_read(
        ca: CertificateAuthority, reads: list[int], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tlsterm, "SESSION_READ_LEAKS", True)
    conns, kept = _run(ca, same_server=False)
    assert not any(c.resumed for c in conns)
    assert reads[0] == CONNECTIONS
    assert len({id(s) for s in kept}) == CONNECTIONS
