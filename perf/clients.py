"""Small HTTP load clients for perf/bench.py (standard library only).

    python perf/clients.py seq  --url URL [--n 2000] [--deadline 60] [--proxy HOST:PORT]
                                [--resume]
    python perf/clients.py conc --url URL [--conns 50] [--seconds 5] [--proxy HOST:PORT]
    python perf/clients.py churn --url URL [--n 100000] [--every 10000] [--conc 4]
                                 [--deadline 1200] [--ack-timeout 60]
    python perf/clients.py split --url URL [--n 300] [--deadline 60]

``seq``: N GET requests one after the other, each on a new TCP connection
(``Connection: close``), body read in full; with an https URL, each a new TLS handshake,
and with ``--resume`` each resumes the session of the last full one (as curl, Java and
Node clients do within one process; the default is a client that never resumes).
``conc``: CONNS keep-alive connections, each sending GET after GET for SECONDS
(asyncio; used when ``wrk`` is not installed, and for the explicit-proxy peer).

``churn``: N GETs, each on a new connection (``Connection: close``; with an https URL a
new TLS handshake too, trusting the default CA store), CONC at a time, for
perf/bench_memory.py: at 0 and after every EVERY completed requests it stops opening
connections, prints a checkpoint line (JSON: done, errors, seconds) and waits for a line on
stdin (the benchmark samples memory meanwhile; at most ACK_TIMEOUT seconds), then goes on.

``split``: N keep-alive GETs on one connection, each head written in two pieces with
Nagle on (as some clients write a request): the second piece waits for the ACK of the
first, so this shows what holding ACKs costs such a client (stages/tcp.py, ACK_DELAY; the
same probe direct to nginx on loopback meets Linux's own 40 ms delayed ACK). Prints
latency percentiles in ms.

``seq`` and ``conc`` print one JSON object on stdout: requests, errors, seconds, req_s and,
for ``conc``, latency percentiles in ms; ``churn`` ends with one like ``seq``'s. With ``--proxy`` the requests go to
that HTTP proxy in absolute form (``GET http://host:port/path``). Every loop is
bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import time
import urllib.parse


def _target(url: str, proxy: str | None) -> tuple[str, int, str]:
    u = urllib.parse.urlsplit(url)
    path = u.path or "/"
    if proxy:
        host, _, port = proxy.rpartition(":")
        return host, int(port), url
    return u.hostname or "", u.port or (443 if u.scheme == "https" else 80), path


class _ResumingConnection(http.client.HTTPSConnection):
    """An HTTPS connection that offers ``session`` (a TLS session to resume)."""

    session = None

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]
            self.sock, server_hostname=self.host, session=self.session)


def run_seq(url: str, n: int, deadline_s: float, proxy: str | None,
            cafile: str | None = None, resume: bool = False) -> dict:
    """With an https URL every request is a new TLS handshake (no session reuse, unless
    ``resume``): the rate is handshakes per second. ``cafile`` adds a CA (direct runs);
    under httptap the default context trusts the run's CA through the injected
    SSL_CERT_FILE. ``resumed`` in the result counts the handshakes that resumed."""
    host, port, path = _target(url, proxy)
    tls = None
    if urllib.parse.urlsplit(url).scheme == "https" and not proxy:
        import ssl

        tls = ssl.create_default_context(cafile=cafile)
    host_header = urllib.parse.urlsplit(url).netloc
    done = errors = resumed = 0
    session = None
    first_error = ""
    t0 = time.perf_counter()
    deadline = t0 + deadline_s
    for _ in range(n):
        if time.perf_counter() > deadline:
            break
        conn: http.client.HTTPConnection
        if tls and resume:
            conn = _ResumingConnection(host, port, timeout=10, context=tls)
            conn.session = session
        elif tls:
            conn = http.client.HTTPSConnection(host, port, timeout=10, context=tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": host_header, "Connection": "close"})
            sock = conn.sock  # (getresponse lets go of it: Connection: close)
            resp = conn.getresponse()
            if tls and resume:
                # (the tickets came before the answer's first bytes; read once per full
                # handshake: each read of the session copies it)
                if sock.session_reused:
                    resumed += 1
                else:
                    session = sock.session
            resp.read()
            if resp.status == 200:
                done += 1
            else:
                errors += 1
                first_error = first_error or f"status {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            errors += 1
            first_error = first_error or repr(exc)
        finally:
            conn.close()
    elapsed = time.perf_counter() - t0
    return {"requests": done, "errors": errors, "first_error": first_error,
            "seconds": elapsed, "req_s": done / elapsed if elapsed > 0 else 0.0,
            "resumed": resumed}


async def _conc(url: str, conns: int, seconds: float, proxy: str | None) -> dict:
    host, port, path = _target(url, proxy)
    host_header = urllib.parse.urlsplit(url).netloc
    request = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n"
               f"User-Agent: httptap-bench\r\n\r\n").encode()
    latencies: list[float] = []
    errors = 0
    first_error = ""
    stop_at = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal errors, first_error
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            errors += 1
            first_error = first_error or repr(exc)
            return
        try:
            for _ in range(10_000_000):
                if time.perf_counter() >= stop_at:
                    break
                t = time.perf_counter()
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await asyncio.wait_for(reader.readexactly(length), 10)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                    first_error = first_error or head.split(b"\r\n", 1)[0].decode(errors="replace")
                    continue
                latencies.append(time.perf_counter() - t)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError) as exc:
            errors += 1
            first_error = first_error or repr(exc)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conns)))
    elapsed = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {"requests": len(latencies), "errors": errors, "first_error": first_error,
            "seconds": elapsed, "req_s": len(latencies) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": pct(100)}


async def _churn(url: str, n: int, every: int, conc: int, deadline_s: float,
                 ack_timeout: float) -> dict:
    """Raw sockets (no http.client): a new connection per request costs the client little,
    so the rate is httptap's. The response is read to EOF (the server closes)."""
    u = urllib.parse.urlsplit(url)
    tls = None
    if u.scheme == "https":   # a full handshake each time (no session reuse)
        import ssl

        tls = ssl.create_default_context()
    host, port = u.hostname or "", u.port or (443 if tls else 80)
    request = (f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.netloc}\r\n"
               f"User-Agent: httptap-churn\r\nConnection: close\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    deadline = t0 + deadline_s
    started = done = errors = 0
    first_error = ""
    every = max(1, every)
    next_checkpoint = 0
    gate = asyncio.Event()           # set while connections may be opened
    idle = asyncio.Event()           # set when no request is in flight
    idle.set()
    in_flight = 0

    async def one() -> None:
        nonlocal done, errors, first_error, in_flight
        in_flight += 1
        idle.clear()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=tls), 10)
            writer.write(request)
            data = await asyncio.wait_for(reader.read(1 << 20), 10)
            total = data
            for _ in range(64):          # the rest of the response, up to EOF
                more = await asyncio.wait_for(reader.read(1 << 20), 10)
                if not more:
                    break
                total += more
            if total.startswith(b"HTTP/1.1 200"):
                done += 1
            else:
                errors += 1
                first_error = first_error or total[:40].decode(errors="replace")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            errors += 1
            first_error = first_error or repr(exc)
        finally:
            if writer is not None:
                writer.close()
            in_flight -= 1
            if not in_flight:
                idle.set()

    async def checkpoint() -> None:
        """All in flight finished: report, wait for the sampler's line (or its timeout)."""
        await idle.wait()
        line = json.dumps({"checkpoint": started, "done": done, "errors": errors,
                           "seconds": round(time.perf_counter() - t0, 3)})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), ack_timeout)
        except asyncio.TimeoutError:
            pass

    tasks: set[asyncio.Task] = set()
    sem = asyncio.Semaphore(max(1, conc))
    last_checkpoint = -1
    for _ in range(2 * n + 2):       # n connections and at most n + 1 checkpoints
        if started == next_checkpoint:
            await asyncio.gather(*tasks)
            await checkpoint()
            last_checkpoint = started
            if started >= n:
                break
            next_checkpoint = min(n, started + every)
        if time.perf_counter() > deadline:
            break
        await sem.acquire()
        started += 1
        task = asyncio.ensure_future(one())
        tasks.add(task)
        task.add_done_callback(lambda t: (tasks.discard(t), sem.release()))
    await asyncio.gather(*tasks)
    if last_checkpoint != started:
        await checkpoint()           # stopped at the deadline: a last point
    elapsed = time.perf_counter() - t0
    return {"requests": done, "errors": errors, "first_error": first_error,
            "seconds": elapsed, "req_s": done / elapsed if elapsed > 0 else 0.0,
            "resumed": resumed}


