"""httptap: run a program in its own network namespace and show every HTTP(S) request it makes.

Map of the package (see ../shared/DESIGN.md for the why):

- ``cli``         the command line; turns options into a :class:`~httptap.config.Config`.
- ``supervisor``  the httptap process itself: makes the rings, forks the stages,
                  launches the command, waits, drains, exits with its status.
- ``namespace``   the launcher: user + net + mount namespaces, TUN device, exec.
- ``ring``        single-producer single-consumer shared-memory rings.
- ``messages``    every message that crosses a process boundary.
- ``stats``       per-stage counters in shared memory, and the ``--stats`` table.
- ``stages/``     one module per pipeline stage process: tcp (reads and writes its own
                  queue of the TUN device), proxy, sink; tun only with --dump-pcap.
- pure cores      ``wire`` (packets), ``tcp/`` (TCP state machine), ``flowcore`` (one
                  proxied connection), ``http1``/``http2`` with ``httpreport``,
                  ``websocket`` with ``wsreport`` (messages after a 101), ... : bytes and
                  ``now`` in, events and bytes out, no I/O.
"""

__version__ = "0.1.0"
