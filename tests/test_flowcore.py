"""The per-flow core, playbook-style: a script of events and the exact commands they give.

No sockets and no clock: the tests call the core's event methods with a ``now`` of their
choosing and compare ``take()`` with the commands expected. The TLS tests put real
``ssl`` objects on both sides over memory BIOs (a command that trusts the run's CA, a
server with a certificate from the test CA) and shuttle the bytes the core emits."""

from __future__ import annotations

import itertools
import ssl
from typing import Any

import pytest

from httptap.plumbing import messages
from httptap.tls.ca import CertificateAuthority
from httptap.flow.commands import (
    ABORT_UPSTREAM, AWAIT_UPSTREAM_EOF, CLOSE_UPSTREAM, FIN_TO_COMMAND, FIN_UPSTREAM, FLOW_OVER, PAUSE_UPSTREAM,
    RESUME_UPSTREAM, Credit, FlowSettings, Report, ResetCommand, SendToCommand, SendUpstream,
    SetTimer)
from httptap.flow.core import MAX_IN_FLIGHT, TLS_HANDSHAKE_TIMEOUT, FlowCore, Mode
from httptap.plumbing.messages import CREDIT_STEP
from httptap.http.http2 import Http2Observer
import wsframes
from testca import session_ca

T0 = 1000.0


class Like:
    """Equal to any object of ``kind`` whose attributes match ``fields`` (nested Likes too)."""

    def __init__(self, kind: type, **fields: Any) -> None:
        self.kind, self.fields = kind, fields

    def __eq__(self, other: object) -> bool:
        return isinstance(other, self.kind) and all(
            getattr(other, k) == v for k, v in self.fields.items())

    def __repr__(self) -> str:
        return f"Like({self.kind.__name__}, {self.fields})"


def report(kind: type, **fields: Any) -> Like:
    return Like(Report, message=Like(kind, **fields))


def settings(upstream_context: Any = None, server_context: Any = None,
             verbose: bool = False, capture_bodies: bool = False) -> FlowSettings:
    ids = itertools.count(1)
    return FlowSettings(http_ports=frozenset({80}), https_ports=frozenset({443}),
                        capture_bodies=capture_bodies, stream_bodies=False,
                        max_body_size=16 << 20, verbose=verbose,
                        new_exchange_id=lambda: next(ids),
                        upstream_context=upstream_context or (lambda alpn: None),
                        server_context=server_context or (lambda name, alpn: None))


def core_for(port: int, **kw: Any) -> FlowCore:
    opened = messages.FlowOpened(flow=7, src="10.1.1.100", sport=40000, dst="192.0.2.9", dport=port)
    return FlowCore(settings(**kw), opened, T0)


REQUEST = b"GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


# --- plain HTTP ------------------------------------------------------------------------------

def test_http_request_and_response_are_relayed_and_reported():
    core = core_for(80)
    core.command_data(REQUEST, T0 + 1)
    assert core.take() == [
        SendUpstream(REQUEST),
        report(messages.HttpRequest, method="GET", url="http://example.test/a", exchange=1)]
    assert core.mode is Mode.HTTP
    core.upstream_data(memoryview(RESPONSE), T0 + 2)
    assert core.take() == [
        SendToCommand(RESPONSE),
        report(messages.HttpResponse, exchange=1, status=200, body_size=2, error="")]
    core.close()
    core.final_report(T0 + 3)
    assert core.take() == [CLOSE_UPSTREAM]  # nothing pending: no summary


def test_unanswered_request_is_reported_at_the_end():
    core = core_for(80)
    core.command_data(REQUEST, T0)
    core.take()
    core.command_reset()
    core.final_report(T0 + 1)
    assert core.take() == [
        ABORT_UPSTREAM,
        report(messages.HttpResponse, exchange=1, error="the connection closed before a response")]


def test_h2_preface_on_an_http_port_is_decoded_as_http2():
    core = core_for(80)
    core.command_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", T0)
    assert isinstance(core.observer, Http2Observer)


def test_other_ports_are_raw_and_summarised():
    core = core_for(5432)
    core.command_data(b"hello", T0)
    assert core.take() == [SendUpstream(b"hello")]
    core.upstream_data(b"world!", T0 + 1)
    assert core.take() == [SendToCommand(b"world!")]
    core.close()
    core.final_report(T0 + 2)
    assert core.take() == [CLOSE_UPSTREAM, report(
        messages.TcpSummary, client="10.1.1.100:40000", server="192.0.2.9:5432",
        bytes_sent=5, bytes_received=6, duration=2.0)]


def test_a_server_that_speaks_first_makes_the_flow_raw():
    core = core_for(80)
    core.upstream_data(b"220 smtp ready\r\n", T0)
    assert core.take() == [SendToCommand(b"220 smtp ready\r\n")]
    core.command_data(REQUEST, T0)
    assert core.take() == [SendUpstream(REQUEST)]  # not decoded
    assert core.mode is Mode.RAW


# --- half-close, reset, loss ------------------------------------------------------------------

