"""httptap: run a program in its own network namespace and show every HTTP(S) request it makes.

Map of the package, in the order data flows (see ../shared/DESIGN.md for the why):

- ``run/``       the run: ``cli`` (options into a ``Config``), ``supervisor`` (the httptap
                 process: makes the rings, forks the stages, launches the command, waits,
                 drains, exits with its status; ``trustmaker`` makes the CA and the trust
                 files alongside), ``namespace`` (the launcher: user, net, mount and PID
                 namespaces, the TUN device configured by ``netlink``, exec), ``outputs``
                 (output files checked before the command starts), ``signalrelay``,
                 ``timeline`` (what ``-v`` says of the start-up).
- ``plumbing/``  what joins the processes: ``ring`` (shared-memory SPSC rings),
                 ``messages`` (every message that crosses them), ``stats`` (``--stats``).
- ``stages/``    one module per pipeline process: ``tcp`` (each shard reads and writes
                 its own queue of the TUN device), ``proxy`` (upstream sockets; ``relay``
                 carries out a flow core's commands, ``datagrams`` is UDP and DNS),
                 ``sink``; ``tun`` only with --dump-pcap; ``base`` is what they share.
- pure cores, by layer (bytes and ``now`` in, events and bytes out, no I/O):
  - ``net/``     ``wire`` (IP, UDP, ICMP packets) and ``tcp/`` (a full TCP peer);
  - ``tls/``     ``clienthello``, ``tlsterm`` (both TLS sessions over memory BIOs), with
                 ``ca`` and ``trust`` (the run's CA, and the files that make it trusted),
                 ``pending`` (the CA's way to a proxy forked before it existed);
  - ``http/``    ``http1`` (with ``h1heads``, ``h1sides``, ``h1readers``), ``http2``
                 (with ``h2frames``, ``h2reset``), their ``events``,
                 ``contentcoding``, ``headers``, ``report`` (events into the sink's
                 messages), ``websocket`` with ``wsreport``;
  - ``flow/``    ``core``: one proxied connection (what it is, TLS, decoding, credit),
                 ``commands``: what it asks the proxy stage to do;
  - ``dns/``     ``message`` (the wire format), with ``resolver`` (the host's answers);
  - ``events``   the base class of every core's events.
- ``sinks/``     the output formats: terminal, ndjson, HAR.
"""

__version__ = "0.1.0"
