"""The run's settings, as parsed from the command line; handed to every stage at fork.

Stages are forked from the supervisor, so they inherit this object; it never crosses a ring.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    command: tuple[str, ...]
    http_ports: frozenset[int] = frozenset({80})
    https_ports: frozenset[int] = frozenset({443})
    head: bool = False
    body: bool = False
    max_body_size: int = 16 << 20  # bytes of each body kept for --body, HAR and ndjson
    print_dns: bool = False
    sinks: tuple[str, ...] = ("terminal",)
    stats: bool = False
    stats_interval: float = 0.0
    workers: int = 1
    no_exit: bool = False
    user: str | None = None
    run_as: tuple[int, int, str, str] | None = None  # --user resolved: uid, gid, name, home
    new_user_namespace: bool = True
    overlay: bool = True
    tun: str = "httptap"
    subnet: str = "10.1.1.100/24"
    gateway: str = "10.1.1.1"
    subnet6: str = "fd01:1:1::100/64"
    gateway6: str = "fd01:1:1::1"
    mtu: int = 65520
    dump_tcp: bool = False
    use_stderr: bool = False
    verbose: bool = False
    ca_dir: str | None = None
    dump_pcap: str | None = None
    keylog: str | None = None
    insecure: bool = False
    no_intercept: tuple[str, ...] = ()  # host globs whose TLS is relayed untouched
    extra_env: dict[str, str] = field(default_factory=dict)
    # Set by the supervisor once the run's CA exists: (bundle file, file it covers) pairs
    # to bind-mount in the command's mount namespace.
    trust_mounts: tuple[tuple[str, str], ...] = ()

    @property
    def tun_stage(self) -> bool:
        """Whether a tun stage reads the device and steers packets to the tcp shards: with
        --dump-pcap (one process sees every packet and writes the capture), and for
        several shards on kernels that do not steer a flow's packets to one queue.
        Otherwise each shard reads its own queue of the device: one process hop less for
        every packet the command sends."""
        return self.dump_pcap is not None or (self.workers > 1 and not kernel_steers_flows())

    @property
    def tun_queues(self) -> int:
        return 1 if self.tun_stage else self.workers

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.subnet)

    @property
    def interface6(self) -> ipaddress.IPv6Interface:
        return ipaddress.IPv6Interface(self.subnet6)


def kernel_steers_flows(release: str | None = None) -> bool:
    """Whether a multi-queue TUN device keeps each flow on one queue: since Linux 4.16 it
    picks the queue by a symmetric hash of the packet's addresses and ports (and then by
    the queue that last wrote for that hash). Before, it used the sending socket's hash,
    which the kernel may change mid-connection (after a retransmission timeout), and a
    flow could move to another shard, which knows nothing of it."""
    import os
    import re

    m = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return m is not None and (int(m[1]), int(m[2])) >= (4, 16)
