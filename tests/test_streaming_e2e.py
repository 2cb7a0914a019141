"""End to end: ``--body`` prints a server-sent-events stream as it arrives.

A small SSE server on the host's loopback (reached from inside as host.httptap.local)
sends one event, then waits until this test has seen that event in httptap's output
before it sends the second and ends the stream. Were the body printed only at its end,
the first event would never show while the server waits: the test would fail at its
deadline instead of hanging."""

from __future__ import annotations

import http.server
import os
import selectors
import subprocess
import threading
import time

import pytest
from runner import httptap_argv

pytestmark = pytest.mark.root

DEADLINE = 60.0


class _Events(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen_first = threading.Event()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self._chunk(b"data: one\n\n")
        self.seen_first.wait(DEADLINE)
        self._chunk(b"data: two\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


def test_sse_lines_print_before_the_stream_ends():
    _Events.seen_first.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Events)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://host.httptap.local:{server.server_address[1]}/events"
    proc = subprocess.Popen(httptap_argv("--body", "--", "curl", "-sS", "-N", "-o", "/dev/null",
                                         url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = b""
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + DEADLINE
        while b"data: one\n" not in out and time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                out += proc.stdout.read() or b""
        first_seen_early = b"data: one\n" in out and b"data: two" not in out
        _Events.seen_first.set()  # the stream may end now
        rest, err = proc.communicate(timeout=DEADLINE)
        out += rest
    finally:
        _Events.seen_first.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, err
    assert first_seen_early, out
    assert out.decode().splitlines() == [
        f"---> GET {url}", f"<--- 200 {url} (streaming)", "data: one", "", "data: two", "",
        f"<--- 200 {url} (22 bytes)"]
