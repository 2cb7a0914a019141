"""Test hosts for the end-to-end suite: upstream servers in their own network namespaces.

A ``TestHost`` is a network namespace ``httptap-th-<pid>-<n>`` joined to the
host namespace by a veth pair (``httptap-v<n>`` on the host side, ``eth0``
inside) on a private test subnet:

    host side   10.77.<n>.1/24   fd77:0:<n>::1/64
    test host   10.77.<n>.2/24   fd77:0:<n>::2/64   (default routes via the host side)

Inside it ``servers.py`` runs an HTTP/1.1 server on port 80 and a TCP echo
server on port 7 (see that file for the endpoints). Traffic to a test host
never leaves the machine. ``close()`` kills the servers and everything else in
the namespace, deletes the veth pair and the namespace, and removes the
generated files; it is idempotent and also runs at interpreter exit.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's ``ip``; the
``test_host`` fixture skips otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from servers import MiB, pattern_bytes, pattern_chunks

HERE = Path(__file__).resolve().parent
SERVERS_PY = HERE / "servers.py"

NETNS_PREFIX = "httptap-th-"
LINK_PREFIX = "httptap-v"          # host-side veth: httptap-v<n> (at most 12 characters)
PEER_PREFIX = "httptap-p"          # peer's name until it is moved and renamed eth0
FILES_PREFIX = "httptap-th-files-"  # temp directory of served files: <prefix><pid>-<random>
SUBNETS = range(1, 255)            # n in 10.77.<n>.0/24 and fd77:0:<n>::/64

READY_TIMEOUT = 10.0               # seconds for the servers to accept connections
IP_TIMEOUT = 15.0                  # seconds for any one `ip` command

SESSION_FILES: dict[str, int] = {
    "small": 1024,
    "1m": 1 * MiB,
    "16m": 16 * MiB,
    "256m": 256 * MiB,
}

__all__ = [
    "SESSION_FILES", "TestHost", "TestHostError", "expected_bytes", "file_bytes",
    "generate_files", "session_test_host", "unavailable_reason",
]


class TestHostError(RuntimeError):
    """A test host could not be set up."""

    __test__ = False


# --------------------------------------------------------------------------- helpers

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise TestHostError(f"`ip {' '.join(args)}` failed ({proc.returncode}): "
                            f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _netns_names() -> list[str]:
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(name: str) -> list[int]:
    proc = _ip("netns", "pids", name, check=False)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, not yet reaped by its parent, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _kill_netns_processes(name: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL everything in the namespace; return pids still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    pids = _netns_pids(name)
    for _ in range(100):
        if not pids:
            return []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
        pids = _netns_pids(name)
    return pids


def _teardown_netns(name: str, link: str | None) -> list[str]:
    """Kill what runs in ``name``, delete ``link`` and the namespace. Return problems found."""
    problems = []
    left = _kill_netns_processes(name)
    if left:
        problems.append(f"processes still in {name}: {left}")
    if link:
        proc = _ip("link", "del", link, check=False)
        if proc.returncode != 0 and "Cannot find" not in proc.stderr and \
                "does not exist" not in proc.stderr:
            problems.append(f"ip link del {link}: {proc.stderr.strip()}")
    proc = _ip("netns", "del", name, check=False)
    if proc.returncode != 0 and name in _netns_names():
        problems.append(f"ip netns del {name}: {proc.stderr.strip()}")
    return problems


def _prune_stale() -> None:
    """Remove test hosts and file directories left by test runs that no longer exist."""
    for name in _netns_names():
        m = re.fullmatch(rf"{re.escape(NETNS_PREFIX)}(\d+)-(\d+)", name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        _teardown_netns(name, f"{LINK_PREFIX}{m.group(2)}")
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob(f"{FILES_PREFIX}*-*"):
        pid = path.name[len(FILES_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _subnets_in_use() -> set[int]:
    """n of every 10.77.<n>.x / fd77:0:<n>:: address or route already in the host namespace."""
    text = _ip("-o", "addr", "show").stdout + _ip("route", "show").stdout + \
        _ip("-6", "route", "show", check=False).stdout
    used = {int(m) for m in re.findall(r"\b10\.77\.(\d+)\.", text)}
    used |= {int(m) for m in re.findall(r"\bfd77:0:(\d+)::", text)}
    return used


_availability: str | None | bool = False     # False: not yet probed


def unavailable_reason() -> str | None:
    """Why test hosts cannot be made here (not root, no ``ip netns``), or None if they can."""
    global _availability
    if _availability is not False:
        return _availability  # type: ignore[return-value]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "test hosts need root (network namespaces and veth pairs; CI runs as root)"
    elif shutil.which("ip") is None:
        reason = "test hosts need iproute2's `ip`, which is not on PATH"
    else:
        probe = f"httptap-probe-{os.getpid()}"
        try:
            made = _ip("netns", "add", probe, check=False)
            if made.returncode != 0:
                reason = f"`ip netns add` does not work here: {made.stderr.strip()}"
            else:
                _ip("netns", "del", probe, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"`ip netns` is unavailable: {exc}"
    _availability = reason
    return reason


def generate_files(directory: str | os.PathLike[str],
                   sizes: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """Write each file of ``sizes`` into ``directory``; return name -> (size, sha256 hex).

    The content is ``servers.pattern_chunks(name, size)``: deterministic,
    pseudo-random, different for every name, no 4 KiB page repeated.
    """
    files = {}
    for name, size in sizes.items():
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name):
            raise ValueError(f"bad file name {name!r}")
        h = hashlib.sha256()
        with open(os.path.join(directory, name), "wb") as f:
            for chunk in pattern_chunks(name, size):
                h.update(chunk)
                f.write(chunk)
        files[name] = (size, h.hexdigest())
    return files


def file_bytes(name: str, size: int) -> bytes:
    """The content of a generated file (for small files; big ones: compare sha256)."""
    return pattern_bytes(name, size)


def expected_bytes(n: int) -> bytes:
    """What ``GET /bytes/<n>`` returns."""
    return pattern_bytes("bytes", n)


# --------------------------------------------------------------------------- TestHost

class TestHost:
    """One test host: a namespace, a veth pair, addresses, routes, and the servers.

    ``TestHost(file_sizes)`` sets everything up and returns once every server
    accepts connections (or raises ``TestHostError``). Attributes:

    ``ipv4``, ``ipv6``          addresses of the test host (``ipv6`` is None without IPv6)
    ``host_ipv4``, ``host_ipv6``  the host namespace's end of the veth
    ``http_port``, ``echo_port``  80 and 7
    ``files``                   name -> (size, sha256 hex) of the files under /files/
    ``netns``, ``link``, ``n``  namespace name, host-side veth name, subnet number
    ``server_pid``              pid of the servers process
    """

    __test__ = False                  # not a test class, whatever pytest thinks of the name

    http_port = 80
    echo_port = 7

    def __init__(self, file_sizes: Mapping[str, int] | None = None, *,
                 ready_timeout: float = READY_TIMEOUT, ipv6: bool = True) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self.n: int | None = None
        self.netns: str | None = None
        self.link: str | None = None
        self.ipv4: str | None = None
        self.ipv6: str | None = None
        self.host_ipv4: str | None = None
        self.host_ipv6: str | None = None
        self.files: dict[str, tuple[int, str]] = {}
        self.files_dir: str | None = None
        self.server_pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: str | None = None
        atexit.register(self.close)
        try:
            self._setup(dict(file_sizes if file_sizes is not None else {"small": 1024}),
                        ready_timeout, ipv6)
        except BaseException:
            self.close()
            raise

    # -- public helpers

    def url(self, path: str = "/", family: int = 4, port: int | None = None) -> str:
        """``http://<address>[:port]<path>`` of this host over IPv4 (4) or IPv6 (6)."""
        if family == 6:
            if self.ipv6 is None:
                raise TestHostError("this test host has no IPv6")
            host = f"[{self.ipv6}]"
        else:
            host = self.ipv4
        port = self.http_port if port is None else port
        return f"http://{host}{'' if port == 80 else f':{port}'}{path}"

    @property
    def addresses(self) -> list[str]:
        return [a for a in (self.ipv4, self.ipv6) if a]

    def __enter__(self) -> TestHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TestHost {self.netns} ipv4={self.ipv4} ipv6={self.ipv6}>"

    # -- setup

    def _setup(self, file_sizes: dict[str, int], ready_timeout: float, want_ipv6: bool) -> None:
        reason = unavailable_reason()
        if reason:
            raise TestHostError(reason)
        _prune_stale()

        self.files_dir = tempfile.mkdtemp(prefix=f"{FILES_PREFIX}{os.getpid()}-")
        self.files = generate_files(self.files_dir, file_sizes)
        self._log_path = os.path.join(self.files_dir, ".servers.log")

        self._allocate()
        ns, link, n = self.netns, self.link, self.n
        assert ns and link and n is not None
        self.host_ipv4, self.ipv4 = f"10.77.{n}.1", f"10.77.{n}.2"
        _ip("addr", "add", f"{self.host_ipv4}/24", "dev", link)
        _ip("link", "set", link, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{self.ipv4}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "add", "default", "via", self.host_ipv4)
        if want_ipv6:
            self._setup_ipv6(n)
        self._start_servers(ready_timeout)

    def _allocate(self) -> None:
        """Pick a free subnet number n and create the namespace and veth pair for it.

        The host-side link name ``httptap-v<n>`` is the lock: ``ip link add``
        fails if another test run already holds n.
        """
        in_use = _subnets_in_use()
        pid = os.getpid()
        for n in SUBNETS:
            if n in in_use:
                continue
            link, peer = f"{LINK_PREFIX}{n}", f"{PEER_PREFIX}{n}"
            proc = _ip("link", "add", link, "type", "veth", "peer", "name", peer, check=False)
            if proc.returncode != 0:
                if "exists" in proc.stderr:
                    continue
                raise TestHostError(f"ip link add {link}: {proc.stderr.strip()}")
            self.link, self.n = link, n
            ns = f"{NETNS_PREFIX}{pid}-{n}"
            if ns in _netns_names():          # a namespace of ours from an earlier failure
                _teardown_netns(ns, None)
            _ip("netns", "add", ns)
            self.netns = ns
            _ip("link", "set", peer, "netns", ns)
            _ip("-n", ns, "link", "set", peer, "name", "eth0")
            return
        raise TestHostError(f"no free test subnet 10.77.<n>.0/24 for n in {SUBNETS}")

    def _setup_ipv6(self, n: int) -> None:
        if not os.path.exists("/proc/sys/net/ipv6"):
            return
        ns, link = self.netns, self.link
        assert ns and link
        host6, inner6 = f"fd77:0:{n}::1", f"fd77:0:{n}::2"
        steps = [
            ("-6", "addr", "add", f"{host6}/64", "dev", link, "nodad"),
            ("-n", ns, "-6", "addr", "add", f"{inner6}/64", "dev", "eth0", "nodad"),
            ("-n", ns, "-6", "route", "add", "default", "via", host6),
        ]
        for step in steps:
            if _ip(*step, check=False).returncode != 0:
                # IPv6 disabled (on the host or this link): carry on with IPv4 only.
                _ip("-6", "addr", "flush", "dev", link, "scope", "global", check=False)
                return
        self.host_ipv6, self.ipv6 = host6, inner6

    def _start_servers(self, ready_timeout: float) -> None:
        assert self.netns and self.files_dir and self._log_path
        cmd = ["ip", "netns", "exec", self.netns, sys.executable, "-u", str(SERVERS_PY),
               "--files", self.files_dir, "--http-port", str(self.http_port),
               "--echo-port", str(self.echo_port), "--exit-on-stdin-eof"]
        if self.ipv6 is None:
            cmd.append("--ipv4-only")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        with open(self._log_path, "wb") as log:
            # The servers exit when their stdin pipe closes: when close() closes it or
            # when this process dies in any way (even SIGKILL or os._exit).
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=log, start_new_session=True, close_fds=True,
                                          env=env)
        self.server_pid = self._proc.pid
        deadline = time.monotonic() + ready_timeout
        self._wait_ready_line(deadline, ready_timeout)
        self._wait_accepting(deadline, ready_timeout)

    def _server_log(self) -> str:
        try:
            with open(self._log_path or "", "rb") as f:
                return f.read()[-4000:].decode(errors="replace").strip() or "(empty)"
        except OSError:
            return "(no log)"

    def _wait_ready_line(self, deadline: float, timeout: float) -> None:
        proc = self._proc
        assert proc and proc.stdout
        got = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in got:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestHostError(f"servers in {self.netns} did not say 'ready' within "
                                        f"{timeout:.0f} s; stderr: {self._server_log()}")
                if sel.select(min(left, 0.5)):
                    data = os.read(proc.stdout.fileno(), 4096)
                    if not data:
                        break
                    got += data
                if proc.poll() is not None:
                    break
        if got.split(b"\n", 1)[0].strip() != b"ready":
            proc.poll()
            raise TestHostError(f"servers in {self.netns} failed to start "
                                f"(exit status {proc.returncode}, stdout {got[:200]!r}); "
                                f"stderr: {self._server_log()}")

    def _wait_accepting(self, deadline: float, timeout: float) -> None:
        targets = [(addr, port) for addr in self.addresses
                   for port in (self.http_port, self.echo_port)]
        for addr, port in targets:
            last: OSError | None = None
            for _ in range(1000):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestHostError(f"{addr} port {port} in {self.netns} does not accept "
                                        f"connections after {timeout:.0f} s: {last!r}; "
                                        f"stderr: {self._server_log()}")
                try:
                    with socket.create_connection((addr, port), timeout=min(left, 2.0)):
                        break
                except OSError as exc:
                    last = exc
                    if self._proc and self._proc.poll() is not None:
                        raise TestHostError(f"servers in {self.netns} exited "
                                            f"({self._proc.returncode}); "
                                            f"stderr: {self._server_log()}") from exc
                    time.sleep(0.05)

    # -- teardown

    def close(self) -> None:
        """Kill the servers and anything else in the namespace; delete veth, namespace, files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        problems: list[str] = []
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        problems.append(f"servers process {proc.pid} survived SIGKILL")
            for pipe in (proc.stdin, proc.stdout):
                if pipe:
                    with contextlib.suppress(OSError):
                        pipe.close()
        if self.netns:
            try:
                problems += _teardown_netns(self.netns, self.link)
            except (OSError, subprocess.SubprocessError) as exc:
                problems.append(f"tearing down {self.netns}: {exc!r}")
        elif self.link:
            _ip("link", "del", self.link, check=False)
        if self.files_dir:
            shutil.rmtree(self.files_dir, ignore_errors=True)
        if problems:
            print(f"testhosts: closing {self.netns}: {'; '.join(problems)}", file=sys.stderr)


# --------------------------------------------------------------------------- fixture

@pytest.fixture(scope="session", name="test_host")
def session_test_host() -> Iterator[TestHost]:
    """One test host for the whole session, serving SESSION_FILES (small, 1m, 16m, 256m)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    host = TestHost(SESSION_FILES)
    try:
        yield host
    finally:
        host.close()

