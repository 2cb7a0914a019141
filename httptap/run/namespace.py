"""The launcher: the forked child that builds the command's namespaces and becomes the command.

In order (DESIGN.md, "The namespace"):

1. unshare a user, network, mount and PID namespace (with ``--no-new-user-namespace``, as
   root, only network, mount and PID) and map the caller's uid and gid, so the command
   later runs as the caller while this process still holds every capability inside its
   new namespace;
2. open ``/dev/net/tun`` (IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, checksum offload; with
   IFF_MULTI_QUEUE one fd per tcp shard) and configure the device and ``lo`` by netlink
   (pyroute2); hand the fds to the supervisor over the Unix socket (SCM_RIGHTS),
   which starts the tcp shards on them while it makes the run's CA;
3. receive the run's trust files, and bind-mount a resolv.conf naming the gateway, an
   /etc/hosts naming ``host.httptap.local`` and CA bundles that include the run's CA
   (unless ``--no-overlay``); with ``--ca DIR``, mount an empty read-only tmpfs over DIR,
   so the command cannot read the CA's key;
4. say "ready" (with the notes for --verbose) and, without waiting for an answer,
5. fork PID 1 of the new PID namespace (``_init``), which runs the command as its child,
   passes signals on and reaps orphans; reset signals and exec the command (its
   capabilities vanish at exec: it is not root). When PID 1 exits, the kernel kills
   everything left in the namespace: nothing the command started outlives the run.

Any failure before exec is sent to the supervisor as one line ("E" + text) and the
launcher exits; the supervisor prints it and exits 125.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from . import timeline
from .config import Config
from .signalrelay import relay_signals

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_RDONLY = 0x1
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETPERSIST = 0x400454CB
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
TUN_F_CSUM = 0x01

HOST_LOOPBACK_ALIAS = "169.254.77.65"   # the proxy connects to 127.0.0.1 instead
HOST_LOOPBACK_NAME = "host.httptap.local"

# The two waiting processes (the launcher, then PID 1) swap their copy of the supervisor's
# interpreter for a small one once the command has run this long (httptap.run.signalrelay).
SHRINK_AFTER = 0.2

EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A failure to build the namespace, with a message that says what to do."""


