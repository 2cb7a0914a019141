"""httptap.run.netlink: the rtnetlink requests the launcher sends, byte by byte, and against
the kernel in a network namespace of the test's own."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import textwrap

import pytest

from httptap.run import netlink


def test_a_request_carries_its_length_type_flags_and_sequence():
    kind, flags, body = netlink.link_up(3)
    msg = netlink.message(kind, flags, 7, body)
    length, got_kind, got_flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, got_kind, seq, pid) == (len(msg), netlink.RTM_NEWLINK, 7, 0)
    assert got_flags == netlink.NLM_F_REQUEST | netlink.NLM_F_ACK


def test_link_up_sets_the_up_flag_and_then_mtu_and_queue_length_attributes():
    kind, flags, body = netlink.link_up(5, mtu=65520, txqlen=1000)
    assert (kind, flags) == (netlink.RTM_NEWLINK, 0)
    # struct ifinfomsg: family, pad, type, index, flags, change (16 bytes)
    assert body[:16] == struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 5, 1, 1)
    assert body[16:] == (struct.pack("=HHI", 8, netlink.IFLA_MTU, 65520)
                         + struct.pack("=HHI", 8, netlink.IFLA_TXQLEN, 1000))


def test_an_ipv4_address_is_both_local_and_address():
    kind, flags, body = netlink.add_address(2, "10.1.1.100", 24)
    assert kind == netlink.RTM_NEWADDR
    assert flags == netlink.NLM_F_CREATE | netlink.NLM_F_EXCL
    assert body[:8] == struct.pack("=BBBBi", socket.AF_INET, 24, 0, 0, 2)
    addr = socket.inet_aton("10.1.1.100")
    assert body[8:] == (struct.pack("=HH", 8, netlink.IFA_LOCAL) + addr
                        + struct.pack("=HH", 8, netlink.IFA_ADDRESS) + addr)


def test_an_ipv6_address_carries_its_flags():
    _, _, body = netlink.add_address(2, "fd01:1:1::100", 64, netlink.IFA_F_NODAD)
    assert body[:8] == struct.pack("=BBBBi", socket.AF_INET6, 64, netlink.IFA_F_NODAD, 0, 2)
    addr = socket.inet_pton(socket.AF_INET6, "fd01:1:1::100")
    assert body[8:12] == struct.pack("=HH", 20, netlink.IFA_LOCAL) and body[12:28] == addr
    assert len(body) == 8 + 2 * 20


def test_a_default_route_goes_out_of_the_link_in_the_main_table():
    kind, flags, body = netlink.add_default_route(4, socket.AF_INET6)
    assert (kind, flags) == (netlink.RTM_NEWROUTE, netlink.NLM_F_CREATE | netlink.NLM_F_EXCL)
    family, dst_len, src_len, tos, table, proto, scope, rtype, rflags = struct.unpack_from(
        "=BBBBBBBBI", body)
    assert (family, dst_len, src_len, table, proto, scope, rtype) == (
        socket.AF_INET6, 0, 0, 254, netlink.RTPROT_STATIC, 0, netlink.RTN_UNICAST)
    assert body[12:] == struct.pack("=HHI", 8, netlink.RTA_OIF, 4)


def ack(seq: int, error: int) -> bytes:
    original = struct.pack("=IHHII", 16, netlink.RTM_NEWADDR, 5, seq, 0)
    payload = struct.pack("=i", error) + original
    return struct.pack("=IHHII", 16 + len(payload), netlink.NLMSG_ERROR, 0, seq, 1) + payload


def test_the_acknowledgement_of_the_request_is_found_among_other_messages():
    other = struct.pack("=IHHII", 20, netlink.RTM_NEWLINK, 0, 9, 1) + b"\0\0\0\0"
    assert netlink.ack_error(other + ack(3, 0), 3) == 0
    assert netlink.ack_error(other + ack(3, -17), 3) == 17
    assert netlink.ack_error(ack(2, -1), 3) is None     # an earlier request's answer
    assert netlink.ack_error(ack(3, 0)[:18], 3) is None  # cut short
    assert netlink.ack_error(b"", 3) is None


@pytest.mark.root
def test_requests_against_the_kernel_in_a_namespace_of_our_own():
    """lo up with an address and a route; adding the address again is refused with EEXIST
    and says what was asked."""
    script = textwrap.dedent("""
        import errno, socket, subprocess
        from httptap.run import netlink
        lo = socket.if_nametoindex("lo")
        with netlink.Rtnl() as rtnl:
            rtnl.request("lo up", netlink.link_up(lo, mtu=65000))
            rtnl.request("add", netlink.add_address(lo, "10.9.9.9", 32))
            rtnl.request("route", netlink.add_default_route(lo, socket.AF_INET))
            try:
                rtnl.request("add 10.9.9.9 again", netlink.add_address(lo, "10.9.9.9", 32))
            except OSError as exc:
                assert exc.errno == errno.EEXIST and "add 10.9.9.9 again" in str(exc), exc
            else:
                raise AssertionError("a duplicate address was accepted")
        print(subprocess.run(["ip", "addr", "show", "lo"], capture_output=True, text=True).stdout)
        print(subprocess.run(["ip", "route"], capture_output=True, text=True).stdout)
    """)
    r = subprocess.run(["unshare", "--net", sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "UP" in r.stdout and "mtu 65000" in r.stdout
    assert "inet 10.9.9.9/32" in r.stdout
    assert "default dev lo proto static" in r.stdout


@pytest.mark.root
def test_the_namespace_of_a_run_has_its_device_addresses_and_routes():
    from runner import run_httptap

    r = run_httptap("-q", "--", "sh", "-c", "ip link show; ip addr show; echo ROUTES4; "
                    "ip -4 route; echo ROUTES6; ip -6 route")
    assert r.returncode == 0, r.stderr
    links, _, routes = r.stdout.partition("ROUTES4\n")
    routes4, _, routes6 = routes.partition("ROUTES6\n")
    lo = next(line for line in links.splitlines() if ": lo:" in line)
    assert ",UP" in lo
    dev = next(line for line in links.splitlines() if ": httptap:" in line)
    assert ",UP" in dev and "mtu 65520" in dev and "qlen 1000" in dev
    assert "inet 10.1.1.100/24 scope global httptap" in links
    assert "default dev httptap proto static" in routes4.splitlines()[0]
    if os.path.exists("/proc/sys/net/ipv6/conf/all"):
        assert "inet6 fd01:1:1::100/64 scope global nodad" in links
        assert any(line.startswith("default dev httptap proto static")
                   for line in routes6.splitlines())
