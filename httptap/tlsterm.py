"""TLS towards the command, over memory BIOs: ciphertext in, plaintext out, and back.

The proxy stage owns the sockets; this class owns only an ``ssl.SSLObject`` between two
``MemoryBIO``s (the mitmproxy way), so it can be driven by the bytes the tcp stage
delivers and tested without a socket. The upstream side of an intercepted connection is
an ordinary asyncio TLS transport; see ``stages.proxy``.

A connection whose upstream handshake failed is answered with a TLS alert instead of a
certificate: :func:`refusing_context` makes a server context whose SNI callback aborts
the handshake with the alert we choose, so the command's TLS library reports a handshake
failure rather than a reset.
"""

from __future__ import annotations

import ssl


class TlsError(Exception):
    """The command's side of the handshake (or a later record) failed. ``pending`` holds
    what must still reach the command (the alert)."""

    def __init__(self, reason: str, pending: bytes) -> None:
        super().__init__(reason)
        self.pending = pending


class ServerTls:
    """The server end of the command's TLS session, as a sans-IO object."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self.handshake_done = False
        self.closed = False
        self._unsent = bytearray()  # plaintext for the command that came before the handshake ended

    @property
    def alpn(self) -> str | None:
        return self._obj.selected_alpn_protocol()

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
            out = self._out.read()
            raise TlsError(_describe(exc), out) from None
        return bytes(plain), self._out.read()

    def send(self, plaintext: bytes | memoryview) -> bytes:
        """Encrypt bytes from upstream for the command."""
        if not self.handshake_done:
            self._unsent += plaintext
            return b""
        try:
            self._obj.write(plaintext)
        except ssl.SSLError as exc:
            raise TlsError(_describe(exc), b"") from None
        return self._out.read()

    def close(self) -> bytes:
        """A close_notify for the command (best effort)."""
        try:
            self._obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        return self._out.read()


def refusing_context(alert: int) -> ssl.SSLContext:
    """A server context that fails every handshake with ``alert`` (an
    ``ssl.ALERT_DESCRIPTION_*`` value), sent before any certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sni_callback = lambda _obj, _name, _ctx: alert
    return context


def _describe(exc: ssl.SSLError) -> str:
    return exc.reason or exc.strerror or str(exc)
