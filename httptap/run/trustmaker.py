"""The trust maker: a process of its own that makes the run's CA and the files that make the
command trust it, while the supervisor starts the launcher and the stages.

Role at start-up: the CA is what the command waits for longest (importing
``cryptography`` is most of it, then the trust files: the bundle, the hashed directory,
the Java trust store). Made in the supervisor, it came after the stages had been forked;
made here, in a process forked before the options are parsed (``run.early``), it
imports ``cryptography`` while the supervisor parses, and runs alongside the rest.
The maker hands the CA to each proxy stage through its :class:`~httptap.tls.pending.PendingCA`
pipe, writes the trust files into the run directory, then reports on a pipe of its own:
``b"t" + JSON`` (the environment and the bundle mounts, the message the launcher
receives) or ``b"E" + one line`` (for example a ``--ca`` directory that cannot be read),
and exits. The supervisor never holds the CA's key.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import TYPE_CHECKING, NoReturn

from . import timeline
from .config import Config

if TYPE_CHECKING:
    from ..tls.pending import PendingCA

_MAX_REPORT = 1 << 20


class TrustMaker:
    """The maker process, seen from the supervisor."""

    def __init__(self, config: Config, run_dir: str, pending: list[PendingCA]) -> None:
        self.config = config
        self.run_dir = run_dir
        self.pending = pending
        self.pid: int | None = None
        self.report_fd = -1

    def start(self, close_fds: list[int]) -> None:
        """Start the maker (forked early, ``run.early``; or now, closing ``close_fds`` in
        it: the launcher's socket). Afterwards only the maker holds the write ends of the
        proxies' pipes; the supervisor keeps ``report_fd`` (stages must close it)."""
        from . import early

        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        maker = early.take(early.TRUST_MAKER, close_fds)
        try:
            maker.start(self.config, self.run_dir, [write_fd, *(p.write_fd for p in self.pending)])
        except OSError:
            pass  # it died: its report is empty, and result() says so
        finally:
            maker.sock.close()
            os.close(write_fd)
            for pending in self.pending:
                pending.close_write()
        self.pid, self.report_fd = maker.pid, read_fd

    def result(self) -> bytes:
        """Wait for the maker's report (``b"t"...`` or ``b"E"...``) and reap it."""
        data = b""
        while len(data) < _MAX_REPORT:
            chunk = os.read(self.report_fd, 65536)
            if not chunk:
                break
            data += chunk
        self.stop()
        return data or b"Emaking the run's CA failed: its process died"

    def stop(self) -> None:
        """End the maker if it still runs, and reap it (every way out of the run)."""
        if self.report_fd >= 0:
            os.close(self.report_fd)
            self.report_fd = -1
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGKILL)  # a no-op on a process that has exited
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # reaped by the supervisor's loop already


def import_ca_modules() -> None:
    """What the maker imports while it waits for its part of the run (``run.early``)."""
    from ..tls import ca, trust  # noqa: F401


def make_with(config: Config, run_dir: object, fds: list[int], sock: socket.socket) -> NoReturn:
    """Body of the maker process, given the run (``run.early``): the report's pipe and
    the proxies' pipes come as ``fds``. Never returns."""
    code = 1
    try:
        sock.close()
        out, *pending = fds
        try:
            report = b"t" + _make_trust(config, str(run_dir), pending)
            code = 0
        except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
            from ..tls.ca import CAError

            text = str(exc) if isinstance(exc, (CAError, OSError)) else \
                f"cannot make the run's CA: {type(exc).__name__}: {exc}"
            report = b"E" + text.encode()
        view = memoryview(report)
        while view:
            view = view[os.write(out, view):]
    finally:
        os._exit(code)


def _make_trust(config: Config, run_dir: str, pending: list[int]) -> bytes:
    """The CA, sent to the proxies (``pending``: the write end of each one's pipe); the
    trust files; the launcher's message (JSON)."""
    from ..tls import trust
    from ..tls.ca import CertificateAuthority
    from ..tls.pending import send_ca

    if config.ca_dir:
        ca = CertificateAuthority.load_or_create(config.ca_dir, keylog_filename=config.keylog)
    else:
        ca = CertificateAuthority.ephemeral(keylog_filename=config.keylog)
    for fd in pending:
        send_ca(fd, ca)
    timeline.mark("CA ready")
    files = trust.build(ca.cert_pem, run_dir, os.environ)
    timeline.mark("trust files written")
    return json.dumps({
        "env": files.environ,
        "mounts": [(files.bundle_path, target) for target in files.overlay_targets],
    }).encode()
