"""Throughput of httptap.plumbing.ring between two processes.

Run:  python perf/bench_ring.py [--seconds S]

The parent process is the consumer, a forked child the producer.  Each case stops
after a fixed number of records or after ``--seconds`` (default 5), whichever comes
first, so the whole run takes well under 20 s.  Prints records/s and MB/s (10**6 B)
as seen by the consumer, and how often the producer had to wait for space.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from httptap.plumbing.ring import Ring  # noqa: E402

# (name, record size, records per put_many call (1 = put), max records, ring capacity)
CASES = [
    ("64 B, put_many x256", 64, 256, 20_000_000, 4 << 20),
    ("1 KiB, put_many x64", 1024, 64, 5_000_000, 4 << 20),
    ("64 KiB, put", 64 << 10, 1, 300_000, 4 << 20),
    ("64 KiB, put_many x8", 64 << 10, 8, 300_000, 4 << 20),
]


def _produce(ring: Ring, size: int, batch: int, limit: int, seconds: float) -> None:
    payload = os.urandom(size)
    recs = [payload] * batch
    sent = 0
    deadline = time.monotonic() + seconds
    if batch == 1:
        put = ring.put
        while sent < limit:
            for _ in range(64):
                put(payload)
            sent += 64
            if time.monotonic() > deadline:
                break
    else:
        put_many = ring.put_many
        while sent < limit:
            put_many(recs)
            sent += batch
            if time.monotonic() > deadline:
                break
    ring.close_producer()


def run_case(size: int, batch: int, limit: int, capacity: int, seconds: float) -> dict[str, float]:
    ring = Ring(capacity, label="bench")
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _produce(ring, size, batch, limit, seconds)
                code = 0
            finally:
                os._exit(code)
        count = 0
        nbytes = 0
        t0 = None
        get_many = ring.get_many
        clear = ring.clear_data_fd
        while True:
            clear()
            recs = get_many(4096)
            if recs:
                if t0 is None:
                    t0 = time.perf_counter()
                    # don't count the first batch: the clock starts now
                    continue
                count += len(recs)
                nbytes += size * len(recs)
                continue
            if ring.closed:
                break
            ring.wait_data(1.0)
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("producer failed")
        st = ring.stats()
    finally:
        ring.release()
    elapsed = max(elapsed, 1e-9)
    return {
        "records": count,
        "seconds": elapsed,
        "rec_s": count / elapsed,
        "mb_s": nbytes / elapsed / 1e6,
        "waits": st["waits"],
        "wait_ms": st["wait_ns"] / 1e6,
        "high_water": st["high_water"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="time limit per case (default 4)")
    args = ap.parse_args()
    print(f"httptap.plumbing.ring: 2 processes, {os.cpu_count()} CPUs, up to {args.seconds:g} s per case")
    hdr = f"{'case':<22} {'records':>10} {'s':>6} {'records/s':>12} {'MB/s':>9} {'waits':>8} {'wait ms':>9} {'high water':>11}"
    print(hdr)
    print("-" * len(hdr))
    for name, size, batch, limit, cap in CASES:
        r = run_case(size, batch, limit, cap, args.seconds)
        print(
            f"{name:<22} {r['records']:>10,} {r['seconds']:>6.2f} {r['rec_s']:>12,.0f} "
            f"{r['mb_s']:>9,.0f} {r['waits']:>8,} {r['wait_ms']:>9,.0f} {r['high_water']:>11,}"
        )


if __name__ == "__main__":
    main()
