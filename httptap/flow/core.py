"""One proxied TCP connection as a pure core: events in, commands out, no I/O.

The proxy stage (``stages.relay``) feeds a :class:`FlowCore` what happened, with the
time, then carries out the commands it queued (:meth:`FlowCore.take`; the commands are
listed in ``flow.commands``). The core never touches a socket, a ring or the clock, so a
test drives it with a script of events and compares the exact commands
(tests/test_flowcore.py), as mitmproxy's Playbook does. Events: ``command_data``,
``command_eof``, ``command_acked``, ``command_reset``, ``close``, ``upstream_data``,
``upstream_eof``, ``upstream_lost``, ``upstream_write_paused``, ``timer``.

What a flow is, is decided by its first bytes (``flow.sniff``; :class:`Mode`)::

    SNIFF --ClientHello--> HELLO --complete--> UPSTREAM_HANDSHAKE --up--> TLS
      |                                                  `--failed/timeout--> REFUSED
      +--request line, h2 preface, --http port--> HTTP   (an observer sees every byte)
      +--the server speaks first: h2 SETTINGS--> HTTP    (h2c: gRPC servers do that)
      |                   `--a 2xx to CONNECT--> SNIFF   (what the tunnel carries, anew)
      `--otherwise--> RAW     (bytes relayed untouched; a tcp summary at the end)

A decoder that cannot follow lets go, and the bytes are relayed raw from there. After a
``101`` to ``Upgrade: h2c`` decoding goes on as HTTP/2 (the request answered on stream
1); after a ``101`` to ``Upgrade: websocket``, or a 2xx to an HTTP/2 extended CONNECT
(RFC 8441, per stream), WebSocket messages are reported (``http.wsreport``).

In TLS the command's session is terminated here (``tlsterm.ServerTls``, a certificate
from the run's CA, minted only once the server's handshake succeeded: a refused upstream
gets an alert) and the upstream one is a verifying client over memory BIOs
(``tlsterm.ClientTls``) with the command's SNI and ALPN; the server's choice of protocol
is the command's, and picks the decoder. close_notify and FIN pass each way on their own.

A flow ends when both sides have half-closed (the upstream socket is closed then, the
final report made, ``FlowOver``), or when the tcp stage forgets it (``close``) or it is
reset, whichever comes first.

Flow control: command bytes are credited back (``Credit``, in ``CREDIT_STEP``s) once
handed to the socket, not while its buffer is over the high-water mark; bytes towards
the command are in flight until the tcp stage credits them, and reading upstream pauses
above ``MAX_IN_FLIGHT``.
"""
from __future__ import annotations

import enum
from typing import Any

from ..plumbing import messages
from ..plumbing.messages import CREDIT_STEP
from ..tls.clienthello import ClientHelloError, parse_client_hello
from ..tls.tlsterm import ClientTls, ServerTls, TlsError, refusal, rejection
from .commands import (ABORT_UPSTREAM, CLOSE_UPSTREAM, FIN_TO_COMMAND, FIN_UPSTREAM, FLOW_OVER,
                       PAUSE_UPSTREAM, RESUME_UPSTREAM, Command, Credit, FlowSettings,
                       Report, ResetCommand, SendToCommand, SendUpstream, SetTimer,
                       endpoint)
from .decoding import FlowDecoding
from .sniff import first_bytes, looks_like_h2_settings, matches_any

MAX_IN_FLIGHT = 8 << 20      # upstream bytes not yet acknowledged by the command
MAX_HELLO = 64 << 10         # a ClientHello larger than this is not one we intercept
TLS_HANDSHAKE_TIMEOUT = 15.0
MAX_SESSIONS = 1024          # upstream TLS sessions kept for resumption (per proxy shard)
class Mode(enum.Enum):
    SNIFF = "sniff"                            # nothing from the command yet
    HELLO = "hello"                            # reading the command's ClientHello
    UPSTREAM_HANDSHAKE = "upstream-handshake"  # our TLS client is shaking hands upstream
    TLS = "tls"                                # both sessions up
    HTTP = "http"                              # plain HTTP, observed
    RAW = "raw"                                # relayed untouched
    REFUSED = "refused"                        # upstream TLS failed; the command got an alert


