"""The run: the command line (``cli``, ``config``), the httptap process that makes the
pipeline and waits (``supervisor``, with ``trustmaker``: the CA and trust files made in a
process of their own, ``rundir``, ``statsview``, and ``drain`` with ``drainrules``: how
the pipeline ends), the launcher that builds the command's namespaces (``namespace``,
pyroute2 configuring its interfaces, and ``signalrelay`` for its small waiting
processes), ``early``: the launcher and the trust maker forked before the options are
parsed, the output files checked before the command starts (``outputs``) and the
start-up ``timeline`` that ``-v`` prints."""
