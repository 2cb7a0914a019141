"""Both TLS sessions of an intercepted connection, over memory BIOs: bytes in, bytes out.

The proxy stage owns the sockets; these classes own only an ``ssl.SSLObject`` between two
``MemoryBIO``s (the mitmproxy way), so the flow core (``httptap.flow.core``) drives them
with the bytes it is given and tests need no socket:

- :class:`ServerTls`, the command's session, terminated here with a minted certificate;
- :class:`ClientTls`, the upstream session, a verifying client with the command's SNI and
  ALPN. Over memory BIOs (rather than asyncio's ``start_tls``) a half-close is a
  half-close: close_notify and FIN pass each way on their own.

A connection whose upstream handshake failed is answered with a TLS alert instead of a
certificate: :func:`refusing_context` makes a server context whose SNI callback aborts
the handshake with the alert we choose, so the command's TLS library reports a handshake
failure rather than a reset.
"""

from __future__ import annotations

import ssl
from typing import cast


class TlsError(Exception):
    """A handshake (or a later record) failed. ``pending`` holds what must still reach the
    peer (the alert); ``verify_failed``: the peer's certificate did not verify."""

    def __init__(self, reason: str, pending: bytes, verify_failed: bool = False) -> None:
        super().__init__(reason)
        self.pending = pending
        self.verify_failed = verify_failed


class _MemoryTls:
    """What both ends share: an ``ssl.SSLObject`` between two memory BIOs."""

    _obj: ssl.SSLObject

    def __init__(self) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.handshake_done = False
        self.closed = False  # the peer sent close_notify

    @property
    def alpn(self) -> str | None:
        return self._obj.selected_alpn_protocol()

    def _encrypt(self, plaintext: bytes | memoryview) -> bytes:
        try:
            self._obj.write(plaintext)
        except ssl.SSLError as exc:
            raise TlsError(_describe(exc), b"") from None
        return self._out.read()

    def close(self) -> bytes:
        """Our close_notify for the peer (best effort)."""
        try:
            self._obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        return self._out.read()


