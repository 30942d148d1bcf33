"""The processor as it was before its sender worked from the app's state in bulk.

Figures "before/after" are measured side by side in one run: the earlier
``watchdog/processor.py`` and ``watchdog/_sender.py`` are read from git at
``BEFORE`` and loaded as modules of their own (``watchdog_before``), next to today's.
They share today's ``watchdog._control``, ``_clients`` and ``protocol``, whose
interfaces they use unchanged. Outside a git checkout the baseline is absent and the
sections say so.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Final

# The last commit whose sender replayed every event in Python.
BEFORE: Final = "2230eb4"
REPO: Final = Path(__file__).resolve().parents[1]
_loaded: ModuleType | None = None


def source(path: str) -> str | None:
    """The text of ``path`` at ``BEFORE``, or None outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "show", f"{BEFORE}:{path}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def write_modules(folder: Path) -> bool:
    """Write the baseline as ``watchdog_before_sender.py`` and ``watchdog_before.py``
    into ``folder``; False when the sources cannot be read."""
    sender, processor = source("watchdog/_sender.py"), source("watchdog/processor.py")
    if sender is None or processor is None:
        return False
    (folder / "watchdog_before_sender.py").write_text(sender)
    processor = processor.replace(
        "from watchdog._sender import", "from watchdog_before_sender import"
    )
    processor = processor.replace(
        "from watchdog._sender import warn_blind", "from watchdog_before_sender import warn_blind"
    )
    (folder / "watchdog_before.py").write_text(processor)
    return True


def load() -> ModuleType | None:
    """The baseline ``processor`` module (its ``WatchdogProcessor``), or None."""
    global _loaded
    if _loaded is not None:
        return _loaded
    folder = Path(tempfile.mkdtemp(prefix="agents-watchdog-before-"))
    if not write_modules(folder):
        return None
    sys.path.insert(0, str(folder))
    try:
        for name in ("watchdog_before_sender", "watchdog_before"):
            spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    _loaded = sys.modules["watchdog_before"]
    return _loaded
