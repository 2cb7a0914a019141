"""The userspace TCP stack's pure core: one connection state machine per flow, split by concern.

Nothing in this package does I/O or reads the clock: callers pass segments and ``now`` in
and take segments and events out (see ``connection``). The tcp stage
(``httptap.stages.tcp``) is the thin loop that feeds it packets from its queue of the TUN
device (or from the tun stage with ``--dump-pcap``) and stream data from the proxy.

Modules, as gVisor's netstack splits ``transport/tcp``:

- ``connection``  :class:`~httptap.net.tcp.connection.TcpConnection`: states, handshake,
                  RST and challenge ACKs, timers, what goes out; ``rst_for`` for segments
                  that belong to no connection;
- ``receiver``    acceptability, out-of-order reassembly, the advertised window;
- ``sender``      the send buffer, segment output, retransmission, the persist timer;
- ``congestion``  the congestion-control interface and NewReno; ``rtt`` the RTT
                  estimator and RTO (RFC 6298);
- ``segment`` (the parsed segment), ``seq`` (32-bit sequence arithmetic), ``rangeset``
  (the reassembly buffer), ``sendbuffer`` (zero-copy send queue), ``events`` (what a
  connection reports).
"""
