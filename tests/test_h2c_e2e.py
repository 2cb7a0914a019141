"""End to end: HTTP/2 over cleartext reached through an HTTP/1.1 ``Upgrade: h2c``.

curl ``--http2`` on an http:// URL asks for the upgrade; a small server on the host's
loopback (the h2 library, reached from inside as host.httptap.local) grants it and
answers the upgraded request on stream 1. httptap must show the request once, with its
HTTP/2 answer, not the 101."""

from __future__ import annotations

import shutil
import socket

import h2.config
import h2.connection
import h2.events
import pytest
from loopservers import LoopbackServer, read_head
from runner import run_httptap

pytestmark = pytest.mark.root

BODY = b"upgraded!\n"


class _H2cServer(LoopbackServer):
    """Grants every ``Upgrade: h2c`` and answers each stream with BODY."""

    def serve(self, conn: socket.socket) -> None:
        head = read_head(conn)
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2conn.initiate_upgrade_connection(fields[b"HTTP2-Settings"])
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                     b"Upgrade: h2c\r\n\r\n" + h2conn.data_to_send())
        self._answer(h2conn, 1)
        conn.sendall(h2conn.data_to_send())
        while data := conn.recv(65536):
            for event in h2conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    self._answer(h2conn, event.stream_id)
            conn.sendall(h2conn.data_to_send())

    @staticmethod
    def _answer(h2conn: h2.connection.H2Connection, stream: int) -> None:
        h2conn.send_headers(stream, [(":status", "200"), ("content-length", str(len(BODY)))])
        h2conn.send_data(stream, BODY, end_stream=True)


def test_curl_h2c_upgrade_is_shown_as_one_exchange(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    server = _H2cServer()
    try:
        url = f"http://host.httptap.local:{server.port}/up"
        r = run_httptap("--stderr", "--", "curl", "-sS", "--http2", "-o", str(tmp_path / "out"),
                        "-w", "%{http_version}", url, timeout=60)
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout == "2"  # curl got its answer over HTTP/2
    assert (tmp_path / "out").read_bytes() == BODY
    lines = [line for line in r.stderr.splitlines() if line.startswith(("--->", "<---"))]
    assert lines == [f"---> GET {url}", f"<--- 200 {url} ({len(BODY)} bytes)"]
