"""The report of perf/bench.py: medians per metric and setup, the printed table (with
ratios to direct), the CPU lines, the failures, the JSON document and the PNG chart.

``summarize`` turns the runs (workload -> setup -> list of ``Measure``) into metric ->
setup -> {median, values, errors, runs, ...}; everything below reads only that, so
the table, the JSON and the chart always agree.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from workloads import CONC_CLIENTS, SEQ_REQUESTS, SEQ_TLS_REQUESTS, WORKLOADS, Measure

MiB = 1 << 20

METRICS = [
    # key, label, unit, higher is better
    ("bulk_http", "bulk HTTP download", "MB/s", True),
    ("bulk_https", "bulk HTTPS download", "MB/s", True),
    ("new_conn", f"{SEQ_REQUESTS} GETs, new conn each", "req/s", True),
    ("new_conn_tls", f"{SEQ_TLS_REQUESTS} HTTPS GETs, new TLS each", "req/s", True),
    ("keepalive", f"{CONC_CLIENTS} keep-alive clients", "req/s", True),
    ("keepalive_p99", "  keep-alive p99 latency", "ms", False),
    ("new_conn_conc", f"{CONC_CLIENTS} clients, new conn each", "req/s", True),
    ("startup", "start-up (`-- true`)", "ms", False),
    ("peak_rss", "peak RSS of tool (bulk HTTP)", "MB", False),
    ("peak_pss", "peak PSS of tool (bulk HTTP)", "MB", False),
]


def median_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(results: dict[str, dict[str, list[Measure]]]) -> dict[str, dict[str, Any]]:
    """metric -> setup -> {median, values, errors, ...}."""
    out: dict[str, dict[str, Any]] = {}

    def put(metric: str, setup: str, values: list[float | None], ms: list[Measure]) -> None:
        med = median_or_none(values)
        entry: dict[str, Any] = {"median": med, "values": values,
                                 "errors": [m.error for m in ms if m.error]}
        cpu = [m.extra.get("cpu_s") for m in ms if m.extra.get("cpu_s") is not None]
        if cpu:
            entry["cpu_s_median"] = statistics.median(cpu)
        sampled = [m.extra.get("cpu_s_sampled") for m in ms
                   if m.extra.get("cpu_s_sampled") is not None]
        if sampled:
            entry["cpu_s_sampled_median"] = statistics.median(sampled)
        if any("decrypted" in m.extra for m in ms):
            entry["decrypted"] = all(m.extra.get("decrypted") for m in ms if m.value is not None)
        entry["runs"] = [{"value": m.value, **m.extra, **({"error": m.error} if m.error else {})}
                         for m in ms]
        out.setdefault(metric, {})[setup] = entry

    for wl, per_setup in results.items():
        for setup, ms in per_setup.items():
            if wl == "keepalive":
                put("keepalive", setup, [m.value for m in ms], ms)
                put("keepalive_p99", setup, [m.extra.get("p99_ms") if m.value is not None
                                             else None for m in ms], ms)
            else:
                put(wl, setup, [m.value for m in ms], ms)
            if wl == "bulk_http":
                put("peak_rss", setup, [m.extra.get("peak_rss_mb") for m in ms], ms)
                put("peak_pss", setup, [m.extra.get("peak_pss_mb") for m in ms], ms)
    return out


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def format_table(summary: dict[str, dict[str, Any]], setups: list[str]) -> str:
    peers = [s for s in setups if s not in ("direct", "httptap")]
    header = ["workload", "unit", "direct", "httptap", "ratio", *peers]
    rows = [header]
    notes: list[str] = []
    for key, label, unit, _higher in METRICS:
        per = summary.get(key)
        if not per:
            continue
        d = per.get("direct", {}).get("median")
        h_entry = per.get("httptap", {})
        h = h_entry.get("median")
        hcell = fmt(h) if h is not None else ("FAILED" if h_entry.get("errors") else "-")
        rcell = (fmt(ratio(h, d)) + "x") if ratio(h, d) else "-"
        if key == "bulk_https" and h is not None and not h_entry.get("decrypted", True):
            hcell, rcell = f"n/a (relay {fmt(h)})", "-"
            notes.append("n/a: httptap did not intercept TLS in this run (curl rejected the "
                         "upstream certificate with httptap's bundle; no https:// line); "
                         "'relay' is the TCP relay figure with curl --cacert <test CA>")
        row = [label, unit, fmt(d), hcell, rcell]
        for p in peers:
            e = per.get(p, {})
            v = e.get("median")
            if p.startswith("httptap") and key == "bulk_https" and \
                    not e.get("decrypted", True) and v is not None:
                row.append(f"n/a (relay {fmt(v)})")
                continue
            if v is None:
                row.append("FAILED" if e.get("errors") and "not applicable" not in
                           str(e.get("errors")) else "-")
            elif key in ("peak_rss", "peak_pss"):
                row.append(fmt(v))
            else:
                row.append(f"{fmt(v)} ({fmt(ratio(v, d))}x)" if ratio(v, d) else fmt(v))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + sorted(set(notes)))


def format_cpu(summary: dict[str, dict[str, Any]], setups: list[str]) -> str:
    lines = ["CPU seconds used by the tool's own processes per run (median; httptap: sum of the "
             "--stats `cpu s` column, [sampled from /proc]):"]
    for key in ("bulk_http", "bulk_https", "new_conn", "new_conn_tls", "keepalive",
                "new_conn_conc"):
        per = summary.get(key, {})
        cells = []
        for s in setups:
            e = per.get(s, {})
            if "cpu_s_median" in e:
                cells.append(f"{s} {e['cpu_s_median']:.2f} [{e.get('cpu_s_sampled_median', 0):.2f}]")
            elif "cpu_s_sampled_median" in e:
                cells.append(f"{s} [{e['cpu_s_sampled_median']:.2f}]")
        if cells:
            lines.append(f"  {key:<11} " + "   ".join(cells))
    return "\n".join(lines)


def stage_cpu(run: dict[str, Any], per: float) -> dict[str, float] | None:
    """One run's --stats CPU per stage kind (shards summed: ``tcp0`` + ``tcp1`` -> ``tcp``)
    divided by ``per``, and for kinds with several shards the busiest shard's share
    (``tcp max``, 0..1)."""
    cpu = run.get("stage_cpu_s")
    if not cpu or not per:
        return None
    kinds: dict[str, list[float]] = {}
    for stage, secs in cpu.items():
        kinds.setdefault(stage.rstrip("0123456789"), []).append(secs)
    out = {k: sum(v) / per for k, v in kinds.items()}
    for k, v in kinds.items():
        if len(v) > 1 and sum(v) > 0:
            out[f"{k} max"] = max(v) / sum(v)
    return out


def format_stage_cpu(summary: dict[str, dict[str, Any]], setups: list[str],
                     bulk_size: int) -> str:
    """httptap's CPU per request (µs) or per GiB (s) for each stage, median over the runs:
    the budget that says which stage saturates first when there are cores to spare."""
    lines = ["httptap CPU per request by stage (median of runs; --stats `cpu s` / requests; "
             "bulk: s per GiB; shards summed, [busiest shard's share]):"]
    for key in ("bulk_http", "bulk_https", "new_conn", "new_conn_tls", "keepalive",
                "new_conn_conc"):
        for s in setups:
            runs = summary.get(key, {}).get(s, {}).get("runs", [])
            rows = []
            for r in runs:
                if r.get("value") is None:
                    continue
                if key.startswith("bulk"):
                    row = stage_cpu(r, bulk_size / (1 << 30))
                else:
                    row = stage_cpu(r, r.get("requests", 0) / 1e6)
                if row:
                    rows.append(row)
            if not rows:
                continue
            unit = "s/GiB" if key.startswith("bulk") else "µs"
            cells = []
            for kind in ("tcp", "tun", "proxy", "sink"):
                vals = [r[kind] for r in rows if kind in r]
                if not vals:
                    continue
                cell = f"{kind} {statistics.median(vals):.{2 if unit == 's/GiB' else 0}f}"
                shares = [r[f"{kind} max"] for r in rows if f"{kind} max" in r]
                if shares:
                    cell += f" [{statistics.median(shares):.0%}]"
                cells.append(cell)
            total = statistics.median(sum(v for k, v in r.items() if not k.endswith(" max"))
                                      for r in rows)
            lines.append(f"  {key:<11} {s:<11} " + "  ".join(cells)
                         + f"  all {total:.{2 if unit == 's/GiB' else 0}f} {unit}")
    return "\n".join(lines) if len(lines) > 1 else ""


def write_png(path: str, summary: dict[str, dict[str, Any]], setups: list[str]) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (f"bench: matplotlib is not installed; no chart written to {path} "
                f"(pip install -e '.[perf]')")
    keys = [(k, lbl) for k, lbl, _u, higher in METRICS if higher and k in summary]
    tools = [s for s in setups if s != "direct"]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / max(1, len(tools))
    targets = {"bulk_http": 0.5, "bulk_https": 0.4, "new_conn": 0.2, "keepalive": 0.3}
    for i, tool in enumerate(tools):
        vals = []
        for k, _ in keys:
            d = summary[k].get("direct", {}).get("median")
            e = summary[k].get(tool, {})
            v = e.get("median") if e.get("decrypted", True) else None   # relay only: n/a
            vals.append(ratio(v, d) or 0.0)
        xs = [j + (i - (len(tools) - 1) / 2) * width for j in range(len(keys))]
        bars = ax.bar(xs, vals, width, label=tool)
        for x, v in zip(xs, vals):
            ax.annotate(f"{v:.2f}" if v else "n/a", (x, v), ha="center", va="bottom", fontsize=7)
        del bars
    for j, (k, _) in enumerate(keys):
        if k in targets:
            ax.hlines(targets[k], j - 0.45, j + 0.45, colors="black", linestyles="dashed",
                      linewidth=1, label="httptap target" if j == 0 else None)
    ax.set_xticks(range(len(keys)), [lbl for _k, lbl in keys])
    ax.set_ylabel("throughput / direct")
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.set_title(f"httptap benchmark ({platform.node()}, {os.cpu_count()} CPUs, "
                 f"{dt.datetime.now():%Y-%m-%d %H:%M})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"bench: chart written to {path}"



def print_report(summary: dict[str, dict[str, Any]], notes: dict[str, str], server: str,
                 bulk_size: int, reps: int) -> None:
    """The heading, the table, the CPU lines and the failures; ``notes`` is setup name ->
    note, in column order."""
    names = list(notes)
    print()
    print(f"httptap benchmark: {os.cpu_count()} CPUs, server {server}, bulk file "
          f"{bulk_size // MiB} MiB, {reps} repetition(s), medians; ratio = httptap/direct "
          f"(throughput: higher is better; latency, time, memory: lower is better)")
    if any(notes.values()):
        print("peers: " + "; ".join(f"{name}: {note}" for name, note in notes.items() if note))
    print()
    print(format_table(summary, names))
    print()
    print(format_cpu(summary, names))
    per_stage = format_stage_cpu(summary, names, bulk_size)
    if per_stage:
        print()
        print(per_stage)
    failures = [(wl, s, e) for wl, per in summary.items() for s, ent in per.items()
                for e in ent["errors"] if e != "not applicable" and wl in WORKLOADS]
    if failures:
        print("\nFailures:")
        for wl, s, e in failures:
            print(f"  {wl} / {s}: {e}")


def write_json(path: str, summary: dict[str, dict[str, Any]], notes: dict[str, str],
               server: str, bulk_size: int, reps: int, quick: bool, keepalive_client: str,
               missing: list[str], https_not_intercepted: str | None) -> None:
    """Every run of every metric, with how the benchmark was set up."""
    doc = {"date": dt.datetime.now().isoformat(timespec="seconds"),
           "cpus": os.cpu_count(), "server": server, "bulk_bytes": bulk_size,
           "reps": reps, "quick": quick, "setups": notes,
           "keepalive_client": keepalive_client,
           "not_installed": missing,
           "https_not_intercepted": https_not_intercepted,
           "metrics": summary}
    Path(path).write_text(json.dumps(doc, indent=1, default=str) + "\n")
