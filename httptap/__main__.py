"""``python -m httptap``: the same as the ``httptap`` script.

:func:`main` is the entry point the console script names."""

import gc
import os
import sys
from typing import NoReturn


def main() -> NoReturn:
    # Start-up makes a great many objects (every module imported) and no garbage worth
    # collecting: without the collector passes over them, importing takes ~10% less CPU.
    # The supervisor and each stage turn it back on once started (run.supervisor,
    # stages.base).
    gc.disable()
    # The launcher and the trust maker first: they import pyroute2 and cryptography (the
    # longest imports of a run) on the other core while this process imports typer and
    # the rest and parses the command line (run.early).
    from .run import early

    early.fork_early()
    try:
        from .run.cli import main as typer_main

        code = typer_main()
    finally:
        early.discard()  # a run that never started them (--help, a bad option...)
    # Tearing down the interpreter (every module, every object) took ~25 ms of CPU for
    # nothing: the run is over, every output file is closed, and nothing registers an exit
    # handler in this process. If flushing our own output fails, the usual exit says so.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - e.g. a reader that went away: exit the usual way
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    main()
