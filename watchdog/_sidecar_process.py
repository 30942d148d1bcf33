"""Run ``agents-watchdog serve`` as a child process and follow its JSON log.

The demo (``agents-watchdog demo``) needs a real sidecar process, so this ships with
the package; it is no part of the sidecar itself: it runs in the parent, starts the
sidecar through its command line and reads its log the way an operator does, which is
why it lives beside ``demo/`` rather than in ``watchdog/sidecar/``. The benchmarks
and the tests use it too; what only failure scenarios need (killing the child,
restarting it) is the tests' own, in ``tests/launcher.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["SidecarProcess"]

LogEntry = dict[str, Any]


class SidecarProcess:
    """A sidecar child process on loopback. ``config`` is TOML text; ``port`` 0 picks one,
    which is kept: after :meth:`stop`, :meth:`start` listens on the same port again. Its
    environment drops inherited ``AGENTS_WATCHDOG_*`` variables, then adds ``env``."""

    def __init__(
        self,
        config: str = "",
        port: int = 0,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.config = config
        self.port = port
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.logs: list[LogEntry] = []
        self.url = ""
        self._changed = threading.Condition()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="agents-watchdog-")

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> Self:
        """Start the child and wait until it listens; raises ``RuntimeError`` if it does not."""
        config_path = Path(self._dir.name) / "sidecar.toml"
        config_path.write_text(self.config, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_WATCHDOG_")}
        # The incident database goes to this sidecar's own folder unless told otherwise:
        # tests and the demo must not write into the user's data directory.
        env["XDG_DATA_HOME"] = self._dir.name
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "watchdog.cli", "serve", "--config", str(config_path)]
        command += ["--port", str(self.port)]
        seen = len(self.logs)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(
            target=self._read, args=(self._process,), name="sidecar-log-reader", daemon=True
        )
        self._reader.start()
        entry = self.wait_for("listening", timeout=self.startup_timeout, since=seen)
        if entry is None:
            code = self._process.poll()
            self.stop()
            tail = "\n".join(json.dumps(e) for e in self.logs[-10:])
            raise RuntimeError(f"sidecar did not start (exit {code}); last log lines:\n{tail}")
        self.url = str(entry["url"])
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError
            except ValueError:
                entry = {"event": "raw", "line": line.rstrip("\n")}
            with self._changed:
                self.logs.append(entry)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self,
        event: str,
        timeout: float,
        since: int = 0,
        where: Callable[[LogEntry], bool] | None = None,
    ) -> LogEntry | None:
        """The first log entry (from index ``since``) named ``event`` and matching
        ``where``, waiting up to ``timeout`` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        index = since
        with self._changed:
            while True:
                while index < len(self.logs):
                    entry = self.logs[index]
                    index += 1
                    if entry.get("event") == event and (where is None or where(entry)):
                        return entry
                remaining = deadline - time.monotonic()
                process = self._process
                if remaining <= 0 or process is None or process.poll() is not None:
                    return None
                self._changed.wait(min(remaining, 0.5))

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``timeout``); returns the exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(5)
        if process.stderr is not None:
            process.stderr.close()
        return process.returncode

    def close(self) -> None:
        """Stop the child and remove its files."""
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
