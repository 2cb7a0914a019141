"""Test hosts for the end-to-end suite: upstream servers in their own network namespaces.

A ``TestHost`` is a network namespace ``httptap-th-<pid>-<n>`` joined to the
host namespace by a veth pair (``httptap-v<n>`` on the host side, ``eth0``
inside) on a private test subnet:

    host side   10.77.<n>.1/24   fd77:0:<n>::1/64
    test host   10.77.<n>.2/24   fd77:0:<n>::2/64   (default routes via the host side)

Inside it ``servers.py`` runs (see that file for the endpoints):

    80    HTTP/1.1                     8080  the same app (for ``--http`` port tests)
    443   HTTPS (ALPN h2, http/1.1)    8444  the same on a port no one lists as TLS
    8443  HTTPS, certificate for the wrong name (wrong.httptap.test, no IP)
    9443  HTTPS, expired certificate
    7     TCP echo and UDP echo        53    DNS on UDP and TCP (TXT hello.httptap.test.)

The certificates come from the session's test CA (``testca.py``), whose
certificate is ``ca_file``: run httptap with ``SSL_CERT_FILE=<ca_file>`` in its
own environment, direct clients with ``--cacert``, ``GIT_SSL_CAINFO``,
``pip --cert``. HTTPS also serves a bare git repository (``git_url()``, smart
HTTP through ``git http-backend``) and a PEP 503 index holding one wheel
(``pip_index_url``, ``wheel_name``). HTTP/2 is served only if the ``h2``
package imports in this interpreter (``has_h2``). Traffic to a test host
never leaves the machine. ``close()`` kills the servers and everything else in
the namespace, deletes the veth pair and the namespace, and removes the
generated files; it is idempotent and also runs at interpreter exit.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's ``ip``; the
``test_host`` fixture skips otherwise.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime
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
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from servers import DNS_A_NAME, DNS_TXT, DNS_TXT_NAME, MiB, pattern_bytes, pattern_chunks
from testca import session_ca

HERE = Path(__file__).resolve().parent
SERVERS_PY = HERE / "servers.py"

NETNS_PREFIX = "httptap-th-"
LINK_PREFIX = "httptap-v"          # host-side veth: httptap-v<n> (at most 12 characters)
PEER_PREFIX = "httptap-p"          # peer's name until it is moved and renamed eth0
FILES_PREFIX = "httptap-th-files-"  # temp directory of served files: <prefix><pid>-<random>
SUBNETS = range(1, 255)            # n in 10.77.<n>.0/24 and fd77:0:<n>::/64

READY_TIMEOUT = 10.0               # seconds for the servers to accept connections
IP_TIMEOUT = 15.0                  # seconds for any one `ip` command
TOOL_TIMEOUT = 15.0                # seconds for any one `git` command at setup

HTTPS_NAMES = ["test.httptap.test", "www.httptap.test"]   # plus the host's addresses
WRONG_NAME = "wrong.httptap.test"
GIT_REPO = "demo"
# The served repository: three commits on `main`; its files after the last one.
GIT_COMMITS: list[tuple[str, dict[str, str]]] = [
    ("Add README", {"README.md": "# demo\n\nA repository served by a test host.\n"}),
    ("Add hello.txt", {"hello.txt": "hello from the test host\n"}),
    ("Extend README", {"README.md": "# demo\n\nA repository served by a test host.\n\n"
                                    "Cloned over HTTPS through git http-backend.\n"}),
]
GIT_FILES = {name: text for _, files in GIT_COMMITS for name, text in files.items()}
WHEEL_PROJECT, WHEEL_VERSION = "demo-pkg", "1.0"
WHEEL_NAME = "demo_pkg-1.0-py3-none-any.whl"
WHEEL_INIT = '__version__ = "1.0"\nGREETING = "hello from demo_pkg"\n'

SESSION_FILES: dict[str, int] = {
    "small": 1024,
    "1m": 1 * MiB,
    "16m": 16 * MiB,
    "256m": 256 * MiB,
}

__all__ = [
    "DNS_A_NAME", "DNS_TXT", "DNS_TXT_NAME", "GIT_FILES", "SESSION_FILES", "TestHost",
    "TestHostError", "WHEEL_NAME", "expected_bytes", "file_bytes", "generate_files",
    "make_git_repo", "make_wheel", "session_test_host", "unavailable_reason",
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


def _teardown_netns(name: str) -> list[str]:
    """Kill what runs in ``name``, delete its veth pair and the namespace. Return problems.

    The pair is deleted from inside the namespace (its ``eth0``; the host side goes with
    it), never by the host-side name ``httptap-v<n>``: once a namespace has lost its pair
    (a concurrent teardown got there first), n is free and another run may hold
    ``httptap-v<n>`` already. Deleting that by name cut a live test host off, and its
    traffic then left through the default route."""
    problems = []
    left = _kill_netns_processes(name)
    if left:
        problems.append(f"processes still in {name}: {left}")
    proc = _ip("-n", name, "link", "del", "eth0", check=False)
    if proc.returncode != 0 and "Cannot find" not in proc.stderr and \
            "does not exist" not in proc.stderr and "No such file" not in proc.stderr:
        problems.append(f"ip -n {name} link del eth0: {proc.stderr.strip()}")
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
        _teardown_netns(name)
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


def make_git_repo(root: str, name: str = GIT_REPO) -> str:
    """Create the bare repository ``<root>/<name>.git`` of ``GIT_COMMITS``; return its head.

    One ``git fast-import`` run (fixed dates, so the commit ids are the same every time).
    """
    path = os.path.join(root, f"{name}.git")
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
               GIT_TERMINAL_PROMPT="0")
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", path], env=env,
                   check=True, capture_output=True, timeout=TOOL_TIMEOUT)
    stream = bytearray()

    def data(text: str) -> None:
        raw = text.encode()
        stream.extend(b"data %d\n%s\n" % (len(raw), raw))

    for i, (message, files) in enumerate(GIT_COMMITS, 1):
        who = f"Test Host <test@httptap.test> {1700000000 + 60 * i} +0000"
        stream.extend(f"commit refs/heads/main\nmark :{i}\nauthor {who}\n"
                      f"committer {who}\n".encode())
        data(message + "\n")
        if i > 1:
            stream.extend(f"from :{i - 1}\n".encode())
        for fname, text in files.items():
            stream.extend(f"M 644 inline {fname}\n".encode())
            data(text)
    marks = os.path.join(root, f".{name}.marks")
    subprocess.run(["git", "-C", path, "fast-import", "--quiet", f"--export-marks={marks}"],
                   input=bytes(stream), env=env, check=True, capture_output=True,
                   timeout=TOOL_TIMEOUT)
    with open(marks) as f:
        head = dict(line.split() for line in f)[f":{len(GIT_COMMITS)}"]
    os.unlink(marks)
    return head


def make_wheel(directory: str) -> str:
    """Write ``WHEEL_NAME`` (pure Python, ``demo_pkg``) into ``directory``; return its path."""
    dist_info = f"demo_pkg-{WHEEL_VERSION}.dist-info"
    members = {
        "demo_pkg/__init__.py": WHEEL_INIT.encode(),
        f"{dist_info}/METADATA": (f"Metadata-Version: 2.1\nName: {WHEEL_PROJECT}\n"
                                  f"Version: {WHEEL_VERSION}\n"
                                  "Summary: A wheel served by a test host\n").encode(),
        f"{dist_info}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: httptap-tests\n"
                               b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = []
    for name, content in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(content)}")
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = os.path.join(directory, WHEEL_NAME)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, content)
    os.chmod(path, 0o644)
    return path


# --------------------------------------------------------------------------- TestHost

class TestHost:
    """One test host: a namespace, a veth pair, addresses, routes, and the servers.

    ``TestHost(file_sizes)`` sets everything up and returns once every server
    accepts connections (or raises ``TestHostError``). Attributes:

    ``ipv4``, ``ipv6``          addresses of the test host (``ipv6`` is None without IPv6)
    ``host_ipv4``, ``host_ipv6``  the host namespace's end of the veth
    ``http_port``, ``echo_port``  80 and 7 (``udp_echo_port``: 7 as well)
    ``http_alt_port``           8080, the HTTP app again
    ``https_port``              443: HTTPS for ``ipv4``, ``ipv6``, test/www.httptap.test
    ``tls_other_port``          8444: the same HTTPS on a port outside the usual ones
    ``wrong_name_port``         8443: certificate only for wrong.httptap.test
    ``expired_port``            9443: expired certificate (otherwise like 443)
    ``dns_port``                53 (UDP and TCP)
    ``ca_file``                 PEM of the test CA that signed all of them
    ``has_h2``                  True if 443/8444 serve HTTP/2 (ALPN h2; needs ``h2``)
    ``git_url(family)``         ``https://<addr>/git/demo.git`` (``git_head``: its commit)
    ``pip_index_url``           ``https://<ipv4>/simple/``, holding ``wheel_name``
    ``files``                   name -> (size, sha256 hex) of the files under /files/
    ``netns``, ``link``, ``n``  namespace name, host-side veth name, subnet number
    ``server_pid``              pid of the servers process
    """

    __test__ = False                  # not a test class, whatever pytest thinks of the name

    http_port = 80
    echo_port = 7
    udp_echo_port = 7
    http_alt_port = 8080
    https_port = 443
    tls_other_port = 8444
    wrong_name_port = 8443
    expired_port = 9443
    dns_port = 53
    wheel_name = WHEEL_NAME

    def __init__(self, file_sizes: Mapping[str, int] | None = None, *,
                 ready_timeout: float = READY_TIMEOUT, ipv6: bool = True) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self.n: int | None = None
        self.netns: str | None = None
        self._pair_in_netns = False   # the veth peer was moved into the namespace
        self.link: str | None = None
        self.ipv4: str | None = None
        self.ipv6: str | None = None
        self.host_ipv4: str | None = None
        self.host_ipv6: str | None = None
        self.files: dict[str, tuple[int, str]] = {}
        self.files_dir: str | None = None
        self.server_pid: int | None = None
        self.ca_file: str | None = None
        self.tls_dir: str | None = None
        self.git_root: str | None = None
        self.git_head: str | None = None
        self.pip_dir: str | None = None
        self.has_h2 = False
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
        port = self.http_port if port is None else port
        return f"http://{self._authority(family, port, 80)}{path}"

    def https_url(self, path: str = "/", family: int = 4, port: int | None = None) -> str:
        """``https://<address>[:port]<path>``; ``family`` may also be a host name such as
        ``"test.httptap.test"`` (the certificate on 443 holds it; resolving it is up to you)."""
        port = self.https_port if port is None else port
        return f"https://{self._authority(family, port, 443)}{path}"

    def git_url(self, family: int = 4, repo: str = GIT_REPO) -> str:
        """``https://<address>/git/<repo>.git``: clone with ``GIT_SSL_CAINFO=<ca_file>``."""
        return self.https_url(f"/git/{repo}.git", family)

    @property
    def pip_index_url(self) -> str:
        """``https://<ipv4>/simple/``: ``pip --index-url ... --cert <ca_file>``."""
        return self.https_url("/simple/")

    def _authority(self, family: int | str, port: int, default: int) -> str:
        if isinstance(family, str):
            host = family
        elif family == 6:
            if self.ipv6 is None:
                raise TestHostError("this test host has no IPv6")
            host = f"[{self.ipv6}]"
        else:
            assert self.ipv4
            host = self.ipv4
        return host if port == default else f"{host}:{port}"

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
        os.chmod(self.files_dir, 0o755)     # ca_file must be readable when httptap drops root
        self.files = generate_files(self.files_dir, file_sizes)
        self.git_root = os.path.join(self.files_dir, ".git-root")
        self.pip_dir = os.path.join(self.files_dir, ".pip")
        self.tls_dir = os.path.join(self.files_dir, ".tls")
        for d in (self.git_root, self.pip_dir, self.tls_dir):
            os.mkdir(d, 0o755)
        self.git_head = make_git_repo(self.git_root)
        make_wheel(self.pip_dir)
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
        self._write_certificates()
        self._start_servers(ready_timeout)

    def _write_certificates(self) -> None:
        assert self.tls_dir
        ca = session_ca()
        self.ca_file = ca.write_ca(os.path.join(self.tls_dir, "ca.pem"))
        now = datetime.datetime.now(datetime.timezone.utc)
        names = [*self.addresses, *HTTPS_NAMES]
        ca.issue_files(names, self.tls_dir, "server")
        ca.issue_files([WRONG_NAME], self.tls_dir, "wrong-name")
        ca.issue_files(names, self.tls_dir, "expired",
                       not_before=now - datetime.timedelta(days=30),
                       not_after=now - datetime.timedelta(days=1))

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
                _teardown_netns(ns)
            _ip("netns", "add", ns)
            self.netns = ns
            _ip("link", "set", peer, "netns", ns)
            self._pair_in_netns = True
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
               "--echo-port", str(self.echo_port), "--udp-echo-port", str(self.udp_echo_port),
               "--http-alt-port", str(self.http_alt_port),
               "--tls-dir", str(self.tls_dir), "--https-port", str(self.https_port),
               "--tls-other-port", str(self.tls_other_port),
               "--wrong-name-port", str(self.wrong_name_port),
               "--expired-port", str(self.expired_port),
               "--git-root", str(self.git_root), "--pip-dir", str(self.pip_dir),
               "--dns-port", str(self.dns_port), "--dns-a", str(self.ipv4),
               "--exit-on-stdin-eof"]
        if self.ipv6 is None:
            cmd.append("--ipv4-only")
        else:
            cmd += ["--dns-aaaa", self.ipv6]
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
        words = got.split(b"\n", 1)[0].split()
        self.has_h2 = b"h2" in words[1:]
        if words[:1] != [b"ready"]:
            proc.poll()
            raise TestHostError(f"servers in {self.netns} failed to start "
                                f"(exit status {proc.returncode}, stdout {got[:200]!r}); "
                                f"stderr: {self._server_log()}")

    def _wait_accepting(self, deadline: float, timeout: float) -> None:
        ports = (self.http_port, self.echo_port, self.http_alt_port, self.https_port,
                 self.tls_other_port, self.wrong_name_port, self.expired_port, self.dns_port)
        targets = [(addr, port) for addr in self.addresses for port in ports]
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
                problems += _teardown_netns(self.netns)
            except (OSError, subprocess.SubprocessError) as exc:
                problems.append(f"tearing down {self.netns}: {exc!r}")
        if self.link and not self._pair_in_netns:
            # Set-up failed while both ends were still here: the pair is certainly ours.
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

