"""The processes forked before the options are parsed (httptap.run.early): the launcher
imports pyroute2 and the trust maker cryptography while the supervisor parses, and both
are ended on every way out that does not start them."""

from __future__ import annotations

import subprocess
import sys

from httptap.tls.ca import CA_CERT_FILE


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


def test_processes_never_started_are_ended_and_reaped_and_the_run_directory_removed():
    r = python("import os\n"
               "from httptap.run import early\n"
               "early.fork_early()\n"
               "pids = [c.pid for c in early._early.values()]\n"
               "run_dir = early._run_dir\n"
               "print(os.path.isdir(run_dir))\n"
               "early.discard()\n"
               "print(os.path.exists(run_dir))\n"
               "for pid in pids:\n"
               "    try:\n"
               "        os.waitpid(pid, 0)\n"
               "        print('not reaped')\n"
               "    except ChildProcessError:\n"
               "        print('reaped')\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False", "reaped", "reaped"]


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


_MAKE = ("import json, os, sys\n"
         "from httptap.run.config import Config\n"
         "from httptap.run.trustmaker import TrustMaker\n"
         "from httptap.tls.pending import PendingCA\n"
         "pending = PendingCA()\n"
         "maker = TrustMaker(Config(command=('true',), ca_dir=sys.argv[2] or None), sys.argv[1],\n"
         "                   [pending])\n"
         "maker.start(close_fds=[])\n"
         "report = maker.result()\n"
         "print(report[:1].decode(), json.loads(report[1:])['env']['SSL_CERT_FILE'])\n"
         "print(pending.authority().cert_pem.decode().replace('\\n', ''))\n")


def make_trust(run_dir: str, ca_dir: str = "") -> tuple[str, str]:
    """The trust maker of a run (forked when asked, as in-process callers get it): what it
    reports (the bundle's path) and the CA it sends a proxy, as one line of PEM."""
    r = subprocess.run([sys.executable, "-c", _MAKE, run_dir, ca_dir], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report, ca = r.stdout.splitlines()
    assert report.startswith("t "), report
    return report[2:], ca


def test_the_trust_maker_makes_the_ca_and_trust_files_before_it_has_the_run(tmp_path):
    """The CA of a run without --ca needs no options: the maker writes its trust files
    into the run directory while it waits, and then sends that CA and reports them."""
    bundle, ca = make_trust(str(tmp_path))
    assert bundle == str(tmp_path / "ca-bundle.crt")
    assert ca in bundle_text(bundle)


def test_with_ca_dir_the_maker_uses_that_ca_and_its_own_trust_files(tmp_path):
    run_dir, ca_dir = tmp_path / "run", tmp_path / "ca"
    run_dir.mkdir()
    bundle, ca = make_trust(str(run_dir), str(ca_dir))
    assert bundle == str(run_dir / "trust" / "ca-bundle.crt")
    assert ca in bundle_text(bundle)
    assert ca == (ca_dir / CA_CERT_FILE).read_text().replace("\n", "")
    assert ca not in bundle_text(str(run_dir / "ca-bundle.crt"))  # the one made before


def bundle_text(path: str) -> str:
    with open(path) as f:
        return f.read().replace("\n", "")
