"""The tun stage, only with ``--dump-pcap`` (one process sees every packet and writes the
capture) or, before Linux 4.16, with ``--workers N`` (``config.kernel_steers_flows``). Also
the device helpers every tcp shard uses (``read_batch``, ``write_packets``).

Normally there is no tun stage: each tcp shard reads and writes its own queue of the
device (``IFF_MULTI_QUEUE``, one queue per shard; the kernel steers each flow to one
queue), which saves a process hop for every packet the command sends.

When it runs, this stage reads IP packets in batches (the device is non-blocking),
strips the virtio-net header the kernel puts in front of each, records them (with
``--dump-pcap``), and steers every packet to one tcp shard by a hash of its addresses
and ports, so a flow always lands on the same shard. With ``--dump-pcap`` the shards send their packets back here to
be recorded and written; otherwise they write them to the device themselves.

On the supervisor's stop request (an eventfd) it reads what the command left in the
device, tells every shard ``Drain`` and exits.
"""

from __future__ import annotations

import errno
import functools
import os
import zlib
from collections.abc import Sequence
from typing import Union, cast

from ..plumbing import messages
from ..run.outputs import open_private
from ..plumbing.stats import PACKETS_IN, PACKETS_OUT
from ..net.wire import VNET_HDR_LEN, flow_hash_key
from .base import Inbox, Loop, SpaceWatch, StageContext

READ_BATCH = 64          # packets per read burst before yielding to the other fds
READ_SIZE = 65536 + 64   # one packet at MTU 65520 plus the virtio-net header
BATCH_BYTES = 256 << 10  # ... or until this many bytes (rings cap a record's size)
MAX_BACKLOG = 256        # Packets messages waiting for ring space before we stop reading


# A packet to write: bytes, or (headers, payload) when the payload is a view of a send buffer.
Packet = Union[bytes, tuple[bytes, Union[bytes, memoryview]]]

LINKTYPE_RAW = 101  # pcap link type: packets start with the IP header


def open_pcap(path: str):  # type: ignore[no-untyped-def]
    """A pcap writer for ``--dump-pcap`` (dpkt: imported only when asked for)."""
    import dpkt

    # Private (0600) when created: the packets hold everything the command sent.
    f = os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "wb")
    return dpkt.pcap.Writer(f, snaplen=65535, linktype=LINKTYPE_RAW)


def write_packets(tun_fd: int, packets: Sequence[Packet]) -> int:
    """Write packets (virtio-net header first) to the device; returns how many it took.

    A packet is bytes, or (headers, payload) written with one ``writev``, uncopied. A
    packet the kernel refuses (malformed, no route) is dropped as on a wire, and TCP
    retransmits; anything else is a real failure. Used by the tcp shards too."""
    sent = 0
    write, writev = os.write, os.writev
    for pkt in packets:
        try:
            if isinstance(pkt, tuple):
                writev(tun_fd, pkt)
            else:
                write(tun_fd, pkt)
            sent += 1
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EIO, errno.EAGAIN, errno.ENOBUFS,
                                 errno.EMSGSIZE):
                raise
    return sent


def joined(packets: list[Packet]) -> list[bytes]:
    """Packets as single bytes objects (for a ring, a capture or a dump)."""
    return [b"".join(pkt) if isinstance(pkt, tuple) else pkt for pkt in packets]


def read_batch(tun_fd: int) -> list[memoryview]:
    """What the device has now, up to a batch, virtio-net headers stripped (the device
    always carries one: ``namespace.open_tun``). Used by the tcp shards too."""
    packets: list[memoryview] = []
    size = 0
    read = os.read
    for _ in range(READ_BATCH):
        try:
            pkt = read(tun_fd, READ_SIZE)
        except BlockingIOError:
            break
        except OSError as exc:
            if exc.errno in (errno.EINTR, errno.EAGAIN):
                break
            raise
        packets.append(memoryview(pkt)[VNET_HDR_LEN:])  # (a view: no copy of the packet)
        size += len(pkt)
        if size >= BATCH_BYTES:
            break
    return packets


def run(ctx: StageContext) -> None:
    tun_fd: int = ctx.extra["tun_fd"]
    stop_fd: int = ctx.extra["stop_fd"]
    os.set_blocking(tun_fd, False)
    counters = ctx.counters.v
    shards = ctx.outboxes()   # one per tcp shard
    returns = ctx.inboxes()   # one per tcp shard
    nshards = len(shards)
    loop = Loop()
    pcap = open_pcap(ctx.config.dump_pcap) if ctx.config.dump_pcap else None

    def read_packets() -> None:
        packets = read_batch(tun_fd)
        batches: list[list[memoryview]] = [[] for _ in range(nshards)]
        if nshards == 1:
            batches[0] = packets
        else:
            for pkt in packets:
                key = flow_hash_key(pkt)
                batches[zlib.crc32(key) % nshards if key else 0].append(pkt)
        count = len(packets)
        if count:
            if pcap is not None:
                for batch in batches:
                    for pkt in batch:
                        pcap.writepkt(pkt)
            counters[PACKETS_IN] += count
            for outbox, batch in zip(shards, batches):
                if batch:  # (views are encoded as the bytes they show)
                    outbox.send(messages.Packets(cast(list[bytes], batch)))
        flush()

    def on_returns(inbox: Inbox) -> None:
        sent = 0
        for msg in inbox.receive():
            if type(msg) is messages.Packets:
                if pcap is not None:
                    for pkt in msg.packets:
                        pcap.writepkt(pkt[VNET_HDR_LEN:])
                sent += write_packets(tun_fd, msg.packets)
        counters[PACKETS_OUT] += sent

    def flush() -> None:
        # Stop reading the device while any shard's ring is full: the kernel then queues
        # (and at worst drops) packets, which the command's TCP retransmits.
        space.flush()
        if any(outbox.backlog >= MAX_BACKLOG for outbox in shards):
            loop.remove_reader(tun_fd)
        else:
            loop.add_reader(tun_fd, read_packets)

    space = SpaceWatch(shards, loop.add_reader, loop.remove_reader, flush)

    def on_stop() -> None:
        read_packets()
        for outbox in shards:
            outbox.send(messages.Drain())
            outbox.flush_blocking(idle_timeout=5.0)
        loop.stop()

    loop.add_reader(tun_fd, read_packets)
    loop.add_reader(stop_fd, on_stop)
    for inbox in returns:
        loop.add_reader(inbox.fd, functools.partial(on_returns, inbox))
    try:
        loop.run()
    finally:
        if pcap is not None:
            pcap.close()
