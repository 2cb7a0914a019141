"""httptap.tls.pending: the run's CA reaches a proxy forked before it existed."""

from __future__ import annotations

import os
import ssl

import pytest

from httptap.tls.ca import CertificateAuthority
from httptap.tls.pending import PendingCA


def in_child(pending: PendingCA, check) -> int:
    """Fork a "proxy" that runs ``check(pending)`` (its end of the pipe only); its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.close(pending.write_fd)  # start_stage closes it in every stage
            code = 0 if check(pending) else 1
        finally:
            os._exit(code)
    return pid


def test_the_ca_sent_after_the_fork_is_the_one_the_proxy_uses():
    ca = CertificateAuthority.ephemeral()
    pending = PendingCA(keylog_filename="/dev/null")

    def check(p: PendingCA) -> bool:
        got = p.authority()
        context = p.server_context("example.com", ["http/1.1"])
        return (got.cert_pem == ca.cert_pem and got.key_pem() == ca.key_pem()
                and got.keylog_filename == "/dev/null" and isinstance(context, ssl.SSLContext)
                and p.authority() is got)

    pid = in_child(pending, check)
    pending.send(ca)
    assert (pending.read_fd, pending.write_fd) == (-1, -1)  # the supervisor keeps nothing
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_a_ca_that_never_comes_is_a_ca_error_not_a_hang():
    from httptap.tls.ca import CAError

    pending = PendingCA()

    def check(p: PendingCA) -> bool:
        with pytest.raises(CAError, match="did not reach"):
            p.authority()
        return True

    pid = in_child(pending, check)
    pending.close()  # the supervisor failed before making the CA
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
