"""The pipeline's stage processes: tun -> tcp -> proxy -> sink (see ``base`` for the shared parts).

Each module has one ``run(ctx)`` function, executed in its own forked process by the
supervisor."""