def die_with_parent() -> None:
    """Be killed (SIGKILL) when the process that forked us exits."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(new_user_namespace: bool, sock: socket.socket) -> None:
    """Unshare the namespaces. The uid/gid maps of a new user namespace are written by the
    supervisor, which is still in the parent namespace: only a process there may map more
    than its own id (root maps the whole range, so --user and files of other owners work)."""
    flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID
    if new_user_namespace:
        flags |= CLONE_NEWUSER
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        if new_user_namespace and err in (errno.EPERM, errno.ENOSPC, errno.EINVAL):
            raise SetupError(_userns_advice(err))
        raise SetupError(f"cannot create the network namespace: {os.strerror(err)}"
                         " (run as a user allowed to create user namespaces, or as root)")
    if new_user_namespace:
        sock.sendall(b"U")
        answer = sock.recv(4096)
        if answer != b"u":
            raise SetupError(answer[1:].decode(errors="replace") or "uid mapping failed")


def write_id_maps(pid: int, uid: int, gid: int) -> None:
    """Map ids for the launcher ``pid`` (called by the supervisor, from the parent namespace)."""
    if uid == 0:
        _write(f"/proc/{pid}/uid_map", "0 0 4294967295\n")
        _write(f"/proc/{pid}/gid_map", "0 0 4294967295\n")
    else:
        # An unprivileged user may map only itself, and only after giving up setgroups.
        _write(f"/proc/{pid}/setgroups", "deny\n")
        _write(f"/proc/{pid}/uid_map", f"{uid} {uid} 1\n")
        _write(f"/proc/{pid}/gid_map", f"{gid} {gid} 1\n")


def _userns_advice(err: int) -> str:
    reasons = []
    for path, bad, fix in (
            ("/proc/sys/kernel/unprivileged_userns_clone", "0",
             "sudo sysctl -w kernel.unprivileged_userns_clone=1"),
            ("/proc/sys/user/max_user_namespaces", "0", "sudo sysctl -w user.max_user_namespaces=15000"),
            ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
             "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"),
    ):
        try:
            with open(path) as f:
                if f.read().strip() == bad:
                    reasons.append(fix)
        except OSError:
            pass
    fix = " or ".join(reasons) if reasons else (
        "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
        "user.max_user_namespaces > 0), or run as root with --no-new-user-namespace")
    return f"cannot create a user namespace ({os.strerror(err)}): unprivileged user namespaces are disabled; to allow them: {fix}"


def make_mounts_private() -> None:
    # Nothing mounted here may propagate back to the host's mount namespace.
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")


def open_tun(name: str, queues: int = 1) -> list[int]:
    """Open and create the TUN device, one file descriptor per queue. Every packet carries
    a virtio-net header, so the kernel finishes the checksums of what we write (DESIGN.md,
    speed lever 2).

    With several queues (``IFF_MULTI_QUEUE``: one per tcp shard) the kernel steers each
    flow to one queue by a symmetric hash of its addresses and ports, and then to the queue
    that last wrote a packet of that flow: a shard that writes its flows' packets on its
    own queue keeps receiving them there.

    The device is made persistent: closing its last fd then leaves it to the namespace,
    and the kernel removes both once nothing refers to the namespace any more, in the
    background. A device that is not persistent is unregistered by that last close()
    itself, which waits for RCU grace periods (~20 ms here): the last tcp shard's exit,
    and so the end of every run, waited for it. Nothing is left: the namespace is the
    command's own and dies with it."""
    flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | (IFF_MULTI_QUEUE if queues > 1 else 0)
    fds: list[int] = []
    try:
        for _ in range(queues):
            fds.append(_open_tun_queue(name, flags))
        try:
            fcntl.ioctl(fds[0], TUNSETPERSIST, 1)
        except OSError:
            pass  # then the last close() removes it, as it did before
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _open_tun_queue(name: str, flags: int) -> int:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SetupError("/dev/net/tun does not exist: load the tun module (modprobe tun); "
                         "in a container, pass the device (docker run --device /dev/net/tun)") from None
    except PermissionError:
        raise SetupError("no permission to open /dev/net/tun: most distributions make it "
                         "mode 0666 (sudo chmod 0666 /dev/net/tun), or run httptap as root") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM)
    except OSError as exc:
        os.close(fd)
        raise SetupError(f"cannot create the TUN device {name!r}: {exc.strerror}") from None
    return fd


_IPRoute: Any = None


def preload_iproute() -> Any:
    """pyroute2's IPRoute, imported without the package's ``__init__`` (once per process:
    the launcher does it while it waits for its options, ``run.early``).

    ``import pyroute2`` loads every API it has (NDB, IPDB, conntrack, nftables...): ~60 ms
    of the launcher's ~150 ms, on the path to running the command. A bare package module
    lets ``pyroute2.iproute.linux`` load alone; if that ever fails, import it normally."""
    global _IPRoute
    if _IPRoute is not None:
        return _IPRoute
    import importlib.util
    import types

    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations:
            package = types.ModuleType("pyroute2")
            package.__path__ = list(spec.submodule_search_locations)
            package.__spec__ = spec
            sys.modules["pyroute2"] = package
            try:
                from pyroute2.iproute.linux import IPRoute
                _IPRoute = IPRoute
                return IPRoute
            except Exception:  # noqa: BLE001 - fall back to the documented import
                for name in [n for n in sys.modules if n == "pyroute2" or n.startswith("pyroute2.")]:
                    del sys.modules[name]
    from pyroute2 import IPRoute
    _IPRoute = IPRoute
    return IPRoute


