"""``python -m watchdog.demo``: the demo; with ``worker`` or ``untraced``, one of the app
processes it starts (``python -m watchdog.demo worker SIDECAR_URL STANDIN_URL``)."""

from __future__ import annotations

import sys

from watchdog.demo.apps import untraced, worker
from watchdog.demo.tour import main

if sys.argv[1:2] == ["worker"]:
    worker(sys.argv[2], sys.argv[3])
elif sys.argv[1:2] == ["untraced"]:
    untraced(sys.argv[2], sys.argv[3])
    sys.exit(0)
sys.exit(main())
