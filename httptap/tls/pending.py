"""The run's CA for a proxy stage forked before the CA exists.

Role at start-up: the proxy stages are forked before the CA exists, so that they import
their modules while the trust maker (``run.trustmaker``) makes it (importing
``cryptography`` is most of that); each proxy gets a :class:`PendingCA` instead of the
CA. Once the CA exists the maker sends its certificate and key
through a pipe (memory only, like the key itself: never a file), before the command can
start, so before any TLS connection.
The proxy reads it at its first :meth:`~PendingCA.server_context` call, which is also when
it first imports ``cryptography``: a run without TLS never does.

Imports only ``os`` and ``struct``, so the supervisor makes them without the CA's modules.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

    from .ca import CertificateAuthority

_HEADER = struct.Struct("=II")   # length of the certificate's PEM, of the key's PEM
_MAX_PEM = 1 << 20               # far more than any CA certificate or key


class PendingCA:
    """One pipe from the supervisor to one proxy stage, carrying the run's CA once."""

    def __init__(self, keylog_filename: str | None = None) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        self._keylog = keylog_filename
        self._ca: CertificateAuthority | None = None

    def send(self, ca: CertificateAuthority) -> None:
        """In the sending process: hand ``ca`` over, and close the pipe."""
        try:
            send_ca(self.write_fd, ca)
        finally:
            self.write_fd = -1
            self.close()

    def close_write(self) -> None:
        """The write end, in every process but the one that sends."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        """Both ends (after :meth:`send`, or at the end of the run)."""
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self.write_fd = -1

    def server_context(self, name: str, alpn: Sequence[str] | None = None) -> ssl.SSLContext:
        """:meth:`CertificateAuthority.server_context` of the CA, once it has arrived."""
        return self.authority().server_context(name, alpn)

    def authority(self) -> CertificateAuthority:
        """In the proxy: the CA, read from the pipe the first time (it is there already:
        the command, whose connections lead here, starts after the supervisor sent it)."""
        if self._ca is None:
            from .ca import CAError, CertificateAuthority

            header = self._read(_HEADER.size)
            cert_len, key_len = _HEADER.unpack(header) if header else (0, 0)
            if not header or cert_len + key_len > _MAX_PEM:
                raise CAError("the run's CA did not reach the proxy stage")
            pem = self._read(cert_len + key_len)
            if pem is None:
                raise CAError("the run's CA did not reach the proxy stage")
            self._ca = CertificateAuthority.from_pem(pem[:cert_len], pem[cert_len:],
                                                     keylog_filename=self._keylog)
            os.close(self.read_fd)
            self.read_fd = -1
        return self._ca

    def _read(self, size: int) -> bytes | None:
        """Exactly ``size`` bytes, or None at the end of the pipe."""
        data = b""
        while len(data) < size:
            chunk = os.read(self.read_fd, size - len(data))
            if not chunk:
                return None
            data += chunk
        return data


def send_ca(write_fd: int, ca: CertificateAuthority) -> None:
    """Write ``ca`` into a pipe's write end, and close it (the trust maker, which got the
    write ends passed). A pipe holds 64 KiB: a CA's PEMs fit and this never blocks."""
    cert, key = ca.cert_pem, ca.key_pem()
    data = memoryview(_HEADER.pack(len(cert), len(key)) + cert + key)
    try:
        while data:
            data = data[os.write(write_fd, data):]
    finally:
        os.close(write_fd)