def test_half_closes_pass_each_way():
    core = core_for(5432)
    core.command_data(b"x", T0)
    core.take()
    core.command_eof(T0)
    assert core.take() == [FIN_UPSTREAM]
    core.upstream_data(b"late answer", T0)
    assert core.take() == [SendToCommand(b"late answer")]
    core.upstream_eof(T0)
    # Both done: the socket closes now, the summary goes out, the flow is over.
    assert core.take() == [FIN_TO_COMMAND, CLOSE_UPSTREAM,
                           report(messages.TcpSummary, bytes_sent=1, bytes_received=11),
                           FLOW_OVER]
    core.upstream_lost(None, T0)
    assert core.take() == []  # the FIN went already


def test_a_connection_closed_both_ways_is_over_at_once():
    """The server closes first (an HTTP/1.0-style response), then the command: at the
    command's FIN the upstream socket is closed and the flow is over (FlowOver), not
    half-closed and kept until the tcp stage forgets the flow."""
    core = core_for(80)
    core.command_data(REQUEST, T0)
    core.upstream_data(RESPONSE, T0)
    core.upstream_eof(T0)
    assert core.take()[-1:] == [FIN_TO_COMMAND]
    core.command_eof(T0)
    assert core.take() == [CLOSE_UPSTREAM, FLOW_OVER]  # the exchange was reported already
    core.upstream_lost(None, T0)  # (what closing it makes the socket say)
    core.close()
    core.final_report(T0)
    assert core.take() == []  # over: nothing more, the final report not twice


def test_the_commands_fin_said_by_the_end_alone_closes_upstream_and_reports_once():
    """The server closed first and the command's FIN came with the end of the connection:
    the tcp stage says only FlowClosed (no FlowEof), and the proxy calls close() then
    final_report(): upstream is closed, and an unanswered request still reported."""
    core = core_for(80)
    core.command_data(REQUEST, T0)
    core.upstream_data(RESPONSE, T0)
    core.upstream_eof(T0)
    assert core.take()[-1:] == [FIN_TO_COMMAND]
    core.close()
    core.final_report(T0)
    assert core.take() == [CLOSE_UPSTREAM]  # the exchange was reported already
    unanswered = core_for(80)
    unanswered.command_data(REQUEST, T0)
    unanswered.upstream_eof(T0 + 2)
    unanswered.take()
    unanswered.close()
    unanswered.final_report(T0 + 2)
    assert unanswered.take() == [
        CLOSE_UPSTREAM,
        report(messages.HttpResponse, status=0, error="the connection closed before a response")]


