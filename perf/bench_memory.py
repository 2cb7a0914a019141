"""Memory of httptap's processes over many short connections: does it stay flat?

Run (as root, or as a user who may create user namespaces), from the repository:

    .venv/bin/python perf/bench_memory.py [--n 100000] [--every 10000] [--conc 4]
                                          [--workers 1] [--deadline 1200] [--json PATH]
                                          [--quiet] [--port PORT] [--https]

nginx (else a Python server) serves a 1 KiB file on 127.0.0.1:PORT (a free port unless
--port says which); httptap maps that port with ``--http PORT`` and runs
``clients.py churn``: N GETs of ``http://host.httptap.local:PORT/small``, each on a new
connection (``Connection: close``), CONC at a time. At 0 and after every EVERY requests
the client stops, all its connections finished, and waits while this script samples
RSS, PSS and USS (``/proc/PID/smaps_rollup``) and the open file descriptors of every
httptap process (supervisor, launcher, stages; not the client), then goes on. The
terminal sink is on (its lines go to a file) unless --quiet.

With --https (needs nginx) the GETs go to ``https://host.httptap.local:PORT/small``, nginx
serving TLS with a certificate from a test CA (tests/testca.py) that httptap trusts
upstream (``SSL_CERT_FILE``): every connection is two TLS handshakes, the command's with
httptap's minted certificate and httptap's with nginx. This is the case for the caches
that grow with TLS: leaf certificates, upstream sessions.

Printed: one row per checkpoint (connections, seconds, rate, totals, PSS per process),
then the growth of each process's PSS from the first checkpoint after warm-up (at a
fifth of the run) to the last, per 10,000 connections. PSS is what the processes really hold
(shared pages split among the processes that map them): the figure for the memory
target. USS is what would be freed if the process exited.

Bounded: N at most 10**7, the client stops at --deadline seconds, httptap is killed
(with its whole tree) 60 s after that; traffic goes only to 127.0.0.1 through httptap.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))   # testca.py, for --https
sys.path.insert(0, str(HERE))

from procs import REPO, is_httptap_process, kill_tree, memory_kb, on_cleanup, raise_exit, \
    run_cleanups, tool_pids  # noqa: E402

NGINX = "/usr/sbin/nginx"
SMALL = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_accepting(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    raise RuntimeError(f"127.0.0.1:{port} does not accept connections after {timeout:.0f}s")


def start_server(workdir: str, port: int, https: bool) -> tuple[str, str | None]:
    """nginx on 127.0.0.1:port serving ``small`` (else Python's threading HTTP server),
    with TLS if ``https``; returns a description and the CA file that signed its
    certificate (TLS only)."""
    www = os.path.join(workdir, "www")
    os.makedirs(www)
    Path(www, "small").write_bytes(os.urandom(SMALL))
    ca_path = None
    tls = ""
    if https:
        if not os.path.exists(NGINX):
            raise RuntimeError(f"--https needs nginx ({NGINX}): apt-get install nginx-light")
        from testca import TestCA
        ca = TestCA("httptap bench_memory CA")
        ca_path = ca.write_ca(os.path.join(workdir, "ca.pem"))
        crt, key = ca.issue_files(["host.httptap.local", "127.0.0.1"], workdir, "server")
        tls = f"ssl; ssl_certificate {crt}; ssl_certificate_key {key}"
    if os.path.exists(NGINX):
        d = os.path.join(workdir, "nginx")
        os.makedirs(d)
        conf = os.path.join(d, "nginx.conf")
        user = "user root;" if os.geteuid() == 0 else ""
        Path(conf).write_text(f"""
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/cb;
    proxy_temp_path {d}/px;
    fastcgi_temp_path {d}/fc;
    uwsgi_temp_path {d}/uw;
    scgi_temp_path {d}/sc;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{ listen 127.0.0.1:{port} {tls}; root {www}; }}
}}
""")
        log = open(os.path.join(d, "stderr.log"), "wb")  # noqa: SIM115 - closed at cleanup
        proc = subprocess.Popen([NGINX, "-c", conf, "-g", "daemon off;"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)

        def stop() -> None:
            kill_tree(proc)
            log.close()
        on_cleanup(stop)
        wait_accepting(port, 10)
        return "nginx, 1 worker" + (", TLS" if https else ""), ca_path
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=www)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    on_cleanup(httpd.shutdown)
    print(f"bench_memory: {NGINX} not found: Python's HTTP server serves (slow)",
          file=sys.stderr)
    return "python http.server", None


def label(pid: int, comm: str, root: int) -> str:
    """The stage's name; ``pid:comm`` for a process that has not named itself yet (the
    launcher is ``python`` until the command has run 0.2 s)."""
    if pid == root:
        return "supervisor"
    return comm.removeprefix("httptap-") if comm.startswith("httptap-") else f"{pid}:{comm}"


def sample(root: int) -> dict[str, dict[str, int]]:
    """Memory (kB) and open fds of each httptap process, by label."""
    out: dict[str, dict[str, int]] = {}
    for pid, comm in tool_pids(root, is_httptap_process):
        mem = memory_kb(pid)
        if mem is None:
            continue
        try:
            mem["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            mem["fds"] = 0
        name = label(pid, comm, root)
        while name in out:                     # two processes of one name: keep both
            name += "'"
        out[name] = mem
    return out


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def print_row(point: dict[str, Any], names: list[str]) -> None:
    procs = point["procs"]
    tot = {k: sum(p[k] for p in procs.values()) for k in ("rss", "pss", "uss", "fds")}
    cells = [f"{point['conns']:>8,}", f"{point['seconds']:>7.1f}", f"{point['rate']:>6.0f}",
             f"{mb(tot['pss']):>7}", f"{mb(tot['rss']):>7}", f"{mb(tot['uss']):>7}",
             f"{tot['fds']:>5}"]
    cells += [f"{mb(procs[n]['pss']) + '/' + str(procs[n]['fds']) if n in procs else '-':>10}"
              for n in names]
    print("  ".join(cells), flush=True)


def header(names: list[str]) -> None:
    cols = [f"{'conns':>8}", f"{'s':>7}", f"{'req/s':>6}", f"{'PSS MB':>7}", f"{'RSS MB':>7}",
            f"{'USS MB':>7}", f"{'fds':>5}"] + [f"{n[:10]:>10}" for n in names]
    print("  ".join(cols) + "   (per process: PSS MB/fds)", flush=True)


def growth(points: list[dict[str, Any]]) -> tuple[int, dict[str, float]]:
    """PSS growth in kB per 10,000 connections, per process and in total, from the first
    checkpoint at a fifth of the run or later (after warm-up: imports done, caches, pools
    and malloc's kept free memory at their working size) to the last; and where it starts."""
    if len(points) < 3:
        return 0, {}
    b = points[-1]
    a = next(p for p in points[1:] if p["conns"] >= b["conns"] // 5)
    span = b["conns"] - a["conns"]
    if span <= 0:
        return 0, {}
    out = {}
    for name in sorted(set(a["procs"]) & set(b["procs"])):
        out[name] = (b["procs"][name]["pss"] - a["procs"][name]["pss"]) * 10_000 / span
    out["total"] = sum(out.values())
    return a["conns"], out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="connections (default 100000)")
    ap.add_argument("--every", type=int, default=10_000, help="sample every N connections")
    ap.add_argument("--conc", type=int, default=4, help="connections at a time (default 4)")
    ap.add_argument("--workers", type=int, default=1, help="httptap --workers")
    ap.add_argument("--deadline", type=float, default=1200.0,
                    help="the client stops after this many seconds (default 1200)")
    ap.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    ap.add_argument("--quiet", action="store_true", help="httptap -q (no terminal sink)")
    ap.add_argument("--https", action="store_true",
                    help="TLS to nginx, intercepted by httptap (two handshakes a connection)")
    ap.add_argument("--json", help="write every checkpoint to this JSON file")
    args = ap.parse_args()
    n = max(1, min(args.n, 10_000_000))
    every = max(1, min(args.every, n))
    deadline = max(1.0, min(args.deadline, 3600.0))

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_exit)
    import compileall
    compileall.compile_dir(str(REPO / "httptap"), quiet=1)

    workdir = tempfile.mkdtemp(prefix="httptap-benchmem-")
    os.chmod(workdir, 0o755)
    on_cleanup(lambda: shutil.rmtree(workdir, ignore_errors=True))
    try:
        port = args.port or free_port()
        server, ca = start_server(workdir, port, args.https)
        scheme = "https" if args.https else "http"
        url = f"{scheme}://host.httptap.local:{port}/small"
        cmd = [sys.executable, "-m", "httptap", f"--{scheme}", str(port), "--stderr", "--stats"]
        env = dict(os.environ)
        if ca:
            env["SSL_CERT_FILE"] = ca   # httptap trusts nginx's certificate upstream
        if args.workers != 1:
            cmd += ["--workers", str(args.workers)]
        if args.quiet:
            cmd.append("-q")
        cmd += ["--", sys.executable, str(HERE / "clients.py"), "churn", "--url", url,
                "--n", str(n), "--every", str(every), "--conc", str(args.conc),
                "--deadline", str(deadline), "--ack-timeout", "60"]
        print(f"bench_memory: {n:,} new connections, {args.conc} at a time, to {server} on "
              f"127.0.0.1:{port} under httptap --workers {args.workers}"
              f"{' -q' if args.quiet else ''}; a sample every {every:,}", flush=True)
        err_path = os.path.join(workdir, "httptap.stderr")
        err = open(err_path, "wb")  # noqa: SIM115 - closed below
        on_cleanup(err.close)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                cwd=REPO, env=env, start_new_session=True)
        on_cleanup(lambda: kill_tree(proc))
        assert proc.stdin is not None and proc.stdout is not None
        points: list[dict[str, Any]] = []
        names: list[str] = []
        summary: dict[str, Any] = {}
        stop_at = time.monotonic() + deadline + 60
        buf = b""
        prev: tuple[int, float] = (0, 0.0)
        while time.monotonic() < stop_at and not summary:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf and not summary:
                line, buf = buf.split(b"\n", 1)
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if "checkpoint" not in data:
                    summary = data
                    break
                procs = sample(proc.pid)
                conns, secs = int(data["checkpoint"]), float(data["seconds"])
                rate = (conns - prev[0]) / (secs - prev[1]) if secs > prev[1] else 0.0
                prev = (conns, secs)
                point = {"conns": conns, "seconds": secs, "rate": rate,
                         "errors": data["errors"], "procs": procs}
                if not names or set(procs) - set(names):
                    names = sorted(set(names) | set(procs), key=lambda s: (s != "supervisor", s))
                    header(names)
                points.append(point)
                print_row(point, names)
                proc.stdin.write(b"\n")
                proc.stdin.flush()
        try:
            rc = proc.wait(timeout=max(1.0, stop_at - time.monotonic()))
        except subprocess.TimeoutExpired:
            rc = None
        proc.stdin.close()
        kill_tree(proc)
        err.close()
        stderr = Path(err_path).read_bytes()[-400_000:].decode(errors="replace")
        cut = stderr.rfind("httptap stats after")
        if cut >= 0:
            print("\n" + stderr[cut:].rstrip())
        if rc != 0 or not summary:
            tail = stderr[:cut if cut >= 0 else None].strip().splitlines()[-6:]
            print(f"bench_memory: httptap exit status {rc}; client summary {summary or 'missing'};"
                  f" last lines: {tail}", file=sys.stderr)
        if summary:
            print(f"\nclient: {summary['requests']:,} requests, {summary['errors']} errors "
                  f"{summary.get('first_error') or ''}in {summary['seconds']:.1f}s "
                  f"({summary['req_s']:.0f}/s)")
        start, g = growth(points)
        if g:
            print(f"PSS growth per 10,000 connections, {start:,} -> "
                  f"{points[-1]['conns']:,}: " + ", ".join(
                      f"{k} {v:+.0f} kB" for k, v in g.items()))
            peak = max(sum(p["pss"] for p in pt["procs"].values()) for pt in points)
            print(f"peak PSS, all processes: {mb(peak)} MB")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"n": n, "every": every, "conc": args.conc, "workers": args.workers,
                 "quiet": args.quiet, "https": args.https, "server": server, "points": points,
                 "client": summary, "growth_kb_per_10k": g, "exit_status": rc}, indent=1))
            print(f"bench_memory: written to {args.json}")
        return 0 if rc == 0 and summary else 1
    finally:
        run_cleanups()


if __name__ == "__main__":
    sys.exit(main())
