"""``python -m watchdog.standin``: serve the stand-in in the foreground (see ``--help``)."""

from __future__ import annotations

import sys

from watchdog.standin.server import main

sys.exit(main())
