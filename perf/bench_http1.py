"""CPU time of the HTTP/1 observer per exchange and per body byte, in one process.

Run:  python perf/bench_http1.py [--reps N] [--core DIR] [--only CASE,...]

No network. A recorded keep-alive connection is fed through one ``Http1Observer`` the way
the proxy feeds it (client bytes as ``bytes``, server bytes as a ``memoryview`` of the
relay's read buffer, the events drained after every feed):

  small     ``GET /small`` (curl's head) and nginx's answer: a 1 KiB body with
            Content-Length, head and body in one read; µs per exchange
  split     the same, the response's head and body in two reads and the request in
            two pieces (a head cut by the network); µs per exchange
  chunked   a request with a few more fields, and a chunked answer of 8 chunks of
            512 bytes with a trailer-less end, in one read; µs per exchange
  gzip      ``small`` with ``Content-Encoding: gzip`` (the decoder counts the decoded
            size); µs per exchange
  large     4 MiB bodies with Content-Length, in 64 KiB reads; MB/s of body
  large_chunked  4 MiB bodies in 16 KiB chunks, in 64 KiB reads (chunk boundaries fall
            anywhere in a read); MB/s of body

Each case runs ``--reps`` times; the best run counts (the machine's noise only ever adds
time). Time is the process's CPU time. ``--core DIR`` imports ``httptap`` from DIR instead
of this checkout, to compare two versions on the same machine in the same minute, for
example ``git archive main httptap | tar -x -C /tmp/old`` then ``--core /tmp/old``
and no ``--core``, interleaved.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from typing import Any

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--reps", type=int, default=7)
ap.add_argument("--core", help="directory that holds the httptap package to measure")
ap.add_argument("--only", help="comma-separated cases to run")
args = ap.parse_args()
sys.path.insert(0, args.core or os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from httptap.http.http1 import Http1Observer  # noqa: E402

GET = (b"GET /small HTTP/1.1\r\nHost: host.httptap.local:18080\r\n"
       b"User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")
BIG_GET = (b"GET /api/items?page=2 HTTP/1.1\r\nHost: example.test\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
           b"Accept: application/json\r\nAccept-Language: en-US,en;q=0.5\r\n"
           b"Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n"
           b"Cookie: session=0123456789abcdef; theme=dark\r\n\r\n")
SMALL_BODY = bytes(range(256)) * 4


def _nginx_head(extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 22:00:00 GMT\r\n"
            b"Content-Type: application/octet-stream\r\n" + extra +
            b"Last-Modified: Tue, 01 Dec 2026 21:00:00 GMT\r\nConnection: keep-alive\r\n"
            b"ETag: \"692e0000-400\"\r\nAccept-Ranges: bytes\r\n\r\n")


def _view(data: bytes) -> memoryview:
    """Server bytes as the relay hands them on: a view of its read buffer."""
    return memoryview(bytearray(data))


def _run_exchanges(client: list[bytes], server: list[memoryview], count: int) -> float:
    """CPU seconds to feed ``count`` exchanges of the given pieces."""
    obs: Any = Http1Observer()
    now = 1.0
    t0 = time.process_time()
    for _ in range(count):
        for piece in client:
            obs.client_data(piece, now)
            obs.events()
        for view in server:
            obs.server_data(view, now)
            obs.events()
    spent = time.process_time() - t0
    assert not obs.failed, obs.error
    return spent


def small(count: int) -> float:
    body = SMALL_BODY
    resp = _nginx_head(b"Content-Length: %d\r\n" % len(body)) + body
    return _run_exchanges([GET], [_view(resp)], count) / count


def split(count: int) -> float:
    body = SMALL_BODY
    head = _nginx_head(b"Content-Length: %d\r\n" % len(body))
    return _run_exchanges([GET[:40], GET[40:]], [_view(head), _view(body)], count) / count


def chunked(count: int) -> float:
    piece = bytes(512)
    body = b"".join(b"200\r\n" + piece + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    resp = _nginx_head(b"Transfer-Encoding: chunked\r\n") + body
    return _run_exchanges([BIG_GET], [_view(resp)], count) / count


def gzipped(count: int) -> float:
    body = gzip.compress(SMALL_BODY)
    resp = _nginx_head(b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(body)) + body
    return _run_exchanges([GET], [_view(resp)], count) / count


def _reads(stream: bytes, size: int) -> list[memoryview]:
    buf = _view(stream)
    return [buf[i:i + size] for i in range(0, len(stream), size)]


BIG = 4 << 20


def large(count: int) -> float:
    stream = _nginx_head(b"Content-Length: %d\r\n" % BIG) + bytes(BIG)
    return BIG * count / _run_exchanges([GET], _reads(stream, 64 << 10), count) / 1e6


def large_chunked(count: int) -> float:
    piece = bytes(16 << 10)
    body = b"".join(b"4000\r\n" + piece + b"\r\n" for _ in range(BIG // len(piece))) + b"0\r\n\r\n"
    stream = _nginx_head(b"Transfer-Encoding: chunked\r\n") + body
    return BIG * count / _run_exchanges([GET], _reads(stream, 64 << 10), count) / 1e6


CASES = {  # name: (function, count per run, unit, higher is better)
    "small": (small, 20000, "µs/exchange", False),
    "split": (split, 20000, "µs/exchange", False),
    "chunked": (chunked, 10000, "µs/exchange", False),
    "gzip": (gzipped, 10000, "µs/exchange", False),
    "large": (large, 200, "MB/s", True),
    "large_chunked": (large_chunked, 30, "MB/s", True),
}


def main() -> None:
    names = args.only.split(",") if args.only else list(CASES)
    where = args.core or "this checkout"
    print(f"httptap from {where}, best of {args.reps}")
    for name in names:
        fn, count, unit, higher = CASES[name]
        runs = [fn(count) for _ in range(args.reps)]
        best = max(runs) if higher else min(runs) * 1e6
        print(f"  {name:14} {best:10.2f} {unit}")


if __name__ == "__main__":
    main()
