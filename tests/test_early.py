"""The processes forked before the options are parsed (httptap.run.early): the launcher
imports pyroute2 and the trust maker cryptography while the supervisor parses, and both
are ended on every way out that does not start them."""

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


def test_processes_never_started_are_ended_and_reaped():
    r = python("import os\n"
               "from httptap.run import early\n"
               "early.fork_early()\n"
               "pids = [c.pid for c in early._early.values()]\n"
               "early.discard()\n"
               "for pid in pids:\n"
               "    try:\n"
               "        os.waitpid(pid, 0)\n"
               "        print('not reaped')\n"
               "    except ChildProcessError:\n"
               "        print('reaped')\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["reaped", "reaped"]


def test_a_process_whose_supervisor_closed_the_socket_exits_quietly():
    r = python("import os\n"
               "from httptap.run.early import LAUNCHER, TRUST_MAKER, EarlyChild\n"
               "for name in (LAUNCHER, TRUST_MAKER):\n"
               "    child = EarlyChild(name)\n"
               "    child.sock.close()\n"
               "    _, status = os.waitpid(child.pid, 0)\n"
               "    print(os.waitstatus_to_exitcode(status))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0"] and r.stderr == ""


def test_a_launcher_given_options_builds_the_namespace_and_asks_for_its_ids():
    """Options by message: the launcher goes on as namespace.launch (its first step asks
    the supervisor to map its ids, "U")."""
    r = python("import os\n"
               "from httptap.run.config import Config\n"
               "from httptap.run.early import LAUNCHER, EarlyChild, block_signals\n"
               "block_signals()\n"
               "launcher = EarlyChild(LAUNCHER)\n"
               "launcher.start(Config(command=('true',)))\n"
               "print(launcher.sock.recv(100))\n"
               "launcher.sock.close()\n"
               "_, status = os.waitpid(launcher.pid, 0)\n"
               "print(os.waitstatus_to_exitcode(status))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:1] == ["b'U'"] and r.stdout.split()[1:] == ["125"]


def test_a_trust_maker_given_the_run_sends_the_ca_and_reports_the_trust_files(tmp_path):
    """The run by message, with the report's pipe and a proxy's pipe passed along."""
    r = python("import json, os\n"
               "from httptap.run.config import Config\n"
               "from httptap.run.trustmaker import TrustMaker\n"
               "from httptap.tls.pending import PendingCA\n"
               "pending = PendingCA()\n"
               f"maker = TrustMaker(Config(command=('true',)), {str(tmp_path)!r}, [pending])\n"
               "maker.start(close_fds=[])\n"
               "report = maker.result()\n"
               "print(report[:1].decode(), sorted(json.loads(report[1:])))\n"
               "print(pending.authority().cert_pem.split(b'\\n')[0].decode())\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["t ['env', 'mounts']", "-----BEGIN CERTIFICATE-----"]
    assert (tmp_path / "ca-bundle.crt").exists()
