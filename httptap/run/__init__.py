"""The run: the command line (``cli``, ``config``), the httptap process that makes the
pipeline and waits (``supervisor``), the launcher that builds the command's namespaces
(``namespace``, with ``signalrelay`` for its small waiting processes) and the output
files checked before the command starts (``outputs``)."""