def configure_network(config: Config) -> list[str]:
    """Bring up lo and the TUN device with addresses and default routes; returns notes
    (e.g. IPv6 unavailable) for --verbose."""
    IPRoute = preload_iproute()

    notes: list[str] = []
    iface = config.interface
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        idx = ipr.link_lookup(ifname=config.tun)[0]
        ipr.link("set", index=idx, mtu=config.mtu, txqlen=1000, state="up")
        ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        ipr.route("add", dst="0.0.0.0/0", oif=idx)
        if os.path.exists("/proc/sys/net/ipv6"):
            iface6 = config.interface6
            try:
                # IFA_F_NODAD (0x02): usable at once; a point-to-point TUN has no neighbours.
                ipr.addr("add", index=idx, address=str(iface6.ip),
                         prefixlen=iface6.network.prefixlen, flags=0x02)
                ipr.route("add", dst="::/0", oif=idx, family=socket.AF_INET6)
            except Exception as exc:  # noqa: BLE001 - IPv6 disabled: carry on with IPv4
                notes.append(f"IPv6 not configured in the namespace: {exc}")
        else:
            notes.append("IPv6 is not available on this host: IPv4 only")
    return notes


def overlay_resolv_conf(config: Config) -> list[str]:
    """Bind-mount a resolv.conf naming the gateway over /etc/resolv.conf (following a
    symlink to its target). The source file is unlinked right after: the mount keeps it."""
    target = os.path.realpath("/etc/resolv.conf")
    if not os.path.isfile(target):
        return [f"/etc/resolv.conf ({target}) does not exist: DNS settings left alone"]
    _bind_mount_copy(f"# written by httptap\nnameserver {config.gateway}\n".encode(), target)
    return []


def overlay_hosts() -> list[str]:
    """Bind-mount a copy of /etc/hosts that also names the host's loopback alias."""
    target = os.path.realpath("/etc/hosts")
    try:
        with open(target, "rb") as f:
            hosts = f.read()
    except OSError as exc:
        return [f"/etc/hosts not readable ({exc.strerror}): host.httptap.local left to DNS"]
    if hosts and not hosts.endswith(b"\n"):
        hosts += b"\n"
    _bind_mount_copy(hosts + f"{HOST_LOOPBACK_ALIAS} {HOST_LOOPBACK_NAME}\n".encode(), target)
    return []


def _bind_mount_copy(content: bytes, target: str) -> None:
    """Mount a file holding ``content`` over ``target``. The source is a temporary file
    unlinked as soon as it is mounted: the mount keeps it, nothing is left on disk."""
    fd, path = tempfile.mkstemp(prefix="httptap-")
    try:
        os.write(fd, content)
        os.fchmod(fd, 0o644)
        os.close(fd)
        _check(_libc.mount(path.encode(), target.encode(), None, MS_BIND, None),
               f"bind-mount {target}")
    finally:
        os.unlink(path)


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def trust_paths(config: Config) -> list[str]:
    """The run's trust files the command must still reach (pure): the sources of the
    bundle mounts and every absolute path in the trust environment (``SSL_CERT_FILE``,
    ``SSL_CERT_DIR``, the Java trust store inside ``_JAVA_OPTIONS``...)."""
    paths = [source for source, _ in config.trust_mounts]
    for value in config.extra_env.values():
        for token in value.replace("=", " ").split():
            if token.startswith("/"):
                paths.append(token)
    return paths


def hides_whole_directory(ca_dir: str, keep_visible: list[str]) -> bool:
    """Whether ``--ca DIR`` (a real path) can be covered whole: not when one of the run's
    own files lies inside it (``--ca /dev/shm``, ``--ca /``); then only the key is."""
    return not any(_within(os.path.realpath(p), ca_dir) for p in keep_visible)


