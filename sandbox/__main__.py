"""``python -m sandbox``: run the simulator in the foreground."""

import sys

from sandbox.cli import main

sys.exit(main())
