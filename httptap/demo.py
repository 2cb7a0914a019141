"""``python -m httptap.demo``: see httptap work without a network.

Starts a small web server on the host's loopback (127.0.0.1, a free port), then runs
``httptap -- python <client>`` where the client fetches two pages from
``http://host.httptap.local:PORT/`` — the name httptap gives the host's loopback inside
its namespace. httptap's own lines show what the client did; the client prints what it
received. Exits with httptap's exit status.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading

PAGE = b"<!doctype html><title>httptap demo</title><h1>Hello from the host's loopback</h1>\n"

CLIENT = """
import json, urllib.request
base = "http://host.httptap.local:%d"
with urllib.request.urlopen(base + "/") as r:
    print("client: GET / ->", r.status, len(r.read()), "bytes")
req = urllib.request.Request(base + "/api/echo", data=json.dumps({"hello": "httptap"}).encode(),
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req) as r:
    print("client: POST /api/echo ->", r.status, r.read().decode())
"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._reply(200, "text/html", PAGE)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._reply(200, "application/json", body)

    def _reply(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def main() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    print(f"demo: serving on 127.0.0.1:{port}; running the client under httptap", flush=True)
    try:
        return subprocess.call([sys.executable, "-m", "httptap", "--http", str(port), *sys.argv[1:], "--",
                                sys.executable, "-c", CLIENT % port])
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
