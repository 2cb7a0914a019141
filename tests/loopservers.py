"""Small servers on the host's loopback for end-to-end tests, reached from inside
httptap's namespace as host.httptap.local (httptap maps it to 127.0.0.1).

:class:`LoopbackServer` listens on an ephemeral port of 127.0.0.1 and serves each
connection in a thread of its own (``serve``, in a subclass); ``close()`` stops
listening and waits for the threads, each bounded by its socket timeout."""

from __future__ import annotations

import socket
import threading

TIMEOUT = 30.0  # a connection's socket timeout: no thread outlives a test for long


class LoopbackServer:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self._start(self._accept)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _start(self, target, *args: object) -> None:  # noqa: ANN001
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            conn.settimeout(TIMEOUT)
            self._start(self._serve_and_close, conn)

    def _serve_and_close(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.serve(conn)
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=TIMEOUT)


def read_head(conn: socket.socket, limit: int = 65536) -> bytes:
    """Bytes up to and including the first blank line (or all there were, at EOF)."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < limit:
        chunk = conn.recv(65536)
        if not chunk:
            break
        head += chunk
    return head


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until EOF, then half-close ``dst``."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
