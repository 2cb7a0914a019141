"""What joins the stage processes: shared-memory rings (``ring``), the one module of
messages that cross them (``messages``), and the per-stage counters behind ``--stats``
(``stats``)."""