def run_split(url: str, n: int, deadline_s: float) -> dict:
    """See the module docstring (``split``)."""
    import socket

    host, port, path = _target(url, None)
    first = f"GET {path} HTTP/1.1\r\nHost: {urllib.parse.urlsplit(url).netloc}\r\n".encode()
    rest = b"User-Agent: httptap-perf-split\r\n\r\n"
    latencies: list[float] = []
    t0 = time.perf_counter()
    deadline = t0 + deadline_s
    with socket.create_connection((host, port), timeout=10) as sock:
        for _ in range(n):
            if time.perf_counter() > deadline:
                break
            start = time.perf_counter()
            sock.sendall(first)
            sock.sendall(rest)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("the server closed the connection")
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("the server closed the connection")
                body += chunk
            latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    elapsed = time.perf_counter() - t0

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    return {"requests": len(latencies), "errors": 0, "seconds": elapsed,
            "req_s": len(latencies) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("seq")
    s.add_argument("--url", required=True)
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--deadline", type=float, default=60.0)
    s.add_argument("--proxy")
    s.add_argument("--cafile")
    s.add_argument("--resume", action="store_true",
                   help="https: resume the TLS session of the last full handshake")
    c = sub.add_parser("conc")
    c.add_argument("--url", required=True)
    c.add_argument("--conns", type=int, default=50)
    c.add_argument("--seconds", type=float, default=5.0)
    c.add_argument("--proxy")
    h = sub.add_parser("churn")
    h.add_argument("--url", required=True)
    h.add_argument("--n", type=int, default=100_000)
    h.add_argument("--every", type=int, default=10_000)
    h.add_argument("--conc", type=int, default=4)
    h.add_argument("--deadline", type=float, default=1200.0)
    h.add_argument("--ack-timeout", type=float, default=60.0)
    p = sub.add_parser("split")
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--deadline", type=float, default=60.0)
    a = ap.parse_args()
    if a.mode == "split":
        out = run_split(a.url, min(a.n, 100_000), min(a.deadline, 600.0))
    elif a.mode == "churn":
        out = asyncio.run(_churn(a.url, min(a.n, 10_000_000), a.every, a.conc,
                                 min(a.deadline, 3600.0), a.ack_timeout))
    elif a.mode == "seq":
        out = run_seq(a.url, a.n, a.deadline, a.proxy, a.cafile, a.resume)
    else:
        out = asyncio.run(_conc(a.url, a.conns, min(a.seconds, 120.0), a.proxy))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
