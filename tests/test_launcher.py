"""The launcher forked first (httptap.run.launcher): it imports pyroute2 while the
supervisor parses, and is ended on every way out that does not start it."""

from __future__ import annotations

import subprocess
import sys


def python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter: forks there, never in the test process."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_importing_pyroute2_starts_no_thread():
    """The launcher calls unshare(CLONE_NEWUSER) after the import, which a process with a
    second thread may not do (EINVAL)."""
    r = python("import os\n"
               "from httptap.run.namespace import preload_iproute\n"
               "preload_iproute().__name__\n"
               "print(len(os.listdir('/proc/self/task')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1"]


def test_a_launcher_never_started_is_ended_and_reaped():
    r = python("import os\n"
               "from httptap.run import launcher\n"
               "launcher.fork_early()\n"
               "pid = launcher._early.pid\n"
               "launcher.discard()\n"
               "try:\n"
               "    os.waitpid(pid, 0)\n"
               "    print('not reaped')\n"
               "except ChildProcessError:\n"
               "    print('reaped')\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["reaped"]


def test_a_launcher_whose_supervisor_closed_the_socket_exits_quietly():
    r = python("import os\n"
               "from httptap.run.launcher import Launcher\n"
               "launcher = Launcher()\n"
               "launcher.sock.close()\n"
               "_, status = os.waitpid(launcher.pid, 0)\n"
               "print(os.waitstatus_to_exitcode(status))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0"] and r.stderr == ""


def test_a_launcher_given_options_becomes_the_namespace_and_asks_for_its_ids():
    """Options by message: the launcher goes on as namespace.launch (its first step asks
    the supervisor to map its ids, "U")."""
    r = python("import os\n"
               "from httptap.run.config import Config\n"
               "from httptap.run.launcher import Launcher, block_signals\n"
               "block_signals()\n"
               "launcher = Launcher()\n"
               "launcher.start(Config(command=('true',)))\n"
               "print(launcher.sock.recv(100))\n"
               "launcher.sock.close()\n"
               "_, status = os.waitpid(launcher.pid, 0)\n"
               "print(os.waitstatus_to_exitcode(status))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["b'U'", "125"]