def test_a_response_that_ends_the_connection_asks_to_await_the_servers_fin():
    """Connection: close (or HTTP/1.0): once the response is through, the stage is asked
    to hold what goes to the command for the server's FIN (AwaitUpstreamEof), once; a
    keep-alive response, or one not yet complete, does not ask."""
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    core = core_for(80)
    core.command_data(REQUEST, T0)
    core.take()
    core.upstream_data(closing[:-1], T0)
    assert AWAIT_UPSTREAM_EOF not in core.take()  # a byte of the body still to come
    core.upstream_data(closing[-1:], T0)
    cmds = core.take()
    assert cmds[0] == SendToCommand(b"k") and cmds[-1] == AWAIT_UPSTREAM_EOF
    core.upstream_data(b"junk after the end", T0)
    assert AWAIT_UPSTREAM_EOF not in core.take()  # said once
    core.upstream_eof(T0)
    assert core.take()[0] == FIN_TO_COMMAND
    keep = core_for(80)
    keep.command_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", T0)
    keep.upstream_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", T0)
    assert AWAIT_UPSTREAM_EOF not in keep.take()
    old = core_for(80)
    old.command_data(b"GET / HTTP/1.0\r\n\r\n", T0)
    old.upstream_data(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", T0)
    assert old.take()[-1] == AWAIT_UPSTREAM_EOF
    raw = core_for(5432)  # not HTTP: nothing to know the end by
    raw.command_data(b"x", T0)
    raw.upstream_data(b"y", T0)
    assert AWAIT_UPSTREAM_EOF not in raw.take()


def test_an_unanswered_request_is_reported_when_both_sides_have_closed():
    core = core_for(80)
    core.command_data(REQUEST, T0)
    core.take()
    core.command_eof(T0)
    assert core.take() == [FIN_UPSTREAM]
    core.upstream_eof(T0 + 2)
    assert core.take() == [
        FIN_TO_COMMAND, CLOSE_UPSTREAM,
        report(messages.HttpResponse, status=0, error="the connection closed before a response"),
        FLOW_OVER]


def test_upstream_reset_resets_the_command():
    core = core_for(5432)
    core.upstream_lost("Connection reset by peer", T0)
    assert core.take() == [ResetCommand("upstream: Connection reset by peer")]
    core.command_data(b"ignored", T0)
    assert core.take() == []


def test_upstream_close_without_eof_is_a_fin_to_the_command():
    core = core_for(5432)
    core.upstream_lost(None, T0)
    assert core.take() == [FIN_TO_COMMAND]


# --- credit ----------------------------------------------------------------------------------

def test_credit_goes_back_in_steps_and_waits_for_the_socket_to_drain():
    core = core_for(5432)
    core.command_data(b"a" * (CREDIT_STEP - 1), T0)
    assert core.take() == [SendUpstream(b"a" * (CREDIT_STEP - 1))]  # less than a step: owed
    core.upstream_write_paused(True)
    core.command_data(b"b", T0)
    assert core.take() == [SendUpstream(b"b")]  # a step now, but the socket is full
    core.upstream_write_paused(False)
    assert core.take() == [Credit(CREDIT_STEP)]


def test_reading_pauses_while_too_much_is_in_flight_to_the_command():
    core = core_for(5432)
    big = bytes(MAX_IN_FLIGHT)
    core.upstream_data(big, T0)
    assert core.take() == [SendToCommand(big)]
    core.upstream_data(b"z", T0)
    assert core.take() == [SendToCommand(b"z"), PAUSE_UPSTREAM]
    core.command_acked(MAX_IN_FLIGHT // 2)
    assert core.take() == []  # still above half
    core.command_acked(1)
    assert core.take() == [RESUME_UPSTREAM]


# --- TLS ---------------------------------------------------------------------------------------

NAME = "example.test"


class TlsWorld:
    """A command's TLS client and an upstream TLS server around one core, over memory BIOs."""

    def __init__(self, tmp_path: Any, server_alpn: list[str], trusted: bool = True,
                 client_alpn: tuple[str, ...] = ("h2", "http/1.1"),
                 command_trusts_us: bool = True, same_proxy_as: TlsWorld | None = None) -> None:
        """``same_proxy_as``: a second connection through the proxy of another world (its
        run CA, its flow settings) to the same server (its server context)."""
        self.run_ca = same_proxy_as.run_ca if same_proxy_as else CertificateAuthority.ephemeral()
        test_ca = session_ca()
        issuer = test_ca if trusted else type(test_ca)("some other CA")
        cert, key = issuer.issue([NAME])
        (tmp_path / "s.crt").write_bytes(cert)
        (tmp_path / "s.key").write_bytes(key)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
        server_ctx.set_alpn_protocols(server_alpn)
        if same_proxy_as is not None:
            server_ctx = same_proxy_as.server[0].context
        self.server = self._end(server_ctx, server_side=True)

        contexts: dict[tuple[str, ...], ssl.SSLContext] = {}

        def upstream_context(alpn: tuple[str, ...]) -> ssl.SSLContext:
            if alpn not in contexts:  # one per ALPN list, as the proxy keeps them
                ctx = contexts[alpn] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.load_verify_locations(cadata=test_ca.cert_pem.decode())
                if alpn:
                    ctx.set_alpn_protocols(list(alpn))
            return contexts[alpn]

        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if command_trusts_us:
            client_ctx.load_verify_locations(cadata=self.run_ca.cert_pem.decode())
        client_ctx.set_alpn_protocols(list(client_alpn))
        self.command = self._end(client_ctx, server_side=False, hostname=NAME)
        self.core = core_for(443, upstream_context=upstream_context,
                             server_context=self.run_ca.server_context)
        if same_proxy_as is not None:
            self.core.settings = same_proxy_as.core.settings
        self.log: list[Any] = []  # the commands other than the bytes shuttled
        self.command_error: ssl.SSLError | None = None
        self.server_error: ssl.SSLError | None = None

    @staticmethod
    def _end(ctx: ssl.SSLContext, server_side: bool, hostname: str | None = None) -> Any:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=hostname)
        return obj, incoming, outgoing

    @staticmethod
    def _step(end: Any) -> bytes:
        obj = end[0]
        try:
            obj.do_handshake()
            return obj.read(1 << 20)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            return b""

    def pump(self, rounds: int = 10) -> tuple[bytes, bytes]:
        """Shuttle bytes until quiet; returns (plaintext the command read, the server read)."""
        got_command, got_server = b"", b""
        for _ in range(rounds):
            try:
                got_command += self._step(self.command)
            except ssl.SSLError as exc:
                self.command_error = exc
            try:
                got_server += self._step(self.server)
            except ssl.SSLError as exc:
                self.server_error = exc
            to_core = self.command[2].read()
            from_server = self.server[2].read()
            if not (to_core or from_server):
                break
            if to_core:
                self.core.command_data(to_core, T0)
            if from_server:
                self.core.upstream_data(from_server, T0)
            self._carry_out()
        return got_command, got_server

    def _carry_out(self) -> None:
        for cmd in self.core.take():
            if isinstance(cmd, SendUpstream):
                self.server[1].write(cmd.data)
            elif isinstance(cmd, SendToCommand):
                self.command[1].write(cmd.data)
            else:
                self.log.append(cmd)


def test_tls_is_intercepted_with_a_minted_certificate_and_the_servers_alpn(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    world.pump()
    obj = world.command[0]
    assert world.command_error is None
    assert obj.selected_alpn_protocol() == "http/1.1"  # what the server chose
    assert obj.getpeercert()["subjectAltName"] == (("DNS", NAME),)
    assert world.core.mode is Mode.TLS
    assert SetTimer(T0 + TLS_HANDSHAKE_TIMEOUT) in world.log and world.log[-1] == SetTimer(None)
    world.log.clear()
    obj.write(REQUEST)
    _, server_got = world.pump()
    assert server_got == REQUEST
    assert world.log == [report(messages.HttpRequest, url=f"https://{NAME}/a", tls_sni=NAME,
                                tls_alpn="http/1.1")]
    world.log.clear()
    world.server[0].write(RESPONSE)
    command_got, _ = world.pump()
    assert command_got == RESPONSE
    assert world.log == [report(messages.HttpResponse, status=200, body_size=2)]


def test_h2_chosen_upstream_gives_the_command_h2_and_the_h2_decoder(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["h2"])
    world.pump()
    assert world.command[0].selected_alpn_protocol() == "h2"
    assert isinstance(world.core.observer, Http2Observer)


def test_an_upstream_certificate_that_does_not_verify_refuses_the_command(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"], trusted=False)
    world.pump()
    assert world.server_error is not None  # our client told the server: unknown CA
    assert world.command_error is not None
    assert "BAD_CERTIFICATE" in str(world.command_error).upper()
    assert world.core.mode is Mode.REFUSED
    assert world.log[-2:] == [FIN_TO_COMMAND, ABORT_UPSTREAM]
    assert report(messages.Notice, level="error") in world.log
    notice = next(c.message for c in world.log if isinstance(c, Report))
    assert notice.text.startswith(f"TLS to {NAME} (192.0.2.9:443) failed: ")
    assert "certificate" in notice.text


def test_a_silent_upstream_times_the_handshake_out(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    try:
        world.command[0].do_handshake()
    except ssl.SSLWantReadError:
        pass
    world.core.command_data(world.command[2].read(), T0)  # the ClientHello; the server never answers
    cmds = world.core.take()
    assert isinstance(cmds[0], SendUpstream) and cmds[1] == SetTimer(T0 + TLS_HANDSHAKE_TIMEOUT)
    world.core.timer(T0 + TLS_HANDSHAKE_TIMEOUT)
    cmds = world.core.take()
    assert cmds[0] == SetTimer(None)
    assert cmds[1] == report(messages.Notice, level="error",
                             text=f"TLS to {NAME} (192.0.2.9:443) failed: the handshake timed out")
    assert isinstance(cmds[2], SendToCommand)  # the alert
    assert cmds[-2:] == [FIN_TO_COMMAND, ABORT_UPSTREAM]


def test_tls_half_close_passes_close_notify_and_fin_each_way(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    world.pump()
    world.log.clear()
    # The command sends close_notify: ours goes to the server, then a FIN.
    try:
        world.command[0].unwrap()
    except ssl.SSLWantReadError:
        pass
    world.core.command_data(world.command[2].read(), T0)
    cmds = world.core.take()
    assert isinstance(cmds[0], SendUpstream) and cmds[-1] == FIN_UPSTREAM
    world.server[1].write(cmds[0].data)
    assert world.server[0].read(100) == b""  # the server saw a close_notify
    # The server can still answer (TLS half-close), then closes its side.
    world.server[0].write(b"bye")
    world.core.upstream_data(world.server[2].read(), T0)
    cmds = world.core.take()
    assert len(cmds) == 1 and isinstance(cmds[0], SendToCommand)
    world.command[1].write(cmds[0].data)
    assert world.command[0].read(100) == b"bye"
    try:
        world.server[0].unwrap()
    except ssl.SSLWantReadError:
        pass
    world.core.upstream_data(world.server[2].read(), T0)
    world.core.upstream_eof(T0)
    cmds = world.core.take()
    assert isinstance(cmds[0], SendToCommand) and cmds[1:3] == [FIN_TO_COMMAND, CLOSE_UPSTREAM]
    assert cmds[-1] == FLOW_OVER
    world.command[1].write(cmds[0].data)
    with pytest.raises(ssl.SSLZeroReturnError):  # (it had sent its own: both are done)
        world.command[0].read(100)  # the command got the server's close_notify


def test_command_reset_during_tls_resets_upstream(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    world.pump()
    world.core.command_reset()
    assert world.core.take() == [ABORT_UPSTREAM]


def test_a_broken_client_hello_is_relayed_raw():
    core = core_for(443)
    junk = b"\x16\x03\x01\x00\x05\x00\x00\x00\x00\x00"  # a handshake record, not a ClientHello
    core.command_data(junk, T0)
    assert core.take() == [SendUpstream(junk)]
    assert core.mode is Mode.RAW


def test_a_fin_in_the_middle_of_a_client_hello_relays_what_was_held():
    core = core_for(443)
    core.command_data(b"\x16\x03\x01", T0)  # the start of a record: wait for more
    assert core.take() == []
    core.command_eof(T0)
    assert core.take() == [SendUpstream(b"\x16\x03\x01"), FIN_UPSTREAM]


# --- HTTP on any port ----------------------------------------------------------------------

def test_a_request_line_on_any_port_is_decoded():
    core = core_for(3000)
    request = b"POST /api HTTP/1.1\r\nHost: dev.test:3000\r\nContent-Length: 0\r\n\r\n"
    core.command_data(request, T0)
    assert core.take() == [SendUpstream(request),
                           report(messages.HttpRequest, method="POST", url="http://dev.test:3000/api")]


@pytest.mark.parametrize("first", [
    b"GET /\r\n\r\n",                      # HTTP/0.9: no version
    b"get / HTTP/1.1\r\n\r\n",             # not a method token
    b"SSH-2.0-OpenSSH_9.2\r\n",
    b"GET / HTTP/1.1",                     # the line is not complete in the first chunk
])
def test_first_bytes_that_are_not_a_request_line_stay_raw_off_the_http_ports(first):
    core = core_for(3000)
    core.command_data(first, T0)
    assert core.take() == [SendUpstream(first)]
    assert core.mode is Mode.RAW


def _h2_conversation() -> tuple[bytes, bytes, bytes]:
    """(server's SETTINGS, the client's preface and request, the server's response) of a
    gRPC-style h2c call in which the server speaks first, made with the h2 library."""
    import h2.config
    import h2.connection

    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server.initiate_connection()
    server_first = server.data_to_send()
    client.initiate_connection()
    client.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "grpc.test:50051"),
                            (":path", "/pkg.Svc/Get"), ("content-type", "application/grpc")])
    client.send_data(1, b"\0\0\0\0\0", end_stream=True)
    request = client.data_to_send()
    server.receive_data(request)
    server.send_headers(1, [(":status", "200"), ("content-type", "application/grpc")])
    server.send_data(1, b"\0\0\0\0\0")
    server.send_headers(1, [("grpc-status", "0")], end_stream=True)
    return server_first, request, server.data_to_send()


def test_h2c_whose_server_speaks_first_is_decoded():
    server_first, request, response = _h2_conversation()
    core = core_for(50051)
    core.upstream_data(server_first, T0)
    assert core.take() == [SendToCommand(server_first)]
    assert isinstance(core.observer, Http2Observer)
    core.command_data(request, T0)
    assert core.take() == [SendUpstream(request), report(
        messages.HttpRequest, method="POST", url="http://grpc.test:50051/pkg.Svc/Get")]
    core.upstream_data(response, T0)
    assert core.take()[-1] == report(messages.HttpResponse, status=200)


def test_a_server_first_frame_that_is_not_settings_stays_raw():
    core = core_for(50051)
    core.upstream_data(b"\x00\x00\x06\x04\x01\x00\x00\x00\x00abcdef", T0)  # a SETTINGS ACK
    assert core.mode is Mode.RAW


# --- a command that does not trust the run's CA ------------------------------------------------

HINT = (f"the client rejected httptap's certificate for {NAME} (unknown CA): it does not use "
        "the system trust store; see \"Trusting httptap's CA\" in the README")


def test_a_client_that_rejects_our_certificate_is_told_once_per_name(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"], command_trusts_us=False)
    world.pump()
    assert world.command_error is not None  # its verification failed; it sent an alert
    assert report(messages.Notice, level="error", text=HINT) in world.log
    assert world.log[-1:] == [ABORT_UPSTREAM]
    # A second connection to the same name (the same proxy's settings): no second line.
    again = TlsWorld(tmp_path, server_alpn=["http/1.1"], command_trusts_us=False,
                     same_proxy_as=world)
    again.pump()
    assert not any(isinstance(c, Report) and isinstance(c.message, messages.Notice)
                   for c in again.log)


def test_a_client_that_closes_right_after_our_certificate_is_a_rejection_too(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"], command_trusts_us=False)
    obj = world.command[0]
    # Play the command by hand: its ClientHello, our flight back, then a FIN instead of an alert.
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    world.core.command_data(world.command[2].read(), T0)
    world._carry_out()
    for _ in range(5):  # the server answers; we finish upstream and answer the command
        world._step(world.server)
        data = world.server[2].read()
        if data:
            world.core.upstream_data(data, T0)
            world._carry_out()
    assert world.core.mode is Mode.TLS and world.command[1].pending  # our certificate is there
    world.core.command_eof(T0)
    assert world.core.take()[0] == report(
        messages.Notice, level="error",
        text=HINT.replace("(unknown CA)", "(it closed the connection after the certificate)"))


def test_a_client_that_closes_after_our_certificate_unannounced_is_a_rejection(tmp_path):
    """As above, but the command's FIN reaches the core only as the end of the flow
    (FlowClosed alone: close()), as when the server's FIN had gone to it already."""
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"], command_trusts_us=False)
    try:
        world.command[0].do_handshake()
    except ssl.SSLWantReadError:
        pass
    world.core.command_data(world.command[2].read(), T0)
    world._carry_out()
    for _ in range(5):
        world._step(world.server)
        data = world.server[2].read()
        if data:
            world.core.upstream_data(data, T0)
            world._carry_out()
    assert world.core.mode is Mode.TLS and world.command[1].pending
    world.core.close()
    assert world.core.take()[0] == report(
        messages.Notice, level="error",
        text=HINT.replace("(unknown CA)", "(it closed the connection after the certificate)"))


def test_other_tls_failures_of_the_command_are_not_called_rejections(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    world.pump()
    world.core.command_data(b"\x17\x03\x03\x00\x05garbage", T0)  # a record that does not decrypt
    cmds = world.core.take()
    assert not any(isinstance(c, Report) for c in cmds)  # (a verbose-only line)
    assert cmds[-1:] == [ABORT_UPSTREAM] and SetTimer(None) not in cmds  # (none in force)


# --- CONNECT tunnels (a program configured with an explicit proxy) ---------------------------

def test_tls_inside_a_connect_tunnel_is_intercepted_for_the_connect_target(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    opened = messages.FlowOpened(flow=7, src="10.1.1.100", sport=40000, dst="192.0.2.1", dport=3128)
    world.core = core = FlowCore(world.core.settings, opened, T0)
    connect = b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n"
    core.command_data(connect, T0)
    assert core.take() == [SendUpstream(connect), report(
        messages.HttpRequest, method="CONNECT", url="example.test:443", server="192.0.2.1:3128")]
    established = b"HTTP/1.1 200 Connection established\r\n\r\n"
    core.upstream_data(established, T0)
    assert core.take() == [SendToCommand(established),
                           report(messages.HttpResponse, status=200)]
    assert core.mode is Mode.SNIFF  # the tunnel's first bytes decide anew
    # (The test's "server" plays the far end of the tunnel: the proxy relays bytes.)
    world.pump()
    assert world.command_error is None and core.mode is Mode.TLS
    assert world.command[0].getpeercert()["subjectAltName"] == (("DNS", NAME),)
    world.log.clear()
    world.command[0].write(REQUEST)
    world.pump()
    assert world.log == [report(messages.HttpRequest, url=f"https://{NAME}/a",
                                server="192.0.2.1:3128", tls_sni=NAME)]


def test_plain_http_through_a_proxy_keeps_its_absolute_url():
    core = core_for(3128)
    request = b"GET http://example.test/x HTTP/1.1\r\nHost: example.test\r\n\r\n"
    core.command_data(request, T0)
    assert core.take() == [SendUpstream(request),
                           report(messages.HttpRequest, url="http://example.test/x")]


def test_a_refused_connect_stays_http():
    core = core_for(3128)
    core.command_data(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n", T0)
    core.take()
    core.upstream_data(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", T0)
    assert core.take()[-1] == report(messages.HttpResponse, status=403)
    assert core.mode is Mode.HTTP


# --- --no-intercept ------------------------------------------------------------------------------

def test_tls_to_a_host_not_intercepted_is_relayed_untouched_and_summarised_with_its_name(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    world.core.settings.no_intercept = ("*.test",)
    world.pump()
    assert world.command_error is not None  # the command met the test CA's certificate itself
    assert world.core.mode is Mode.RAW and world.core.upstream_tls is None
    world.core.close()
    world.core.final_report(T0 + 1)
    assert world.core.take()[-1] == report(messages.TcpSummary, tls_sni=NAME)


# --- WebSocket after a 101 ------------------------------------------------------------------------

WS_REQUEST = (b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def ws_101(extensions: str = "", upgrade: str = "websocket") -> bytes:
    ext = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\n"
            f"{ext}\r\n").encode()


def ws_core(capture_bodies: bool = True, verbose: bool = False) -> FlowCore:
    core = core_for(80, capture_bodies=capture_bodies, verbose=verbose)
    core.command_data(WS_REQUEST, T0)
    core.take()
    return core


def test_websocket_messages_each_way_are_reported_and_relayed():
    core = ws_core()
    core.upstream_data(ws_101(), T0 + 1)
    assert core.take()[-1] == report(messages.HttpResponse, status=101, exchange=1)
    hello = wsframes.client(1, b"hello")
    core.command_data(hello, T0 + 2)
    assert core.take() == [SendUpstream(hello), report(
        messages.WsMessage, exchange=1, time=T0 + 2, url="ws://h/chat", from_client=True,
        opcode=1, size=5, data=b"hello", truncated=False)]
    echo = wsframes.frame(2, b"\x00\xff") + wsframes.frame(9, b"")
    core.upstream_data(memoryview(echo), T0 + 3)
    assert core.take() == [SendToCommand(echo), report(
        messages.WsMessage, from_client=False, opcode=2, size=2, data=b"\x00\xff")]
    close = wsframes.client(8, b"\x03\xe8bye")
    core.command_data(close, T0 + 4)
    assert core.take() == [SendUpstream(close), report(
        messages.WsMessage, from_client=True, opcode=8, close_code=1000, close_reason="bye")]
    core.close()
    core.final_report(T0 + 5)
    assert core.take() == [CLOSE_UPSTREAM, report(
        messages.WsEnd, exchange=1, time=T0 + 5, url="ws://h/chat", messages_sent=1,
        messages_received=1, pings_received=1, pongs_sent=0, error="")]


def test_frames_in_the_101s_chunk_and_sent_before_it_are_decoded():
    core = ws_core()
    early = wsframes.client(1, b"eager")  # the client did not wait for the 101
    core.command_data(early, T0 + 1)
    assert core.take() == [SendUpstream(early)]
    core.upstream_data(ws_101() + wsframes.frame(1, b"welcome"), T0 + 2)
    assert core.take()[1:] == [
        report(messages.HttpResponse, status=101),
        report(messages.WsMessage, from_client=True, data=b"eager", time=T0 + 2),
        report(messages.WsMessage, from_client=False, data=b"welcome", time=T0 + 2)]


def test_permessage_deflate_from_the_101_is_inflated_and_data_needs_bodies_kept():
    core = ws_core(capture_bodies=False)
    core.upstream_data(ws_101("permessage-deflate; client_no_context_takeover"), T0)
    core.take()
    sender = wsframes.Deflater(takeover=False)
    wire = wsframes.client(1, sender.message(b"squeeze me " * 50), rsv1=True)
    core.command_data(wire, T0)
    assert core.take() == [SendUpstream(wire), report(
        messages.WsMessage, opcode=1, size=550, data=None, compressed=True)]


def test_a_protocol_break_ends_decoding_and_the_bytes_still_pass():
    core = ws_core(verbose=True)
    core.upstream_data(ws_101(), T0)
    core.take()
    bad = wsframes.frame(1, b"unmasked from the client")
    core.command_data(bad, T0 + 1)
    assert core.take() == [
        SendUpstream(bad),
        report(messages.WsEnd, exchange=1, messages_sent=0, error="a client frame without a mask"),
        report(messages.Notice, level="info",
               text="WebSocket ws://h/chat: not decoded further: a client frame without a mask")]
    assert core.websocket is None
    later = wsframes.client(1, b"later")
    core.command_data(later, T0 + 2)
    assert core.take() == [SendUpstream(later)]
    core.close()
    core.final_report(T0 + 3)
    assert core.take() == [CLOSE_UPSTREAM]  # the WsEnd went already


def test_an_extension_we_cannot_follow_leaves_the_websocket_undecoded():
    core = ws_core()
    core.upstream_data(ws_101("x-custom-frames"), T0)
    assert core.take()[-1] == report(messages.WsEnd, messages_sent=0,
                                     error="unknown WebSocket extension 'x-custom-frames'")
    frame = wsframes.client(1, b"x")
    core.command_data(frame, T0)
    assert core.take() == [SendUpstream(frame)]


def test_a_101_to_another_protocol_is_not_read_as_websocket():
    core = ws_core()
    core.upstream_data(ws_101(upgrade="something-else"), T0)
    core.take()
    assert core.websocket is None and core.observer is None
    core.command_data(wsframes.client(1, b"x"), T0)
    assert [type(c) for c in core.take()] == [SendUpstream]


def test_websocket_over_tls_is_decoded_as_wss(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    world.pump()
    world.command[0].write(WS_REQUEST.replace(b"Host: h", b"Host: " + NAME.encode()))
    world.pump()
    answer = ws_101("permessage-deflate") + wsframes.frame(
        1, wsframes.Deflater().message(b"over TLS"), rsv1=True)
    world.server[0].write(answer)
    command_got, _ = world.pump()
    assert command_got == answer  # relayed as it came
    assert [c for c in world.log if isinstance(c, Report)
            and isinstance(c.message, messages.WsMessage)] == [report(
        messages.WsMessage, url=f"wss://{NAME}/chat", from_client=False, opcode=1, size=8,
        compressed=True)]


# --- upstream session resumption -------------------------------------------------------------

def test_a_second_connection_to_the_same_server_resumes_the_upstream_session(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    world.pump()
    world.command[0].write(REQUEST)
    world.pump()
    world.server[0].write(RESPONSE)
    world.pump()  # (the server's session ticket came with its first records)
    world.core.close()
    world.core.final_report(T0)
    assert len(world.core.settings.sessions) == 1
    # A new connection, the same proxy: the server context must be the same for a resumption.
    again = TlsWorld(tmp_path, server_alpn=["http/1.1"], same_proxy_as=world)
    again.pump()
    assert again.command_error is None and again.core.mode is Mode.TLS
    assert again.core.upstream_tls is not None and again.core.upstream_tls.resumed


def _exchange_and_end(world: TlsWorld, now: float) -> None:
    world.pump()
    world.command[0].write(REQUEST)
    world.pump()
    world.server[0].write(RESPONSE)
    world.pump()
    world.core.close()
    world.core.final_report(now)


def test_a_resumed_session_is_kept_while_young_then_renewed(tmp_path, monkeypatch):
    """A connection that resumed the cached session leaves it in place until it is half
    way through its lifetime: taking a new one from OpenSSL copies it (costly), and on
    CPython 3.10-3.12.7 and 3.13.0 every read of ``SSLObject.session`` leaks that copy
    (gh-116810; 63 MB per 10,000 HTTPS connections in perf/bench_memory.py --https)."""
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    _exchange_and_end(world, T0)
    ((key, first),) = world.core.settings.sessions.items()
    reads = [0]
    getter = ssl.SSLObject.session

    def counting_getter(self: ssl.SSLObject) -> Any:
        reads[0] += 1
        return getter.fget(self)  # type: ignore[attr-defined]

    monkeypatch.setattr(ssl.SSLObject, "session", property(counting_getter, getter.fset))
    young = first.time + first.timeout / 4
    for now in (young, young):  # twice: one ticket serves many resumptions
        again = TlsWorld(tmp_path, server_alpn=["http/1.1"], same_proxy_as=world)
        _exchange_and_end(again, now)
        assert again.core.upstream_tls is not None and again.core.upstream_tls.resumed
        assert world.core.settings.sessions == {key: first}
        assert world.core.settings.sessions[key] is first
    assert reads == [0]
    old = first.time + first.timeout * 3 / 4
    again = TlsWorld(tmp_path, server_alpn=["http/1.1"], same_proxy_as=world)
    _exchange_and_end(again, old)
    assert again.core.upstream_tls is not None and again.core.upstream_tls.resumed
    renewed = world.core.settings.sessions[key]
    assert renewed is not first and renewed.has_ticket


# --- h2c through an HTTP/1.1 Upgrade ------------------------------------------------------------

def _h2c_upgrade() -> tuple[bytes, bytes, bytes, bytes]:
    """(the client's upgrading request, the server's 101 with its first HTTP/2 frames, the
    client's preface, the response on stream 1), made with the h2 library."""
    import h2.config
    import h2.connection

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = client.initiate_upgrade_connection()
    request = (b"GET /up HTTP/1.1\r\nHost: h2c.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n")
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_upgrade_connection(settings)
    switch = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
              + server.data_to_send())
    server.send_headers(1, [(":status", "200"), ("content-length", "5")])
    server.send_data(1, b"hello", end_stream=True)
    return request, switch, client.data_to_send(), server.data_to_send()


def test_an_h2c_upgrade_is_decoded_as_http2_and_answers_the_upgrading_request():
    request, switch, preface, response = _h2c_upgrade()
    core = core_for(80)
    core.command_data(request, T0)
    (_, reported) = core.take()
    assert reported == report(messages.HttpRequest, method="GET", url="http://h2c.test/up")
    exchange = reported.message.exchange
    core.upstream_data(switch, T0)
    assert core.take() == [SendToCommand(switch)]  # the 101 is not the answer: not reported
    assert isinstance(core.observer, Http2Observer)
    core.command_data(preface, T0)
    assert core.take() == [SendUpstream(preface)]
    core.upstream_data(response, T0)
    assert core.take()[-1] == report(messages.HttpResponse, exchange=exchange, status=200,
                                     version="HTTP/2", body_size=5)


# --- WebSocket over HTTP/2 (RFC 8441 extended CONNECT) ------------------------------------------

def test_a_websocket_over_an_h2_extended_connect_is_decoded():
    import h2.config
    import h2.connection
    import h2.settings

    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    core = core_for(80, capture_bodies=True)

    def client_sends() -> None:
        data = client.data_to_send()
        core.command_data(data, T0)
        server.receive_data(data)

    def server_sends() -> None:
        data = server.data_to_send()
        core.upstream_data(data, T0)
        client.receive_data(data)

    server.initiate_connection()  # (its SETTINGS first, as a server must send)
    server.update_settings({h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1})
    client.initiate_connection()
    client_sends()
    server_sends()
    client_sends()  # (the SETTINGS acknowledgements)
    core.take()
    client.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                            (":scheme", "http"), (":path", "/chat"), (":authority", "ws.test"),
                            ("sec-websocket-version", "13")])
    client_sends()
    server.send_headers(1, [(":status", "200")])
    server_sends()
    reports = [c.message for c in core.take() if isinstance(c, Report)]
    assert reports == [Like(messages.HttpRequest, method="CONNECT", url="http://ws.test/chat"),
                       Like(messages.HttpResponse, status=200)]
    client.send_data(1, wsframes.client(1, b"hello"))
    client_sends()
    server.send_data(1, wsframes.frame(1, b"hi there"))
    server_sends()
    reports = [c.message for c in core.take() if isinstance(c, Report)]
    assert reports == [
        Like(messages.WsMessage, url="ws://ws.test/chat", from_client=True, opcode=1,
             size=5, data=b"hello"),
        Like(messages.WsMessage, url="ws://ws.test/chat", from_client=False, opcode=1,
             size=8, data=b"hi there")]
    core.close()
    core.final_report(T0)
    assert any(isinstance(c, Report) and isinstance(c.message, messages.WsEnd)
               for c in core.take())
