"""End to end: a WebSocket over HTTP/2 (RFC 8441 extended CONNECT), h2c on a port
nobody named. The server (the h2 library, on the host's loopback, reached from inside as
host.httptap.local) offers SETTINGS_ENABLE_CONNECT_PROTOCOL and echoes each WebSocket
message; the client under httptap is the h2 library too (no common client speaks it).
httptap must show the CONNECT, its 200, and one line per WebSocket message."""

from __future__ import annotations

import os
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import wsframes
from loopservers import LoopbackServer
from runner import run_httptap

pytestmark = pytest.mark.root


class _H2WebSocketEcho(LoopbackServer):
    """Accepts extended CONNECTs to websocket and echoes each frame's payload, unmasked."""

    def serve(self, conn: socket.socket) -> None:
        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2conn.initiate_connection()
        h2conn.update_settings({h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1})
        conn.sendall(h2conn.data_to_send())
        while data := conn.recv(65536):
            for event in h2conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    h2conn.send_headers(event.stream_id, [(":status", "200")])
                elif isinstance(event, h2.events.DataReceived) and event.data:
                    h2conn.acknowledge_received_data(event.flow_controlled_length,
                                                     event.stream_id)
                    h2conn.send_data(event.stream_id, _echo(event.data))
            conn.sendall(h2conn.data_to_send())


def _echo(frame: bytes) -> bytes:
    """The same message back, as a server sends it (unmasked). Small frames only."""
    length = frame[1] & 0x7F
    mask, payload = frame[2:6], frame[6:6 + length]
    return wsframes.frame(frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


CLIENT = """
import socket, sys
import h2.config, h2.connection, h2.events
sys.path.insert(0, sys.argv[2])
import wsframes
sock = socket.create_connection(("host.httptap.local", int(sys.argv[1])), timeout=30)
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
sock.sendall(conn.data_to_send())
def events():
    data = sock.recv(65536)
    if not data:
        raise SystemExit("closed")
    out = conn.receive_data(data)
    sock.sendall(conn.data_to_send())
    return out
# The server's SETTINGS must have arrived before an extended CONNECT may be sent.
while not conn.remote_settings.enable_connect_protocol:
    events()
conn.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                      (":path", "/chat"), (":authority", "ws.test"),
                      ("sec-websocket-version", "13")])
sock.sendall(conn.data_to_send())
got = []
while not any(isinstance(e, h2.events.ResponseReceived) for e in got):
    got = events()
for text in (b"hello", b"again"):
    conn.send_data(1, wsframes.client(1, text))
    sock.sendall(conn.data_to_send())
    data = []
    while not data:
        data = [e.data for e in events() if isinstance(e, h2.events.DataReceived)]
    print(data[0][2:].decode())
conn.close_connection()
sock.sendall(conn.data_to_send())
sock.close()
"""


def test_a_websocket_over_h2_extended_connect_is_shown():
    server = _H2WebSocketEcho()
    try:
        tests_dir = os.path.dirname(os.path.abspath(__file__))
        r = run_httptap("--stderr", "--", sys.executable, "-c", CLIENT, str(server.port),
                        tests_dir, timeout=60)
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["hello", "again"]
    lines = [line for line in r.stderr.splitlines() if line.startswith(("--->", "<---"))]
    assert lines == [
        "---> CONNECT http://ws.test/chat", "<--- 200 http://ws.test/chat (0 bytes)",
        "---> WS text ws://ws.test/chat (5 bytes)", "<--- WS text ws://ws.test/chat (5 bytes)",
        "---> WS text ws://ws.test/chat (5 bytes)", "<--- WS text ws://ws.test/chat (5 bytes)",
    ]
