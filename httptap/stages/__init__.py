"""The pipeline's stage processes: tcp -> proxy -> sink, with a tun stage in front only for
``--dump-pcap`` (or ``--workers N`` before Linux 4.16; see ``base`` for the shared parts).

Each module has one ``run(ctx)`` function, executed in its own forked process by the
supervisor."""
