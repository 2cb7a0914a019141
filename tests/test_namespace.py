"""The launcher's pure decisions (httptap.run.namespace), without building a namespace;
and the TUN device it makes, in a namespace of its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from httptap.run.config import Config
from httptap.run.namespace import hides_whole_directory, trust_paths

RUN = "/no-such-base/httptap-run-42-abc"  # realpath leaves it as is


def _config(**kw: object) -> Config:
    return Config(command=("true",), **kw)  # type: ignore[arg-type]


def test_trust_paths_are_the_mount_sources_and_the_paths_in_the_environment():
    config = _config(
        trust_mounts=((f"{RUN}/ca-bundle.crt", "/etc/ssl/certs/ca-certificates.crt"),),
        extra_env={"SSL_CERT_FILE": f"{RUN}/ca-bundle.crt", "SSL_CERT_DIR": f"{RUN}/certs",
                   "_JAVA_OPTIONS": f"-Djavax.net.ssl.trustStore={RUN}/trust.p12 "
                                    "-Djavax.net.ssl.trustStoreType=PKCS12",
                   "HTTPTAP": "1"})
    assert sorted(trust_paths(config)) == sorted([
        f"{RUN}/ca-bundle.crt", f"{RUN}/ca-bundle.crt", f"{RUN}/certs", f"{RUN}/trust.p12"])


def test_the_ca_directory_is_covered_whole_unless_it_holds_the_runs_files():
    keep = [f"{RUN}/ca-bundle.crt", f"{RUN}/certs"]
    assert hides_whole_directory("/home/me/.httptap", keep)
    assert hides_whole_directory("/no-such-base/httptap-run-4", keep)  # a prefix, not a parent
    assert not hides_whole_directory("/no-such-base", keep)
    assert not hides_whole_directory("/", keep)
    assert not hides_whole_directory(RUN, keep)
    assert hides_whole_directory("/anything", [])


@pytest.mark.root
def test_the_tun_device_is_persistent_so_its_last_close_does_not_wait_to_remove_it():
    """Closing a device that is not persistent unregisters it there and then (RCU waits,
    ~20 ms that every run's end waited for); a persistent one goes with its namespace,
    which the kernel removes in the background once nothing refers to it."""
    code = ("import ctypes, fcntl, os, struct\n"
            "from httptap.run.namespace import open_tun\n"
            "assert ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0\n"
            "fds = open_tun('tptest', 2)\n"
            "info = fcntl.ioctl(fds[1], 0x800454D2, bytes(40))\n"  # TUNGETIFF
            "print(hex(struct.unpack_from('16sH', info)[1] & 0x0800))\n")  # IFF_PERSIST
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0x800"]
