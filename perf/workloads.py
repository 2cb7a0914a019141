"""The workloads of perf/bench.py: which client each runs and what it measures.

Each ``w_*`` function runs its client once in one setup (``setups.Setup``) and returns
a ``Measure``: the figure (MB/s, requests/s or ms), or None and the error, and extras
for the JSON (wall time, the tool's CPU and memory, httptap's per-stage CPU from its
``--stats`` table, notes). ``jobs`` maps the names ``--only`` takes to them.

- bulk_http / bulk_https: ``curl`` downloads ``bulk``; MB/s (10**6 B/s). Under httptap
  the HTTPS client trusts httptap's CA through the injected bundle; if httptap turns out
  not to intercept TLS, the TCP relay is measured instead and marked so.
- new_conn / new_conn_tls: ``clients.py seq``, sequential GETs of ``small``, a new
  connection (and TLS handshake) each; requests/s as timed by the client.
- keepalive: ``wrk`` (else ``clients.py conc``), 50 keep-alive connections for 5 s;
  requests/s and p99 latency.
- new_conn_conc: ``wrk -H 'Connection: close'``, 50 clients for 5 s, each request on a
  new connection (wrk reconnects when the server closes): what ``--workers`` can
  spread over shards, unlike ``new_conn``'s one connection at a time. Needs wrk.
- startup: wall time of ``<tool> -- true``, median of 10 runs.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from procs import Result, run
from setups import Setup

CLIENTS = Path(__file__).resolve().parent / "clients.py"
SEQ_REQUESTS = 2000
SEQ_TLS_REQUESTS = 500       # each a full TLS handshake (both ways under httptap)
CONC_CLIENTS = 50
CONC_SECONDS = 5.0
STARTUP_RUNS = 10
WORKLOADS = ("bulk_http", "bulk_https", "new_conn", "new_conn_tls", "keepalive", "new_conn_conc",
             "startup")

@dataclass
class Ctx:
    host: Any
    http_url: str           # base URL, plain
    https_url: str | None   # base URL, TLS (nginx only)
    ca: str | None
    bulk_size: int
    quick: bool
    wrk: str | None
    https_relay_only: bool = False   # httptap was found not to intercept TLS
    https_relay_reason: str = ""


@dataclass
class Measure:
    """One run of a workload in one setup."""
    value: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


STATS_ROW = re.compile(r"^(\S+)\s+.*\s(\d+\.\d+)\s*$")


def parse_stats(stderr: str) -> dict[str, float]:
    """CPU seconds per stage from httptap's --stats table (last column, ``cpu s``)."""
    idx = stderr.rfind("httptap stats after")
    if idx < 0:
        return {}
    lines = stderr[idx:].splitlines()[2:]
    out: dict[str, float] = {}
    for line in lines[:64]:
        m = STATS_ROW.match(line)
        if not m:
            break
        out[m.group(1)] = float(m.group(2))
    return out


def _finish(setup: Setup, r: Result, m: Measure) -> Measure:
    if setup.name.startswith("httptap"):
        cpu = parse_stats(r.stderr)
        if cpu:
            m.extra["stage_cpu_s"] = cpu
            m.extra["cpu_s"] = round(sum(cpu.values()), 3)
    if r.samples:
        m.extra.update({k: round(v, 3) for k, v in r.samples.items()})
    m.extra["wall_s"] = round(r.seconds, 3)
    return m


# httptap's terminal line for a decrypted request: "---> GET https://host/path"
_HTTPS_LINE = re.compile(r"^\S*---> [A-Z]+ https://", re.M)


def w_bulk(ctx: Ctx, setup: Setup, tls: bool) -> Measure:
    base = ctx.https_url if tls else ctx.http_url
    if base is None:
        return Measure(None, error="needs nginx (TLS server)")
    limit = 60 if ctx.quick else 180
    cmd = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(limit),
           "-w", "%{speed_download} %{size_download} %{http_code}\n"]
    if setup.proxy:
        cmd += ["-x", f"http://{setup.proxy}"]
    under_httptap = setup.name.startswith("httptap")
    relay_only = under_httptap and tls and ctx.https_relay_only
    if tls:
        if setup.proxy_ca:
            cmd += ["--cacert", setup.proxy_ca]
        elif not under_httptap or relay_only:
            # under httptap the client should trust httptap's CA through the injected
            # CURL_CA_BUNDLE etc.; elsewhere (and for a relay-only httptap) the test CA
            cmd += ["--cacert", ctx.ca or ""]
    cmd.append(base + "/bulk")
    r = run(setup.prefix + cmd, timeout=limit + 30, env=setup.env, sampler=setup.sampler())
    parts = (r.stdout.strip().splitlines() or [""])[-1].split()
    if (under_httptap and tls and not relay_only and r.rc in (35, 60)
            and not _HTTPS_LINE.search(r.stderr)):
        # TLS not intercepted: curl saw the upstream's certificate, which the bundle
        # httptap injects does not trust. Measure the plain TCP relay instead, marked so.
        ctx.https_relay_only = True
        ctx.https_relay_reason = r.describe()
        print(f"bench: httptap did not intercept TLS ({r.describe()}); measuring the TCP relay "
              f"with curl --cacert <test CA> instead", file=sys.stderr, flush=True)
        return w_bulk(ctx, setup, tls)
    if r.rc != 0 or len(parts) != 3 or parts[2] != "200" or int(parts[1]) != ctx.bulk_size:
        return _finish(setup, r, Measure(None, error=r.describe()))
    m = Measure(float(parts[0]) / 1e6)
    if tls and under_httptap:
        m.extra["decrypted"] = bool(_HTTPS_LINE.search(r.stderr))
        if relay_only:
            m.extra["note"] = "TLS not intercepted; TCP relay figure (client used --cacert)"
    return _finish(setup, r, m)


