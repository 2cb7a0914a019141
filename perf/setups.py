"""The setups of perf/bench.py: each a way to run a workload's client, so that one
workload is measured the same way directly, under httptap and through the peer tools.

- ``direct``: the client as is;
- ``httptap`` (and ``httptap-wN`` for ``--workers``): ``python -m httptap --http P
  --https P --stats --stderr -- <client>``, trusting the test CA upstream;
- ``pasta``: ``pasta --config-net -- <client>``;
- ``slirp4netns``: a namespace held by ``unshare --net sleep`` and wired by
  slirp4netns; clients enter it with ``nsenter -n``;
- ``mitmproxy``: ``mitmdump`` as an explicit proxy on 127.0.0.1 (PATH or $MITMDUMP).

A peer that is not installed or does not start is left out with a message. Each setup
also says which processes are the tool's, for ``procs.ToolSampler``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pinning import Pin, pin_tree
from procs import ToolSampler, is_httptap_process, kill_tree, on_cleanup, run
from server import Server, wait_accepting

@dataclass
class Setup:
    """One way to run a client: directly, under httptap, inside a peer tool's namespace,
    or through an explicit proxy."""
    name: str
    prefix: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    proxy: str | None = None            # host:port of an explicit HTTP proxy
    proxy_ca: str | None = None         # the CA a client must trust through that proxy
    is_tool: Callable[[str, list[str]], bool] | None = None
    tool_root: Callable[[], int | None] | None = None  # a daemon's pid (proxy, slirp4netns)
    note: str = ""
    startup_prefix: list[str] | None = None  # for `<tool> -- true`, when not ``prefix``

    def sampler(self) -> ToolSampler | None:
        if self.is_tool is None:
            return None
        return ToolSampler(self.is_tool, self.tool_root() if self.tool_root else None)


def httptap_setup(http_port: int, https_port: int | None, ca: str | None,
                  workers: int = 1) -> Setup:
    env = dict(os.environ)
    if ca:
        env["SSL_CERT_FILE"] = ca
    ports = ["--http", str(http_port)] + (["--https", str(https_port)] if https_port else [])
    if workers != 1:
        ports += ["--workers", str(workers)]
    return Setup("httptap" if workers == 1 else f"httptap-w{workers}",
                 [sys.executable, "-m", "httptap", *ports, "--stats", "--stderr", "--"],
                 env, is_tool=is_httptap_process,
                 note="" if workers == 1 else f"--workers {workers}",
                 startup_prefix=[sys.executable, "-m", "httptap", *ports, "--"])


def pasta_setup() -> Setup | None:
    if not shutil.which("pasta"):
        return None
    runas = ["--runas", "0"] if os.geteuid() == 0 else []
    return Setup("pasta", ["pasta", "--config-net", *runas, "-q", "--"],
                 is_tool=lambda comm, argv: comm.startswith("pasta"))


def slirp_setup(workdir: str) -> Setup | None:
    """A network namespace (``unshare --net sleep``) wired by slirp4netns; clients nsenter it."""
    if not (shutil.which("slirp4netns") and shutil.which("unshare") and shutil.which("nsenter")):
        return None
    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "3600"],
                              stdin=subprocess.DEVNULL, start_new_session=True)
    on_cleanup(lambda: kill_tree(holder))
    own = os.readlink("/proc/self/ns/net")
    for _ in range(100):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{holder.pid}/ns/net") != own:
                break
        time.sleep(0.02)
    log = open(os.path.join(workdir, "slirp4netns.log"), "wb")  # noqa: SIM115
    slirp = subprocess.Popen(["slirp4netns", "--configure", "--mtu=65520",
                              "--disable-host-loopback", str(holder.pid), "tap0"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)

    def stop_slirp() -> None:
        kill_tree(slirp)
        log.close()
    on_cleanup(stop_slirp)
    prefix = ["nsenter", "-t", str(holder.pid), "-n", "--"]
    for _ in range(100):
        r = run(prefix + ["ip", "-o", "-4", "addr", "show", "tap0"], timeout=5)
        if "10.0.2." in r.stdout:
            return Setup("slirp4netns", prefix, is_tool=lambda comm, argv: comm == "slirp4netns",
                         tool_root=lambda: slirp.pid, note="--mtu=65520")
        if slirp.poll() is not None:
            break
        time.sleep(0.05)
    print("bench: slirp4netns did not configure tap0; skipping it: "
          f"{Path(workdir, 'slirp4netns.log').read_text(errors='replace')[-400:]}",
          file=sys.stderr)
    return None


def mitmproxy_setup(workdir: str, ca: str | None) -> Setup | None:
    """mitmdump as an explicit proxy on 127.0.0.1 (from PATH, or $MITMDUMP)."""
    exe = os.environ.get("MITMDUMP") or shutil.which("mitmdump")
    if not exe:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    confdir = os.path.join(workdir, "mitmproxy")
    os.makedirs(confdir)
    cmd = [exe, "--mode", "regular", "--listen-host", "127.0.0.1", "--listen-port", str(port),
           "-q", "--set", f"confdir={confdir}", "--set", "stream_large_bodies=1m"]
    if ca:
        cmd += ["--set", f"ssl_verify_upstream_trusted_ca={ca}"]
    log = open(os.path.join(workdir, "mitmdump.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)

    def stop_mitm() -> None:
        kill_tree(proc)
        log.close()
    on_cleanup(stop_mitm)
    try:
        wait_accepting("127.0.0.1", port, 30, proc)
    except RuntimeError as exc:
        print(f"bench: mitmdump did not start ({exc}); skipping it: "
              f"{Path(workdir, 'mitmdump.log').read_text(errors='replace')[-400:]}",
              file=sys.stderr)
        return None
    proxy_ca = os.path.join(confdir, "mitmproxy-ca-cert.pem")
    version = run([exe, "--version"], timeout=30).stdout.split("\n", 1)[0].strip()
    return Setup("mitmproxy", proxy=f"127.0.0.1:{port}", proxy_ca=proxy_ca,
                 is_tool=lambda comm, argv: False, tool_root=lambda: proc.pid,
                 note=f"{version}, explicit proxy, stream_large_bodies=1m")



def make_setups(server: Server, workers: list[int], peers: bool,
                workdir: str) -> tuple[list[Setup], list[str]]:
    """direct, httptap (one per ``--workers`` value) and, with ``peers``, the peer tools
    that are installed; also the labels of the peers that are not."""
    setups = [Setup("direct"),
              httptap_setup(server.http_port, server.https_port, server.ca, workers[0])]
    setups[1].name = "httptap"
    setups += [httptap_setup(server.http_port, server.https_port, server.ca, w)
               for w in workers[1:]]
    missing = []
    if peers:
        for make, label in ((pasta_setup, "pasta (apt-get install passt)"),
                            (lambda: slirp_setup(workdir), "slirp4netns"),
                            (lambda: mitmproxy_setup(workdir, server.ca), "mitmproxy/mitmdump")):
            s = make()
            if s:
                setups.append(s)
            else:
                missing.append(label)
    return setups, missing


def apply_pin(setups: list[Setup], pin: Pin) -> None:
    """Pin each setup's client to ``pin.client`` and its tool to ``pin.tool`` (see
    pinning.py): taskset in front of the commands started per run, the mask set now on
    the daemons already running."""
    client, tool = pin.client_prefix(), pin.tool_prefix()
    for s in setups:
        if s.name == "direct":
            s.prefix = client + s.prefix
        elif s.tool_root is None:           # httptap, pasta: the tool starts the client
            s.prefix = tool + s.prefix + client
            if s.startup_prefix is not None:
                s.startup_prefix = tool + s.startup_prefix
        else:                               # slirp4netns, mitmdump: a daemon, running
            s.prefix = s.prefix + client
            root = s.tool_root()
            if root is not None:
                pin_tree(root, pin.tool)
