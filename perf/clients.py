"""Small HTTP load clients for perf/bench.py (standard library only).

    python perf/clients.py seq  --url URL [--n 2000] [--deadline 60] [--proxy HOST:PORT]
    python perf/clients.py conc --url URL [--conns 50] [--seconds 5] [--proxy HOST:PORT]

``seq``: N GET requests one after the other, each on a new TCP connection
(``Connection: close``), body read in full; with an https URL, each a new TLS handshake.
``conc``: CONNS keep-alive connections, each sending GET after GET for SECONDS
(asyncio; used when ``wrk`` is not installed, and for the explicit-proxy peer).

Both print one JSON object on stdout: requests, errors, seconds, req_s and,
for ``conc``, latency percentiles in ms. With ``--proxy`` the requests go to
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


def run_seq(url: str, n: int, deadline_s: float, proxy: str | None,
            cafile: str | None = None) -> dict:
    """With an https URL every request is a new TLS handshake (no session reuse): the
    rate is handshakes per second. ``cafile`` adds a CA (direct runs); under httptap
    the default context trusts the run's CA through the injected SSL_CERT_FILE."""
    host, port, path = _target(url, proxy)
    tls = None
    if urllib.parse.urlsplit(url).scheme == "https" and not proxy:
        import ssl

        tls = ssl.create_default_context(cafile=cafile)
    host_header = urllib.parse.urlsplit(url).netloc
    done = errors = 0
    first_error = ""
    t0 = time.perf_counter()
    deadline = t0 + deadline_s
    for _ in range(n):
        if time.perf_counter() > deadline:
            break
        conn = (http.client.HTTPSConnection(host, port, timeout=10, context=tls) if tls
                else http.client.HTTPConnection(host, port, timeout=10))
        try:
            conn.request("GET", path, headers={"Host": host_header, "Connection": "close"})
            resp = conn.getresponse()
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
            "seconds": elapsed, "req_s": done / elapsed if elapsed > 0 else 0.0}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("seq")
    s.add_argument("--url", required=True)
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--deadline", type=float, default=60.0)
    s.add_argument("--proxy")
    s.add_argument("--cafile")
    c = sub.add_parser("conc")
    c.add_argument("--url", required=True)
    c.add_argument("--conns", type=int, default=50)
    c.add_argument("--seconds", type=float, default=5.0)
    c.add_argument("--proxy")
    a = ap.parse_args()
    if a.mode == "seq":
        out = run_seq(a.url, a.n, a.deadline, a.proxy, a.cafile)
    else:
        out = asyncio.run(_conc(a.url, a.conns, min(a.seconds, 120.0), a.proxy))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