def w_new_conn(ctx: Ctx, setup: Setup, tls: bool = False) -> Measure:
    deadline = 60 if ctx.quick else 120
    base = ctx.https_url if tls else ctx.http_url
    if base is None:
        return Measure(None, error="needs nginx (TLS server)")
    if tls and setup.proxy:
        return Measure(None, error="not applicable")
    n = SEQ_TLS_REQUESTS if tls else SEQ_REQUESTS
    cmd = [sys.executable, str(CLIENTS), "seq", "--url", base + "/small",
           "--n", str(n), "--deadline", str(deadline)]
    if tls and not setup.name.startswith("httptap"):
        cmd += ["--cafile", ctx.ca or ""]
    if setup.proxy:
        cmd += ["--proxy", setup.proxy]
    r = run(setup.prefix + cmd, timeout=deadline + 40, env=setup.env, sampler=setup.sampler())
    try:
        data = json.loads((r.stdout.strip().splitlines() or ["{}"])[-1])
    except ValueError:
        data = {}
    if r.rc != 0 or not data.get("requests"):
        return _finish(setup, r, Measure(None, error=r.describe()))
    m = Measure(data["req_s"], {"requests": data["requests"], "errors": data["errors"],
                                "client_s": round(data["seconds"], 3)})
    if data["errors"]:
        m.extra["first_error"] = data["first_error"]
    if data["requests"] < n:
        m.extra["note"] = f"stopped at the {deadline}s deadline"
    return _finish(setup, r, m)


_WRK_LAT = re.compile(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def _wrk_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def w_keepalive(ctx: Ctx, setup: Setup, workdir: str, close: bool = False) -> Measure:
    url = ctx.http_url + "/small"
    secs = CONC_SECONDS
    if close and not ctx.wrk:
        return Measure(None, error="needs wrk")
    if ctx.wrk:
        cmd = [ctx.wrk, "-t2", f"-c{CONC_CLIENTS}", f"-d{secs:g}s", "--timeout", "5s", "--latency"]
        if close:
            cmd += ["-H", "Connection: close"]
        if setup.proxy:
            script = os.path.join(workdir, "proxy.lua")
            Path(script).write_text(f'wrk.path = "{url}"\n')
            cmd += ["-s", script, f"http://{setup.proxy}"]
        else:
            cmd.append(url)
    else:
        cmd = [sys.executable, str(CLIENTS), "conc", "--url", url, "--conns", str(CONC_CLIENTS),
               "--seconds", str(secs)] + (["--proxy", setup.proxy] if setup.proxy else [])
    r = run(setup.prefix + cmd, timeout=secs + 60, env=setup.env, sampler=setup.sampler())
    if r.rc != 0:
        return _finish(setup, r, Measure(None, error=r.describe()))
    if ctx.wrk:
        rate = re.search(r"^Requests/sec:\s+([\d.]+)", r.stdout, re.M)
        lat = _WRK_LAT.search(r.stdout)
        total = re.search(r"^\s*(\d+) requests in", r.stdout, re.M)
        if not rate:
            return _finish(setup, r, Measure(None, error=r.describe()))
        m = Measure(float(rate.group(1)), {"client": "wrk"})
        if lat:
            m.extra["p99_ms"] = _wrk_ms(*lat.groups())
        if total:
            m.extra["requests"] = int(total.group(1))
        for pat, key in ((r"Non-2xx or 3xx responses:\s+(\d+)", "non_2xx"),
                         (r"Socket errors:(.*)", "socket_errors")):
            hit = re.search(pat, r.stdout)
            if hit:
                m.extra[key] = hit.group(1).strip()
    else:
        try:
            data = json.loads((r.stdout.strip().splitlines() or ["{}"])[-1])
        except ValueError:
            data = {}
        if not data.get("requests"):
            return _finish(setup, r, Measure(None, error=r.describe()))
        m = Measure(data["req_s"], {"client": "python asyncio", "p99_ms": data["p99_ms"],
                                    "p50_ms": data["p50_ms"], "requests": data["requests"],
                                    "errors": data["errors"]})
    return _finish(setup, r, m)


def w_startup(ctx: Ctx, setup: Setup) -> Measure:
    if setup.proxy or setup.name == "slirp4netns":
        return Measure(None, error="not applicable")
    times = []
    env = setup.env
    prefix = setup.startup_prefix if setup.startup_prefix is not None else setup.prefix
    for _ in range(STARTUP_RUNS):
        r = run(prefix + ["true"], timeout=30, env=env)
        if r.rc != 0:
            return Measure(None, error=r.describe())
        times.append(r.seconds * 1000)
    return Measure(statistics.median(times), {"runs_ms": [round(t, 1) for t in times]})



def jobs(ctx: Ctx, workdir: str) -> dict[str, Callable[[Setup], Measure]]:
    """Workload name -> one run of it in a setup."""
    return {
        "bulk_http": lambda s: w_bulk(ctx, s, False),
        "bulk_https": lambda s: w_bulk(ctx, s, True),
        "new_conn": lambda s: w_new_conn(ctx, s),
        "new_conn_tls": lambda s: w_new_conn(ctx, s, tls=True),
        "keepalive": lambda s: w_keepalive(ctx, s, workdir),
        "new_conn_conc": lambda s: w_keepalive(ctx, s, workdir, close=True),
        "startup": lambda s: w_startup(ctx, s),
    }
