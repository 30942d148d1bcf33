"""The examples in examples/, each run for real against a sidecar and the stand-in.

The key one: the Django example under gunicorn with two workers and ``--preload``
(the processor is installed in the master, before the fork) reports a hang in each
worker with that worker's own pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import REPO, spans, wait_until
from tests.launcher import SidecarProcess
from watchdog.standin import DEFAULT_REPLY, StandInServer

pytestmark = pytest.mark.slow

EXAMPLES = REPO / "examples"
SIDECAR_CONFIG = """
[thresholds]
response = 1
"""
CANCEL_CONFIG = """
[[rules]]
kind = "response"
threshold = 1
action = "cancel"
"""
# gunicorn hooks: the master runs a traced warm-up before it forks its workers, so the
# workers are forked from a master whose processor has a live sender thread and an
# identity of its own registered with the sidecar — what a fork must not carry over.
WARM_MASTER = """
from agents import custom_span, trace

from watchdog.processor import install


def when_ready(server):
    with trace("master warm-up"), custom_span("warm-up"):
        pass
    install().force_flush(5)
"""


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInServer]:
    """One Responses API stand-in for the module's examples."""
    with StandInServer() as server:
        yield server


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SidecarProcess]:
    """One sidecar for the module's examples: model calls are hung after 1 s."""
    with SidecarProcess(SIDECAR_CONFIG) as process:
        yield process


def app_env(
    sidecar: SidecarProcess, standin: StandInServer, model: str, home: Path
) -> dict[str, str]:
    """What an operator sets for an example: where the sidecar and the model API are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTS_WATCHDOG_", "OPENAI"))}
    env.update(
        AGENTS_WATCHDOG_URL=sidecar.url,
        OPENAI_BASE_URL=f"{standin.url}/v1",
        OPENAI_API_KEY="standin",
        AGENT_MODEL=model,
        PYTHONUNBUFFERED="1",
        # gunicorn keeps a control socket under $HOME.
        HOME=str(home),
    )
    return env


class AppProcess:
    """An example run as a child in a session of its own (so its whole process group
    can be killed), with its stderr collected."""

    def __init__(self, command: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first stderr line matching ``pattern``; fails the test if none comes."""
        regex = re.compile(pattern)
        with self._changed:
            found = self._changed.wait_for(
                lambda: (
                    next(filter(None, map(regex.search, self.lines)), None)
                    or self.process.poll() is not None
                ),
                timeout,
            )
        if not isinstance(found, re.Match):
            pytest.fail(f"no line matching {pattern!r}; stderr:\n" + "\n".join(self.lines[-20:]))
        return found

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the child."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def get_in_thread(url: str, results: list[Any]) -> threading.Thread:
    """GET ``url`` in a thread of its own (it may hang until the stand-in is released)."""

    def run() -> None:
        try:
            response = httpx.get(url, timeout=30)
            results.append(response.json() if response.status_code == 200 else response)
        except httpx.HTTPError as exc:
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def hung_pids(sidecar: SidecarProcess, service: str) -> set[int]:
    return {span["pid"] for span in spans(sidecar, state="hung", kind="response", service=service)}


def test_django_under_gunicorn_preload_flags_each_workers_hang(
    sidecar: SidecarProcess, standin: StandInServer, tmp_path: Path
) -> None:
    hooks = tmp_path / "warm_master.py"
    hooks.write_text(WARM_MASTER, encoding="utf-8")
    command = [sys.executable, "-m", "gunicorn", "project.wsgi", "--config", str(hooks)]
    command += ["--workers", "2", "--preload", "--bind", "127.0.0.1:0"]
    app = AppProcess(
        command, EXAMPLES / "django_app", app_env(sidecar, standin, "standin:hang", tmp_path)
    )
    results: list[Any] = []
    threads: list[threading.Thread] = []
    try:
        url = app.wait_for_line(r"Listening at: (http://[\d.:]+)").group(1)
        master = psutil.Process(app.process.pid)
        # The master itself reported in before forking.
        assert sidecar.wait_for(
            "process_joined",
            timeout=20,
            where=lambda entry: (
                entry.get("pid") == master.pid and entry.get("service") == "django-example"
            ),
        )

        def both(pids: set[int]) -> set[int] | None:
            return pids if len(pids) == 2 else None

        workers = wait_until(lambda: both({child.pid for child in master.children()}), within=30)
        # A sync worker serves one request at a time: the second hanging request can
        # only be taken by the other worker.
        threads = [get_in_thread(f"{url}/brief?topic=forks", results) for _ in range(2)]
        flagged = wait_until(lambda: both(hung_pids(sidecar, "django-example")), within=20)
        assert flagged == workers
        assert master.pid not in flagged

        standin.release()
        for thread in threads:
            thread.join(30)
        # Each worker answered its own request once the model call came back.
        assert all(isinstance(result, dict) for result in results), results
        assert {result["pid"] for result in results} == workers
        assert {result["answer"] for result in results} == {DEFAULT_REPLY}
    finally:
        app.kill()
        for thread in threads:
            thread.join(5)


def test_fastapi_under_uvicorn_flags_a_hang_and_cancels_it(
    sidecar_factory: Callable[..., SidecarProcess], standin: StandInServer, tmp_path: Path
) -> None:
    # A sidecar of its own, whose rule cancels a hung model call.
    cancelling = sidecar_factory(CANCEL_CONFIG)
    command = [sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", "0"]
    app = AppProcess(
        command, EXAMPLES / "fastapi_app", app_env(cancelling, standin, "standin:hang", tmp_path)
    )
    results: list[Any] = []
    thread = None
    try:
        url = app.wait_for_line(r"Uvicorn running on (http://[\d.:]+)").group(1)
        thread = get_in_thread(f"{url}/brief?topic=lifespans", results)
        hung = cancelling.wait_for(
            "span_hung", timeout=20, where=lambda entry: entry.get("service") == "fastapi-example"
        )
        assert hung is not None and hung["kind"] == "response"
        assert hung["pid"] == app.process.pid

        # The endpoint's abortable() turned the cancel into a 503 with the reason.
        thread.join(30)
        assert len(results) == 1 and isinstance(results[0], httpx.Response), results
        assert results[0].status_code == 503
        assert "cancel requested by rule" in results[0].json()["detail"]
    finally:
        app.kill()
        if thread is not None:
            thread.join(5)


def test_plain_script_flags_a_hang(
    sidecar: SidecarProcess, standin: StandInServer, tmp_path: Path
) -> None:
    command = [sys.executable, "plain_script.py", "scripts"]
    app = AppProcess(command, EXAMPLES, app_env(sidecar, standin, "standin:hang", tmp_path))
    try:
        flagged = wait_until(lambda: hung_pids(sidecar, "plain-script"), within=20)
        assert flagged == {app.process.pid}

        standin.release()
        assert app.process.wait(20) == 0, "\n".join(app.lines[-20:])
        assert app.process.stdout is not None
        assert app.process.stdout.read().strip() == DEFAULT_REPLY
        # At exit the SDK shut the processor down: a clean leave, not a death.
        assert sidecar.wait_for(
            "process_left", timeout=10, where=lambda entry: entry.get("pid") == app.process.pid
        )
    finally:
        app.kill()