# The modes as module constants for the per-request paths (command_data, upstream_data):
# reading ``Mode.X`` goes through the enum's class, ~0.15 µs each, several per request.
_SNIFF, _HELLO, _UPSTREAM_HANDSHAKE = Mode.SNIFF, Mode.HELLO, Mode.UPSTREAM_HANDSHAKE
_TLS, _REFUSED = Mode.TLS, Mode.REFUSED


class FlowCore(FlowDecoding):
    """One proxied TCP connection: see the module docstring."""

    # Per-flow state that most flows leave as it starts: class-level defaults, which an
    # assignment shadows per instance. A new connection then builds only what it uses.
    bytes_up = 0         # command -> upstream (as the command sent them)
    bytes_down = 0       # upstream -> command (as the command got them)
    in_flight = 0        # sent towards the command, not yet credited by the tcp stage
    owed_credit = 0      # command bytes handed to the socket, not yet credited back
    write_paused = False  # the socket's write buffer is over its high-water mark
    read_paused = False
    fin_upstream = False    # we have half-closed towards the server
    eof_from_upstream = False  # the server has half-closed towards us
    upstream_gone = False   # the socket is closed
    finished = False        # the flow is over (closed or reset by the command)
    # The ClientHello, held until the upstream handshake ends (a bytearray from HELLO on).
    hello: bytes | bytearray = b""
    tls: ServerTls | None = None          # the command's session
    upstream_tls: ClientTls | None = None  # ours with the server
    close_notify_to_command = False
    eof_pending = False     # the command's FIN came during the upstream handshake
    timer_set = False       # a SetTimer with a deadline is in force
    reported = False        # final_report has run
    session_key: tuple[tuple[str, ...], str, int] = ((), "", 0)  # see _keep_session
    offered_session: Any = None  # the cached upstream session we tried to resume

    def __init__(self, settings: FlowSettings, opened: messages.FlowOpened, now: float) -> None:
        self.settings = settings
        self.flow = opened.flow
        self.dst, self.dport = opened.dst, opened.dport
        self.client = endpoint(opened.src, opened.sport)
        self.server = endpoint(opened.dst, opened.dport)
        self.started = now
        self.mode = Mode.SNIFF
        self.commands = []

    def take(self) -> list[Command]:
        """The commands queued since the last call, in order."""
        out = self.commands
        self.commands = []
        return out

    # --- events from the command's side (the tcp stage) -------------------------------------

    def command_data(self, data: bytes, now: float) -> None:
        if self.finished:
            return
        self.bytes_up += len(data)
        mode = self.mode
        if mode is _SNIFF:
            mode = self._decide(data, now)
        if mode is _TLS:
            self._command_tls(data, now)
        elif mode is _HELLO:
            self.hello += data
            self._try_hello(now)
        elif mode is _UPSTREAM_HANDSHAKE:
            self.hello += data  # credited when the handshake has consumed it
        elif mode is _REFUSED:
            self._credit(len(data))
        else:
            self._to_upstream(data)
            self._credit(len(data))
            self._observe(True, data, now)

    def command_eof(self, now: float) -> None:
        """A FIN from the command: passed on as a FIN (over TLS too: a FIN without
        close_notify is what the command sent)."""
        if self._closed_during_our_handshake():
            self._rejected("it closed the connection after the certificate")
        if self.observer is not None:
            self.observer.client_eof(now)
            self._report(now)
        if self.finished or self.upstream_gone or self.fin_upstream:
            return
        if self.mode is Mode.UPSTREAM_HANDSHAKE:
            self.eof_pending = True  # passed on once the held ClientHello has been answered
            return
        if self.mode is Mode.HELLO:
            self._hello_is_not_tls()  # it will never be complete now
        self._fin_upstream(now)

    def _fin_upstream(self, now: float) -> None:
        """The command is done sending: half-close towards the server, or close if the
        server is done too."""
        self.fin_upstream = True
        if self.eof_from_upstream:
            self._over(now)
        else:
            self.commands.append(FIN_UPSTREAM)

    def _over(self, now: float) -> None:
        """Both sides have half-closed: nothing more can pass. Close the socket now (its
        FIN goes out with the close), report, and let the proxy forget the flow
        (``FlowOver``), instead of half-closing and waiting for the tcp stage to forget it
        after its TIME_WAIT: a syscall less, and no socket nor per-flow state (observer,
        reporter, TLS objects) held for a second after every connection."""
        self.upstream_gone = True
        self.commands.append(CLOSE_UPSTREAM)
        self.finished = True
        self._cancel_timer()
        self.final_report(now)
        self.commands.append(FLOW_OVER)

    def command_acked(self, count: int) -> None:
        self.in_flight -= count
        if self.read_paused and self.in_flight <= MAX_IN_FLIGHT // 2:
            self.read_paused = False
            self.commands.append(RESUME_UPSTREAM)

    def command_reset(self) -> None:
        """The command reset the connection: so do we, upstream."""
        if self._closed_during_our_handshake() and not self.finished:
            self._rejected("it reset the connection after the certificate")
        self._reset_upstream()

    def _reset_upstream(self) -> None:
        if not self.finished:
            self.finished = True
            self._cancel_timer()
            if not self.upstream_gone:
                self.commands.append(ABORT_UPSTREAM)

    def _cancel_timer(self) -> None:
        """SetTimer(None), if a timer is set (most flows never set one)."""
        if self.timer_set:
            self.timer_set = False
            self.commands.append(SetTimer(None))

    def close(self) -> None:
        """The tcp stage forgot the flow (both sides closed): close upstream after what is
        queued."""
        if not self.finished:
            self.finished = True
            self._cancel_timer()
            if not self.upstream_gone:
                self.commands.append(CLOSE_UPSTREAM)

    def final_report(self, now: float) -> None:
        """What the sink hears when the connection is over: errors for unanswered
        requests, or a tcp summary if nothing on it was HTTP. Once only (see _over)."""
        if self.reported:
            return
        self.reported = True
        self._keep_session(now)
        if self.observer is not None:
            self.observer.client_eof(now)
            self.observer.server_eof(now)
            self._report(now)
        if self.websocket is not None:
            self._report_all(self.websocket.end(now))
            self.websocket = None
        if self.h2_websockets:
            for websocket in self.h2_websockets.values():
                self._report_all(websocket.end(now))
            self.h2_websockets.clear()
        if self.reporter is not None and self.reporter.exchanges:
            for msg in self.reporter.finish(now, "the connection closed before a response"):
                self.commands.append(Report(msg))
            return
        self.commands.append(Report(messages.TcpSummary(
            time=self.started, client=self.client, server=self.server,
            bytes_sent=self.bytes_up, bytes_received=self.bytes_down,
            duration=now - self.started, tls_sni=self.tls_sni)))

    # --- events from the upstream socket ------------------------------------------------------

    def upstream_data(self, data: bytes | memoryview, now: float) -> None:
        """Bytes the server sent. ``data`` need only live for the call (the commands queued
        may refer to it: carry them out before the buffer is reused)."""
        if self.finished:
            return
        mode = self.mode
        if mode is _SNIFF:  # the server speaks first: HTTP/2 (gRPC), or neither TLS nor HTTP
            if looks_like_h2_settings(data):
                self.mode = Mode.HTTP
                self._start_decoding("h2", "http")
            else:
                self.mode = Mode.RAW
        elif mode is _UPSTREAM_HANDSHAKE:
            self._upstream_handshake(data, now)
            return
        elif mode is _REFUSED:
            return
        upstream_tls = self.upstream_tls
        if upstream_tls is None:
            self.bytes_down += len(data)
            self._to_command(data)
            self._observe(False, data, now)
            return
        try:
            plain, back = upstream_tls.receive(data)
        except TlsError as exc:
            self._notice(f"TLS from {self.tls_sni or self.dst} ({self.server}) failed: {exc}",
                         verbose_only=True)
            self._upstream_failed(f"upstream TLS: {exc}", exc.pending)
            return
        if back:
            self.commands.append(SendUpstream(back))
        if plain:
            self._plain_to_command(plain, now)
        if upstream_tls.closed and not self.close_notify_to_command:
            self._close_notify_to_command()

    def upstream_eof(self, now: float) -> None:
        """The server half-closed: so does the command's side (close_notify first over TLS)."""
        if self.finished or self.eof_from_upstream:
            return
        self.eof_from_upstream = True
        if self.mode is Mode.UPSTREAM_HANDSHAKE:
            self._refuse("the server closed the connection during the handshake")
            return
        if self.mode is Mode.REFUSED:
            return
        if self.tls is not None and not self.close_notify_to_command:
            self._close_notify_to_command()
        self.commands.append(FIN_TO_COMMAND)
        if self.observer is not None:
            self.observer.server_eof(now)
            self._report(now)
        if self.fin_upstream and not self.upstream_gone:
            self._over(now)

    def upstream_lost(self, error: str | None, now: float) -> None:
        """The socket is closed (``error``: it failed, or the server reset it)."""
        if self.upstream_gone:
            return
        self.upstream_gone = True
        if self.finished or self.mode is Mode.REFUSED:
            return
        if self.mode is Mode.UPSTREAM_HANDSHAKE:
            self._refuse(error or "the server closed the connection during the handshake")
            return
        if error is not None:
            self.finished = True
            self.commands.append(ResetCommand(f"upstream: {error}"))
        elif not self.eof_from_upstream:
            self.eof_from_upstream = True
            if self.tls is not None and not self.close_notify_to_command:
                self._close_notify_to_command()
            self.commands.append(FIN_TO_COMMAND)

    def upstream_write_paused(self, paused: bool) -> None:
        self.write_paused = paused
        if not paused and self.owed_credit:
            self.commands.append(Credit(self.owed_credit))
            self.owed_credit = 0

    def timer(self, now: float) -> None:
        if self.mode is Mode.UPSTREAM_HANDSHAKE and not self.finished:
            self._refuse("the handshake timed out")

    # --- deciding what the flow is ------------------------------------------------------------

    def _decide(self, first: bytes, now: float) -> Mode:
        settings = self.settings
        kind = first_bytes(first, self.dport in settings.http_ports,
                           self.dport in settings.https_ports)
        if kind == "tls":
            self.mode = Mode.HELLO
            self.hello = bytearray()
        elif kind == "raw":
            self.mode = Mode.RAW
        else:  # "h2" (HTTP/2 with prior knowledge: h2c) or "http/1.1"
            self.mode = Mode.HTTP
            self._start_decoding(kind, "http")
        return self.mode

    # --- TLS interception ----------------------------------------------------------------------

    def _try_hello(self, now: float) -> None:
        try:
            hello = parse_client_hello(bytes(self.hello))
        except ClientHelloError:
            hello = None
        else:
            if hello is None and len(self.hello) <= MAX_HELLO:
                return  # wait for the rest of the ClientHello
        if hello is None:
            self._hello_is_not_tls()
            return
        self.tls_sni = hello.sni or ""
        if matches_any(self.tls_sni or self.dst, self.settings.no_intercept):
            self._hello_is_not_tls()  # relayed untouched; the summary names the host
            return
        self.mode = Mode.UPSTREAM_HANDSHAKE
        alpn = tuple(p for p in hello.alpn if p.isascii() and p)
        self.session_key = (alpn, self._tls_name, self.dport)
        session = self.offered_session = self.settings.sessions.get(self.session_key)
        try:
            self.upstream_tls = ClientTls(self.settings.upstream_context(alpn), self._tls_name,
                                          session)
        except (ValueError, UnicodeError) as exc:  # a name no TLS client can ask for
            self._refuse(str(exc))
            return
        self.commands.append(SendUpstream(self.upstream_tls.start()))
        self.commands.append(SetTimer(now + TLS_HANDSHAKE_TIMEOUT))
        self.timer_set = True

    def _hello_is_not_tls(self) -> None:
        """Not a ClientHello we understand: relay what we held, untouched, from now on."""
        self.mode = Mode.RAW
        data, self.hello = bytes(self.hello), bytearray()
        self._to_upstream(data)
        self._credit(len(data))

    @property
    def _tls_name(self) -> str:
        return self.tls_sni or self.dst

    def _upstream_handshake(self, data: bytes | memoryview, now: float) -> None:
        upstream_tls = self.upstream_tls
        assert upstream_tls is not None
        try:
            plain, back = upstream_tls.receive(data)
        except TlsError as exc:
            if exc.pending:
                self.commands.append(SendUpstream(exc.pending))
            self._refuse(exc)
            return
        if back:
            self.commands.append(SendUpstream(back))
        if not upstream_tls.handshake_done:
            return
        self._cancel_timer()
        chosen = upstream_tls.alpn
        self.tls_alpn = chosen or ""
        from ..tls.ca import CAError  # here: a proxy imports cryptography at its first TLS flow

        try:
            leaf = self.settings.server_context(self._tls_name, [chosen] if chosen else None)
        except CAError as exc:  # a name no certificate can hold (with --insecure, say)
            self._refuse(str(exc))
            return
        self.tls = ServerTls(leaf)
        self.mode = Mode.TLS
        if chosen == "h2":
            self._start_decoding("h2", "https")
        elif chosen in (None, "http/1.1", "http/1.0"):
            self._start_decoding("http/1.1", "https")
        held, self.hello = bytes(self.hello), bytearray()
        self.bytes_up -= len(held)  # counted again by command_data
        self.command_data(held, now)
        if plain:  # the server spoke first, right after the handshake
            self._plain_to_command(plain, now)
        if upstream_tls.closed:
            self._close_notify_to_command()
        if self.eof_pending:
            self.command_eof(now)

    def _command_tls(self, data: bytes, now: float) -> None:
        tls, upstream_tls = self.tls, self.upstream_tls
        assert tls is not None and upstream_tls is not None
        try:
            plain, back = tls.receive(data)
        except TlsError as exc:
            self._to_command(exc.pending)
            why = rejection(exc)
            if why is not None and not tls.handshake_done:
                self._rejected(why)
            else:
                self._notice(f"TLS with the command failed ({self._tls_name}): {exc}",
                             verbose_only=True)
            self._reset_upstream()
            return
        self._to_command(back)
        if plain and not self.fin_upstream:
            try:
                self._to_upstream(upstream_tls.send(plain))
            except TlsError as exc:
                self._upstream_failed(f"upstream TLS: {exc}", b"")
                return
        self._credit(len(data))
        self._observe(True, plain, now)
        if tls.closed and not (self.fin_upstream or self.upstream_gone):
            # close_notify from the command: ours to the server, then a FIN. The server's
            # answer (its close_notify, then its FIN) reaches the command the same way.
            self._to_upstream(upstream_tls.close())
            self._fin_upstream(now)

    def _rejected(self, why: str) -> None:
        """The command's TLS client refused our certificate: it does not trust the run's
        CA. Said once per name, as an error: nothing on that connection will be seen."""
        name = self._tls_name
        if name not in self.settings.rejected_names:
            self.settings.rejected_names.add(name)
            self._notice(f"the client rejected httptap's certificate for {name} ({why}): it does "
                         "not use the system trust store; see \"Trusting httptap's CA\" in the "
                         "README", level="error")

    def _closed_during_our_handshake(self) -> bool:
        """The command closed or reset right after our certificate, as some clients do
        instead of sending an alert."""
        return self.mode is Mode.TLS and self.tls is not None and not self.tls.handshake_done

    def _plain_to_command(self, plain: bytes | memoryview, now: float) -> None:
        tls = self.tls
        assert tls is not None
        try:
            wire = tls.send(plain)
        except TlsError as exc:
            self._notice(f"TLS with the command failed ({self._tls_name}): {exc}",
                         verbose_only=True)
            self._reset_upstream()
            return
        self.bytes_down += len(wire)
        self._to_command(wire)
        self._observe(False, plain, now)

    def _keep_session(self, now: float) -> None:
        """Keep the upstream session for the next connection to the same server (its
        ticket has arrived by the time the connection ends).

        A connection that resumed the cached session, while that is in the first half of
        its lifetime, keeps it instead: taking a session from OpenSSL copies it (through
        its DER form, certificates parsed again: measured ~0.3 ms, as much as the rest of
        a resumed handshake's Python), and a ticket serves many resumptions (stateless
        tickets, the servers' default). A server whose tickets serve only once then gets
        a full handshake every other connection, and its fresh ticket from that one."""
        upstream_tls = self.upstream_tls
        if upstream_tls is None or self.mode is not Mode.TLS:
            return
        offered = self.offered_session
        if (offered is not None and upstream_tls.resumed
                and now < offered.time + offered.timeout / 2):
            return
        session = upstream_tls.session
        if session is None:
            return
        sessions = self.settings.sessions
        sessions.pop(self.session_key, None)
        sessions[self.session_key] = session
        while len(sessions) > MAX_SESSIONS:
            del sessions[next(iter(sessions))]

    def _close_notify_to_command(self) -> None:
        self.close_notify_to_command = True
        if self.tls is not None:
            self._to_command(self.tls.close())

    def _refuse(self, reason: TlsError | str) -> None:
        """The upstream handshake failed: fail the command's with an alert, say why."""
        self.mode = Mode.REFUSED
        self._cancel_timer()
        self._notice(f"TLS to {self._tls_name} ({self.server}) failed: {reason}", level="error")
        self._to_command(refusal(reason, bytes(self.hello)))
        self._credit(len(self.hello))
        self.hello = bytearray()
        self.commands.append(FIN_TO_COMMAND)
        if not self.upstream_gone:
            self.upstream_gone = True
            self.commands.append(ABORT_UPSTREAM)

    def _upstream_failed(self, reason: str, alert: bytes) -> None:
        """The established upstream session broke: reset both sides."""
        if alert:
            self.commands.append(SendUpstream(alert))
        self.finished = True
        self.commands.append(ResetCommand(reason))
        if not self.upstream_gone:
            self.upstream_gone = True
            self.commands.append(ABORT_UPSTREAM)

    # --- relaying and credit -------------------------------------------------------------------

    def _to_command(self, wire: bytes | memoryview) -> None:
        if not wire:
            return
        self.in_flight += len(wire)
        self.commands.append(SendToCommand(wire))
        if self.in_flight > MAX_IN_FLIGHT and not self.read_paused:
            self.read_paused = True
            self.commands.append(PAUSE_UPSTREAM)

    def _to_upstream(self, data: bytes) -> None:
        if data and not (self.upstream_gone or self.fin_upstream):
            self.commands.append(SendUpstream(data))

    def _credit(self, count: int) -> None:
        # Returned in steps (see tcp.CREDIT_STEP), and not while the upstream socket is
        # over its high-water mark: the command's window then closes, as it should.
        self.owed_credit += count
        if not self.write_paused and self.owed_credit >= CREDIT_STEP:
            self.commands.append(Credit(self.owed_credit))
            self.owed_credit = 0

    def _enter_tunnel(self, target: str) -> None:
        """The command's proxy accepted a CONNECT: what follows on this connection is the
        command's conversation with ``target`` (host:port), TLS or not, through the
        proxy. It is recognised and intercepted as any connection to ``target`` is; its
        records keep naming the proxy as the server they went through."""
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            return  # not host:port: relay raw
        self.dst, self.dport = host.strip("[]"), int(port)
        self.mode = Mode.SNIFF
        self.reporter = None
        self.last_request = None
