"""The command's TLS session (``tlsterm.ServerTls``) over memory BIOs, against a real
``ssl`` client that trusts the run's CA: the session tickets it sends, and when."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from httptap.tls.ca import CertificateAuthority
from httptap.tls.tlsterm import ServerTls, TlsError

NAME = "tickets.test"
REQUEST = b"GET / HTTP/1.1\r\nHost: tickets.test\r\n\r\n"


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.ephemeral()


class Command:
    """A TLS client over memory BIOs (the command's side)."""

    def __init__(self, authority: CertificateAuthority, session: Any = None,
                 maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
                 context: ssl.SSLContext | None = None) -> None:
        if context is None:
            context = ssl.create_default_context(cadata=authority.cert_pem.decode())
            context.maximum_version = maximum
        self.context = context
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=NAME,
                                    session=session)

    def step(self, wire: bytes = b"") -> bytes:
        """Take ``wire`` from the server, move the handshake on: what the client sends."""
        self.incoming.write(wire)
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def read(self, wire: bytes) -> bytes:
        self.incoming.write(wire)
        got = b""
        try:
            while chunk := self.obj.read(1 << 16):
                got += chunk
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        return got


def records(wire: bytes) -> list[int]:
    """The content type of each TLS record in ``wire``."""
    types, at = [], 0
    while at < len(wire):
        types.append(wire[at])
        at += 5 + int.from_bytes(wire[at + 3:at + 5], "big")
    assert at == len(wire)
    return types


def shake(authority: CertificateAuthority, command: Command) -> tuple[ServerTls, bytes]:
    """Both handshakes, the command's Finished sent with its request: (the server end, what
    it sent back with the request read)."""
    server = ServerTls(authority.server_context(NAME))
    _, flight = server.receive(command.step())
    finished = command.step(flight)
    command.obj.write(REQUEST)
    plain, back = server.receive(finished + command.outgoing.read())
    assert plain == REQUEST and server.handshake_done
    return server, back


def test_tls13_tickets_wait_for_the_answer_and_go_in_front_of_it(authority):
    command = Command(authority)
    server, back = shake(authority, command)
    assert command.obj.version() == "TLSv1.3"
    assert back == b""  # not alone, between the request and the answer
    wire = server.send(b"HTTP/1.1 200 OK\r\n\r\n")
    assert records(wire) == [0x17, 0x17]  # one ticket, then the answer: one write
    assert command.read(wire) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert command.obj.session is not None and command.obj.session.has_ticket
    assert records(server.send(b"more")) == [0x17]  # sent once


def test_a_finished_that_came_alone_gets_the_ticket_at_once(authority):
    """It carries the ACK of the Finished, which a client with Nagle on waits for before it
    sends its request."""
    command = Command(authority)
    server = ServerTls(authority.server_context(NAME))
    _, flight = server.receive(command.step())
    plain, back = server.receive(command.step(flight))
    assert server.handshake_done and plain == b""
    assert records(back) == [0x17]  # the ticket
    command.obj.write(REQUEST)
    assert server.receive(command.outgoing.read()) == (REQUEST, b"")
    assert records(server.send(b"ok")) == [0x17]  # the answer alone
    assert command.read(back) == b""
    assert command.obj.session is not None and command.obj.session.has_ticket


def test_a_failure_after_held_tickets_sends_them_before_the_alert(authority):
    command = Command(authority)
    server, _ = shake(authority, command)
    with pytest.raises(TlsError) as failed:
        server.receive(b"\x17\x03\x03\x00\x20" + bytes(32))  # a record that cannot decrypt
    assert records(failed.value.pending) == [0x17, 0x17]  # the ticket, then the alert


def test_held_tickets_go_with_our_close_notify(authority):
    command = Command(authority)
    server, _ = shake(authority, command)
    wire = server.close()
    assert len(records(wire)) == 2  # the ticket, then close_notify
    command.read(wire)
    assert command.obj.session is not None and command.obj.session.has_ticket


def test_a_client_that_resumes_resumes_and_gets_a_fresh_ticket(authority):
    first = Command(authority)
    server, _ = shake(authority, first)
    first.read(server.send(b"hi"))
    again = Command(authority, session=first.obj.session, context=first.context)
    server, back = shake(authority, again)
    assert again.obj.session_reused
    assert back == b""
    wire = server.send(b"hi")
    assert records(wire) == [0x17, 0x17]
    again.read(wire)
    assert again.obj.session.has_ticket


def test_in_tls12_the_last_handshake_step_is_sent_at_once(authority):
    """There it carries our Finished, which the command waits for before its request."""
    command = Command(authority, maximum=ssl.TLSVersion.TLSv1_2)
    server = ServerTls(authority.server_context(NAME))
    _, flight = server.receive(command.step())
    _, last = server.receive(command.step(flight))
    assert server.handshake_done and last
    command.step(last)
    assert command.obj.version() == "TLSv1.2"
    command.obj.write(REQUEST)
    assert server.receive(command.outgoing.read())[0] == REQUEST
