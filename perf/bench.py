"""httptap benchmark: each workload direct, under httptap and through peer tools, same run.

Run (as root: it creates a test host, a network namespace with a veth pair):

    .venv/bin/python perf/bench.py [--quick] [--only NAME,...] [--reps N]
                                   [--workers N,...] [--pin CLIENT:TOOL|auto]
                                   [--png PATH] [--json PATH] [--no-peers]

Workloads (names for --only):
  bulk_http      curl downloads a 1 GiB file over HTTP (256 MiB with --quick), MB/s
                 (10**6 B/s); also the peak memory of the tool's processes
  bulk_https     the same over TLS; under httptap decrypted (if httptap intercepts TLS)
  new_conn       2,000 sequential GETs of 1 KiB, a new TCP connection each, requests/s
  new_conn_tls   500 sequential HTTPS GETs, a new connection and TLS handshake each
                 (under httptap: two handshakes, the command's and the upstream's), requests/s
  keepalive      50 concurrent keep-alive clients for 5 s (wrk, else an asyncio client),
                 requests/s and p99 latency in ms
  new_conn_conc  50 concurrent clients for 5 s (wrk), each request on a new connection,
                 requests/s: the new-connection workload that --workers can spread
  startup        wall time of `httptap -- true` (median of 10) and of `true`

--pin puts the client and the server on some CPUs and the tool on the others (taskset;
see pinning.py), so that a --workers curve (--workers 1,2,4,8) means something on a
machine with the cores for it; with too few CPUs it says so and runs unpinned.

Every workload runs --reps times (default 3) per setup, setups interleaved
within a repetition; the table shows medians and ratio = httptap / direct.
See perf/README.md for how it measures and how to read it.

The work is split by job: procs.py (running, killing and sampling processes; cleanup),
server.py (the test host, certificates, nginx), setups.py (direct, httptap and the
peer tools), workloads.py (the clients and what each measures), report.py (table,
JSON, chart); this file parses the command line and runs the workloads in turn.

Network: traffic goes only to loopback and to the test host this script
creates; every loop is bounded in count and time; every subprocess has a
timeout; namespaces, servers and temporary files are removed on every way out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))   # testhosts.py and testca.py
# the bench modules next to this file: first, so that no module of tests/ shadows them
sys.path.insert(0, str(HERE))

from procs import REPO, on_cleanup, raise_exit, run_cleanups  # noqa: E402
from report import fmt, print_report, summarize, write_json, write_png  # noqa: E402
from server import start_server  # noqa: E402
from pinning import choose as choose_pin, pin_tree  # noqa: E402
from setups import Setup, apply_pin, make_setups  # noqa: E402
from workloads import WORKLOADS, Ctx, Measure, jobs  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20


def run_workloads(only: list[str], reps: int, setups: list[Setup],
                  job: dict[str, Callable[[Setup], Measure]]) -> dict[str, dict[str, list[Measure]]]:
    """Every workload ``reps`` times, the setups interleaved within each repetition so that
    drift in the machine's load hits them alike; a setup that fails is not repeated."""
    results: dict[str, dict[str, list[Measure]]] = {}
    for wl in only:
        per: dict[str, list[Measure]] = {s.name: [] for s in setups}
        results[wl] = per
        failed: set[str] = set()
        for rep in range(reps):
            for s in setups:
                if s.name in failed:
                    continue
                m = job[wl](s)
                per[s.name].append(m)
                if m.error:
                    failed.add(s.name)  # a failing or hanging setup: do not repeat it
                    if m.error != "not applicable":
                        print(f"bench: {wl} {s.name} rep {rep + 1} FAILED: {m.error}",
                              file=sys.stderr, flush=True)
                else:
                    extra = {k: v for k, v in m.extra.items() if k in
                             ("p99_ms", "cpu_s", "peak_rss_mb", "decrypted", "requests")}
                    print(f"bench: {wl:<10} {s.name:<11} rep {rep + 1}: {fmt(m.value):>9}"
                          f"  {extra if extra else ''}", flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="256 MiB instead of 1 GiB, 1 repetition unless --reps says otherwise")
    ap.add_argument("--only", help=f"comma-separated workloads among {','.join(WORKLOADS)}")
    ap.add_argument("--reps", type=int, help="repetitions per workload and setup (default 3; "
                    "--quick: 1)")
    ap.add_argument("--png", help="write a bar chart of ratios to this PNG file")
    ap.add_argument("--json", help="write all results (every run) to this JSON file")
    ap.add_argument("--no-peers", action="store_true", help="skip pasta, slirp4netns, mitmproxy")
    ap.add_argument("--workers", default="1",
                    help="comma-separated httptap --workers values; each value other than "
                    "the first adds a column httptap-wN (e.g. --workers 1,2)")
    ap.add_argument("--pin", metavar="CLIENT:TOOL|auto",
                    help="CPU lists (taskset syntax) for the client and server, and for the "
                    "tool: e.g. 0-3:4-15; auto: the first quarter (1-4 CPUs) for the client "
                    "and server, the rest for the tool")
    args = ap.parse_args()
    only = [w.strip() for w in args.only.split(",")] if args.only else list(WORKLOADS)
    bad = [w for w in only if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s) {bad}; choose among {', '.join(WORKLOADS)}")
    reps = args.reps if args.reps else (1 if args.quick else 3)
    reps = max(1, min(reps, 20))
    bulk_size = 256 * MiB if args.quick else GiB

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_exit)
    # Measure httptap as installed: with its modules' bytecode cached (pip compiles it at
    # install). Without this, PYTHONDONTWRITEBYTECODE (set on some machines) makes every
    # run compile every module again, tens of ms of start-up that no user pays.
    import compileall
    compileall.compile_dir(str(REPO / "httptap"), quiet=1)

    from testhosts import unavailable_reason
    reason = unavailable_reason()
    if reason:
        print(f"bench: cannot create a test host: {reason}", file=sys.stderr)
        return 2
    if not shutil.which("curl"):
        print("bench: curl is required (apt-get install curl)", file=sys.stderr)
        return 2

    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="httptap-bench-")
    os.chmod(workdir, 0o755)
    on_cleanup(lambda: shutil.rmtree(workdir, ignore_errors=True))
    try:
        server = start_server(workdir, bulk_size)
        wrk = shutil.which("wrk")
        if not wrk and "keepalive" in only:
            print("bench: wrk not found (apt-get install wrk): using the Python asyncio client, "
                  "which limits the keep-alive rate to what one Python core can send",
                  file=sys.stderr)
        ctx = Ctx(server.host, server.http_url, server.https_url, server.ca, bulk_size,
                  args.quick, wrk)
        workers = [int(w) for w in args.workers.split(",") if w.strip()] or [1]
        setups, missing = make_setups(server, workers, not args.no_peers, workdir)
        if args.pin:
            try:
                pin, why = choose_pin(args.pin, os.sched_getaffinity(0))
            except ValueError as exc:
                print(f"bench: {exc}", file=sys.stderr)
                return 2
            if pin is None:
                print(f"bench: {why}", file=sys.stderr, flush=True)
            else:
                if server.pid is not None:
                    pin_tree(server.pid, pin.client)
                apply_pin(setups, pin)
                server.description += f"; pinned: {pin.describe()}"
                print(f"bench: pinned: {pin.describe()}", flush=True)
        print(f"bench: server {server.description} on {server.host.ipv4} (namespace "
              f"{server.host.netns}); setups: {', '.join(s.name for s in setups)}"
              + (f"; not installed: {', '.join(missing)}" if missing else ""), flush=True)

        results = run_workloads(only, reps, setups, jobs(ctx, workdir))
        summary = summarize(results)
        notes = {s.name: s.note for s in setups}
        print_report(summary, notes, server.description, bulk_size, reps)
        print(f"\nbench: total {time.monotonic() - t_start:.0f}s")
        if args.json:
            write_json(args.json, summary, notes, server.description, bulk_size, reps,
                       args.quick, "wrk" if wrk else "python asyncio", missing,
                       ctx.https_relay_reason or None)
            print(f"bench: results written to {args.json}")
        if args.png:
            print(write_png(args.png, summary, list(notes)))
        return 0
    finally:
        run_cleanups()


if __name__ == "__main__":
    sys.exit(main())
