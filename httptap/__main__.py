"""``python -m httptap``: the same as the ``httptap`` script, started faster.

A plain command line is parsed without typer (``run.args.quick_main``: typer and click
take ~35 ms of CPU to import); anything else goes to the typer command of ``run.cli``.
"""

import gc
import sys

# Start-up makes a great many objects (every module imported) and no garbage worth
# collecting: without the collector passes over them, importing takes ~10% less CPU. The
# supervisor and each stage turn it back on once started (run.supervisor, stages.base).
gc.disable()

from .run.args import quick_main  # noqa: E402 - after gc.disable()

code = quick_main(sys.argv[1:])
if code is None:
    from .run.cli import main

    code = main()
sys.exit(code)
