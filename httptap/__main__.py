"""``python -m httptap``: the same as the ``httptap`` script."""

import gc
import sys

# Start-up makes a great many objects (every module imported) and no garbage worth
# collecting: without the collector passes over them, importing takes ~10% less CPU. The
# supervisor and each stage turn it back on once started (run.supervisor, stages.base).
gc.disable()

from .run.cli import main  # noqa: E402 - after gc.disable()

sys.exit(main())
