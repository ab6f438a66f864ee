"""``python -m xmine.cli``."""

import sys

from xmine.cli import main

sys.exit(main())