class ServerTls(_MemoryTls):
    """The server end of the command's TLS session, as a sans-IO object.

    In TLS 1.3 the session tickets are written when the command's Finished is read (RFC
    8446 §4.6.1: any time after it). When its first request came with its Finished, sent
    then they would be a write, a segment and a wake-up of the command of their own,
    between its request and the answer; they are held instead and go in front of the next
    bytes for the command (``send``, ``close``), in the same segment. A client that
    resumes has them before it could use them: with the first answer on the connection. A
    Finished that came alone gets them at once: they carry the ACK the command may be
    waiting for (Nagle holds a small request back until its Finished is acknowledged, and
    the tcp stage holds that ACK for an answer: ``stages.tcp.ACK_DELAY``)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self._unsent = bytearray()  # plaintext for the command that came before the handshake ended
        self._tickets = b""  # held: see the class docstring

    def receive(self, ciphertext: bytes) -> tuple[bytes, bytes]:
        """Feed bytes from the command; returns (plaintext for upstream, bytes to send back
        to the command). Raises :class:`TlsError` when the session fails."""
        if ciphertext:
            self._in.write(ciphertext)
        plain = bytearray()
        try:
            if not self.handshake_done:
                self._obj.do_handshake()
                self.handshake_done = True
                if self._unsent:
                    self._obj.write(bytes(self._unsent))
                    self._unsent.clear()
                elif self._obj.version() == "TLSv1.3":
                    # (in TLS 1.2 this step may write our Finished, which the command awaits)
                    self._tickets = self._out.read()
            while True:
                chunk = self._obj.read(1 << 17)
                if not chunk:
                    self.closed = True  # close_notify from the command
                    break
                plain += chunk
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLZeroReturnError:
            self.closed = True
        except ssl.SSLError as exc:
            out, self._tickets = self._tickets + self._out.read(), b""  # (records in order)
            raise TlsError(_describe(exc), out) from None
        if plain:
            return bytes(plain), self._with_tickets(self._out.read())
        out, self._tickets = self._tickets + self._out.read(), b""
        return b"", out

    def send(self, plaintext: bytes | memoryview) -> bytes:
        """Encrypt bytes from upstream for the command."""
        if not self.handshake_done:
            self._unsent += plaintext
            return b""
        return self._with_tickets(self._encrypt(plaintext))

    def close(self) -> bytes:
        return self._with_tickets(super().close())

    def _with_tickets(self, wire: bytes) -> bytes:
        """``wire`` with the held session tickets in front, if any are held."""
        if wire and self._tickets:
            wire, self._tickets = self._tickets + wire, b""
        return wire


# Every ClientTls of a proxy decrypts into this one buffer, and hands out a view of it:
# the flow core uses the plaintext before the next receive() of any flow (it encrypts it
# for the command and the observers copy what they keep). A bulk download then costs no
# bytes object and no join per read. 1 MiB: one socket read (256 KiB) of records fits.
_PLAIN = memoryview(bytearray(1 << 20))
_RECORD = 1 << 14  # the most plaintext one TLS record holds (RFC 8446 §5.1)


class ClientTls(_MemoryTls):
    """The upstream end of an intercepted connection: a TLS client, as a sans-IO object.

    :meth:`start` gives the ClientHello; :meth:`receive` takes bytes from the server and
    returns (plaintext, bytes to send back); ``handshake_done`` and ``alpn`` tell when the
    session is up and what the server chose; ``closed`` that the server sent close_notify."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str,
                 session: ssl.SSLSession | None = None) -> None:
        super().__init__()
        try:
            self._obj = context.wrap_bio(self._in, self._out, server_side=False,
                                         server_hostname=server_hostname, session=session)
        except ValueError:
            if session is None:
                raise
            # A session from another context (it cannot be resumed here): a full handshake.
            self._obj = context.wrap_bio(self._in, self._out, server_side=False,
                                         server_hostname=server_hostname)

    @property
    def session(self) -> ssl.SSLSession | None:
        """The session to resume next time, once the server has sent a ticket for it."""
        session = self._obj.session
        return session if session is not None and session.has_ticket else None

    @property
    def resumed(self) -> bool:
        return self._obj.session_reused

    def start(self) -> bytes:
        """The ClientHello."""
        try:
            self._obj.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        return self._out.read()

    def receive(self, ciphertext: bytes | memoryview) -> tuple[bytes | memoryview, bytes]:
        """Feed bytes from the server; returns (plaintext, bytes for the server). The
        plaintext may be a view of a buffer that the next ``receive`` (of any ClientTls)
        overwrites: use it before then. Raises :class:`TlsError` when the session fails
        (a certificate that does not verify too)."""
        if ciphertext:
            self._in.write(ciphertext)
        buffer, size, spilled = _PLAIN, 0, []
        read = self._obj.read
        try:
            if not self.handshake_done:
                self._obj.do_handshake()
                self.handshake_done = True
            while True:
                if size + _RECORD <= len(buffer):
                    # (with a buffer, read() returns a count: typeshed says bytes)
                    n = cast(int, read(_RECORD, buffer[size:size + _RECORD]))
                    size += n
                else:  # (more than the buffer holds: the rest as bytes)
                    chunk = read(_RECORD)
                    n = len(chunk)
                    spilled.append(chunk)
                if not n:  # (only at close_notify: otherwise SSLWantReadError)
                    self.closed = True
                    break
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLZeroReturnError:
            self.closed = True
        except ssl.SSLCertVerificationError as exc:
            raise TlsError(exc.verify_message or _describe(exc), self._out.read(),
                           verify_failed=True) from None
        except ssl.SSLError as exc:
            raise TlsError(_describe(exc), self._out.read()) from None
        plain = buffer[:size] if not spilled else b"".join([buffer[:size], *spilled])
        return plain, self._out.read()

    def send(self, plaintext: bytes | memoryview) -> bytes:
        """Encrypt bytes from the command for the server."""
        return self._encrypt(plaintext)


# The alerts with which a TLS client says it does not trust a certificate (RFC 8446 §6.2),
# as OpenSSL names them, and how the user is told.
_REJECTIONS = {"UNKNOWN_CA": "unknown CA", "BAD_CERTIFICATE": "bad certificate",
               "CERTIFICATE_UNKNOWN": "certificate unknown"}


def rejection(error: TlsError) -> str | None:
    """Why the command's TLS client refused our certificate, if that is what ``error``
    (from :meth:`ServerTls.receive`) says: its alert, in words; None for other failures."""
    return next((text for alert, text in _REJECTIONS.items() if alert in str(error)), None)


def refusal(reason: TlsError | str, client_hello: bytes, verify_failed: bool = False) -> bytes:
    """What the command gets instead of a certificate when the upstream handshake failed:
    the TLS alert (bad_certificate if the server's certificate did not verify, else
    handshake_failure) that answers its ``client_hello``."""
    if isinstance(reason, TlsError):
        verify_failed = reason.verify_failed
    alert = (ssl.ALERT_DESCRIPTION_BAD_CERTIFICATE if verify_failed
             else ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE)
    try:
        ServerTls(refusing_context(alert)).receive(client_hello)
    except TlsError as err:
        return err.pending
    return b""


def refusing_context(alert: int) -> ssl.SSLContext:
    """A server context that fails every handshake with ``alert`` (an
    ``ssl.ALERT_DESCRIPTION_*`` value), sent before any certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sni_callback = lambda _obj, _name, _ctx: alert
    return context


def _describe(exc: ssl.SSLError) -> str:
    return exc.reason or exc.strerror or str(exc)