def hide_ca_directory(config: Config) -> list[str]:
    """Hide ``--ca DIR`` from the command: the CA's key there would let it mint
    certificates that every browser trusting the CA accepts.

    An empty read-only tmpfs covers DIR in the command's mount namespace (failing closed:
    no cover, no run). A command whose working directory is inside DIR is moved to the
    cover, since a working directory keeps reaching under a mount made after it. A
    command running as uid 0 keeps the capabilities to unmount the cover in its own
    namespaces: against such a command, ``--user`` is the protection."""
    assert config.ca_dir is not None
    directory = os.path.realpath(config.ca_dir)
    if hides_whole_directory(directory, trust_paths(config)):
        _check(_libc.mount(b"tmpfs", directory.encode(), b"tmpfs",
                           MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"mode=0555,size=4k"),
               f"hide the --ca directory {directory}")
        if _within(os.getcwd(), directory):
            os.chdir(directory)
            return [f"the working directory is inside --ca {directory}, hidden from the "
                    f"command: it starts in the empty directory that covers it"]
        return []
    from ..tls.ca import CA_KEY_FILE  # rare: not worth the import on every run

    key = os.path.join(directory, CA_KEY_FILE)
    _check(_libc.mount(b"/dev/null", key.encode(), None, MS_BIND, None),
           f"hide the CA key {key}")
    return [f"--ca {directory} holds the run's trust files: only its {CA_KEY_FILE} is hidden"]


def _receive_trust(config: Config, sock: socket.socket) -> Config:
    """The supervisor makes the run's CA files while we build the namespace, then sends
    their mounts and environment ("t" + JSON), or a failure ("E" + text)."""
    import dataclasses
    import json

    msg = sock.recv(1 << 20)
    if msg[:1] != b"t":
        raise SetupError(msg[1:].decode(errors="replace") or "the supervisor went away")
    trust = json.loads(msg[1:])
    return dataclasses.replace(
        config, extra_env={**config.extra_env, **trust["env"]},
        trust_mounts=tuple(tuple(m) for m in trust["mounts"]) if config.overlay else ())


def launch_with(config: Config, extra: object, fds: list[int], sock: socket.socket) -> NoReturn:
    """The launcher forked early (``run.early``), given its options: :func:`launch`."""
    launch(config, sock)


def launch(config: Config, sock: socket.socket) -> NoReturn:
    """Body of the launcher process once it has its options (``run.early``). Never
    returns."""
    try:
        die_with_parent()
        tun_fds, notes = _set_up(sock, lambda: _make_device(config, sock))
        # The device exists: the supervisor starts the tcp shards on it while it makes
        # the run's CA. What the command sends before they read waits in the device's
        # queue.
        socket.send_fds(sock, [b"T" + "\n".join(notes).encode()], tun_fds)
        for fd in tun_fds:
            os.close(fd)
        config, notes = _set_up(sock, lambda: _mount_trust(_receive_trust(config, sock)))
        # Nothing more to wait for: the supervisor reads this while the command starts.
        sock.sendall(b"R" + "\n".join(notes).encode())
        sock.close()
        # Our first child is PID 1 of the new PID namespace: when it exits, the kernel
        # kills every process left in the namespace, so nothing the command started
        # outlives httptap.
        init_pid = os.fork()
        if init_pid == 0:
            timeline.process("init")
            _init(config)
        os._exit(relay_signals(init_pid, keep_running=False, shrink_after=SHRINK_AFTER,
                               name="httptap-ns"))
    except Exception as exc:  # noqa: BLE001 - e.g. fork refused (RLIMIT_NPROC): one line
        _say(f"cannot start the command: {exc}")
    finally:
        os._exit(125)


_T = TypeVar("_T")


def _set_up(sock: socket.socket, step: Callable[[], _T]) -> _T:
    """Run a step of the set-up; if it fails, tell the supervisor in one line and exit."""
    try:
        return step()
    except SetupError as exc:
        sock.sendall(b"E" + str(exc).encode())
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        sock.sendall(b"E" + f"cannot set up the namespace: {exc}".encode())
    os._exit(125)


