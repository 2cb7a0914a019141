"""The userspace TCP stack's pure core: sequence numbers, segments, the connection state machine.

Nothing in this package does I/O or reads the clock: callers pass bytes and ``now`` in and
take segments and events out (see ``connection``). The tcp stage (``httptap.stages.tcp``)
is the thin loop that feeds it packets from the tun stage and stream data from the proxy.

Modules: ``segment`` (the parsed segment), ``seq`` (32-bit sequence arithmetic),
``rangeset`` (out-of-order reassembly), ``events`` (what a connection reports) and
``connection`` (the state machine, :class:`~httptap.tcp.connection.TcpConnection`, and
``rst_for`` for segments that belong to no connection).
"""
