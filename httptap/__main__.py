"""``python -m httptap``: the same as the ``httptap`` script."""

import sys

from .run.cli import main

sys.exit(main())