def _make_device(config: Config, sock: socket.socket) -> tuple[list[int], list[str]]:
    """The namespaces, and the TUN device configured in them: its fds and notes."""
    enter_namespaces(config.new_user_namespace, sock)
    make_mounts_private()
    timeline.mark("namespaces made")
    tun_fds = open_tun(config.tun, config.tun_queues)
    timeline.mark("TUN device open")
    try:
        notes = configure_network(config)
    except BaseException:
        for fd in tun_fds:
            os.close(fd)
        raise
    timeline.mark("TUN device up")
    return tun_fds, notes


def _mount_trust(config: Config) -> tuple[Config, list[str]]:
    """resolv.conf, hosts and the CA bundles over the host's; the --ca directory hidden."""
    timeline.mark("trust received")
    notes: list[str] = []
    if config.overlay:
        notes += overlay_resolv_conf(config) + overlay_hosts()
        for source, target in config.trust_mounts:
            _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None),
                   f"bind-mount the CA bundle on {target}")
    if config.ca_dir:
        notes += hide_ca_directory(config)
    timeline.mark("mounts done")
    return config, notes


def _say(text: str) -> None:
    """One line on stderr, for failures after the supervisor stopped listening to us."""
    try:
        print(f"httptap: {text}", file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001 - stderr closed: nothing more we can do
        pass


def _init(config: Config) -> NoReturn:
    """PID 1 of the command's PID namespace: runs the command as its child, passes signals
    on, reaps orphans, and exits with the command's status (after an interrupt, with
    ``--no-exit``)."""
    try:
        die_with_parent()
        # A /proc that shows this namespace's processes; where a container forbids it,
        # the host's /proc still works.
        _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        command_pid = os.fork()
        if command_pid == 0:
            timeline.process("command")
            _exec_command(config)
        os._exit(relay_signals(command_pid, keep_running=config.no_exit,
                               shrink_after=SHRINK_AFTER, name="httptap-init"))
    except Exception as exc:  # noqa: BLE001 - one line, never a silent 125
        _say(f"cannot start the command: {exc}")
    finally:
        os._exit(125)


def _become(run_as: tuple[int, int, str, str], env: dict[str, str]) -> None:
    """Switch to the ``--user`` identity (groups, gid, then uid: the order that works)."""
    uid, gid, name, home = run_as
    try:
        try:
            groups = os.getgrouplist(name, gid)
        except OSError:
            groups = [gid]
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    except (OSError, OverflowError) as exc:  # OverflowError: an id beyond 32 bits
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        print(f"httptap: cannot run the command as {name} (uid {uid}): {reason}",
              file=sys.stderr, flush=True)
        os._exit(125)
    env.update(HOME=home, USER=name, LOGNAME=name)


def _exec_command(config: Config) -> NoReturn:
    timeline.mark("exec")  # before SIGPIPE is back to its default: -v into a closed pipe
    # Undo what the supervisor set up for itself: blocked signals, Python's SIGPIPE
    # and SIGINT handling. The command must start with the defaults a shell gives it.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGQUIT,
                signal.SIGHUP, signal.SIGCHLD, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    env = dict(os.environ)
    env["HTTPTAP"] = "1"
    env.update(config.extra_env)
    if config.run_as is not None:
        _become(config.run_as, env)
    argv = list(config.command)
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        print(f"httptap: command not found: {argv[0]}", file=sys.stderr, flush=True)
        os._exit(EXIT_NOT_FOUND)
    except PermissionError:
        print(f"httptap: permission denied: cannot execute {argv[0]}", file=sys.stderr, flush=True)
        os._exit(EXIT_NOT_EXECUTABLE)
    except OSError as exc:
        print(f"httptap: cannot execute {argv[0]}: {exc.strerror}", file=sys.stderr, flush=True)
        os._exit(EXIT_NOT_EXECUTABLE)
    except ValueError as exc:  # an empty name, a NUL byte in an argument or variable
        print(f"httptap: cannot execute {argv[0]!r}: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_NOT_EXECUTABLE)
