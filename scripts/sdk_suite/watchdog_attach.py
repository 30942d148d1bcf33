"""pytest plugin: watch every test of the SDK's own suite with a real sidecar.

Loaded by ``scripts/sdk_suite/run.py`` as ``-p watchdog_attach --watchdog-out DIR
--watchdog-config FILE``. The controlling process (the xdist controller, or the only
process without xdist) starts ``agents-watchdog serve --port 0`` and hands its URL to the
workers; every process that runs tests attaches one :class:`WatchdogProcessor`.

How it attaches, and why this way: the SDK's tests replace trace processors and whole
providers (their conftest installs a fresh ``DefaultTraceProvider`` with a testing
processor; tests call ``set_trace_processors``, ``set_trace_provider``, or build their
own ``SynchronousMultiTracingProcessor``). Adding ours to a processor list would be
undone by any of those mid-test, leaving spans whose end we never see (false hangs),
and would show up in lists the tests inspect. So the plugin taps the class every span
event goes through, ``SynchronousMultiTracingProcessor``: after the SDK's own processors
have seen the event, ours gets it too. It survives every replacement, changes no
processor list, and forwards no ``shutdown``/``force_flush`` (a test shutting its
provider down does not shut ours down).

What it writes to DIR (file names carry the pid; ``run.py`` reads them all):

- ``watchdog-log-<pid>.jsonl``: every record of the ``watchdog`` loggers at WARNING+.
- ``timeline-<pid>.jsonl``: each test's nodeid with its wall-clock start and end.
- ``left-open-<pid>.json``: spans this process started and never ended, with the test
  that started them, and the sidecar's view of this process once they were judged.
- ``sidecar-*.json`` / ``sidecar-log.jsonl`` (controller): ``GET /v1/spans`` and
  ``GET /v1/processes`` at the end, and the sidecar's own JSON log.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

URL_KEY = "watchdog_sdk_suite_url"
SERVICE = "sdk-suite"
# After the last test, spans still open get this long to be judged by the sidecar:
# the longest threshold of the run's config (containers, 10 s) plus a margin.
JUDGE_WAIT = 13.0

logger = logging.getLogger("watchdog.sdk_suite")


class _Watch:
    """This process's attachment: our processor, the test running now, what is open."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.current = "<outside any test>"
        self.processor: Any = None
        self.sidecar: Any = None  # a SidecarProcess, in the controlling process only
        self.url = ""
        # id(item) -> (item, nodeid): what our tap saw start and not end. Keeping the
        # item keeps its id unique while it is listed.
        self.open: dict[int, tuple[Any, str]] = {}
        self.last_test_end = 0.0
        self._timeline: Any = None
        self._timeline_pid = 0
        self._lock = threading.Lock()

    def timeline(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if self._timeline is None or self._timeline_pid != os.getpid():
                self._timeline_pid = os.getpid()
                path = self.out / f"timeline-{self._timeline_pid}.jsonl"
                self._timeline = path.open("a", encoding="utf-8", buffering=1)
            self._timeline.write(json.dumps(entry) + "\n")


_WATCH: _Watch | None = None


class _WarningsToFile(logging.Handler):
    """Writes each record as a JSON line to ``watchdog-log-<pid>.jsonl`` (per process,
    so forked children write their own file)."""

    def __init__(self, out: Path) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {
                "ts": record.created,
                "pid": os.getpid(),
                "logger": record.name,
                "level": record.levelname,
                "message": record.getMessage(),
                "thread": record.threadName,
                "test": _WATCH.current if _WATCH is not None else None,
                "exc": "".join(traceback.format_exception(*record.exc_info))
                if record.exc_info and record.exc_info[0] is not None
                else None,
            }
            path = self.out / f"watchdog-log-{os.getpid()}.jsonl"
            with path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(entry, default=str) + "\n")
        except Exception:
            self.handleError(record)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("watchdog", "agents-watchdog attached to every test")
    group.addoption("--watchdog-out", default="", help="folder for the run's records")
    group.addoption("--watchdog-config", default="", help="sidecar TOML config")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _is_controller(config: pytest.Config) -> bool:
    """True in the xdist controller, which runs no test itself."""
    return not _is_worker(config) and config.getoption("dist", "no") != "no"


def pytest_configure(config: pytest.Config) -> None:
    global _WATCH
    out_text = config.getoption("watchdog_out")
    if not out_text:
        return
    out = Path(out_text)
    out.mkdir(parents=True, exist_ok=True)
    _WATCH = watch = _Watch(out)
    # Every warning or error from the watchdog's own loggers, whatever the root level.
    watchdog_logger = logging.getLogger("watchdog")
    watchdog_logger.addHandler(_WarningsToFile(out))
    if watchdog_logger.level == logging.NOTSET or watchdog_logger.level > logging.WARNING:
        watchdog_logger.setLevel(logging.WARNING)
    if _is_worker(config):
        watch.url = str(config.workerinput[URL_KEY])  # type: ignore[attr-defined]
    else:
        from watchdog._sidecar_process import SidecarProcess

        config_text = Path(config.getoption("watchdog_config")).read_text(encoding="utf-8")
        watch.sidecar = SidecarProcess(config_text).start()
        watch.url = watch.sidecar.url
    if not _is_controller(config):
        _attach(watch)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: give each worker the sidecar's URL."""
    if _WATCH is not None:
        node.workerinput[URL_KEY] = _WATCH.url


def _attach(watch: _Watch) -> None:
    from agents.tracing.provider import SynchronousMultiTracingProcessor

    from watchdog.processor import WatchdogProcessor

    processor = WatchdogProcessor(watch.url, service=SERVICE)
    watch.processor = processor

    def tap(name: str, starts: bool) -> None:
        original: Callable[[Any, Any], None] = getattr(SynchronousMultiTracingProcessor, name)
        ours: Callable[[Any], None] = getattr(processor, name)

        @functools.wraps(original)
        def dispatch(self: Any, item: Any) -> None:
            original(self, item)  # the SDK's own processors first, exactly as before
            try:
                if starts:
                    watch.open[id(item)] = (item, watch.current)
                else:
                    watch.open.pop(id(item), None)
                ours(item)
            except Exception:
                # The processor promises never to raise; if it does, that is a finding.
                logger.exception("WatchdogProcessor.%s raised into the SDK", name)

        setattr(SynchronousMultiTracingProcessor, name, dispatch)

    tap("on_trace_start", starts=True)
    tap("on_span_start", starts=True)
    tap("on_trace_end", starts=False)
    tap("on_span_end", starts=False)


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _WATCH is not None:
        _WATCH.current = nodeid
        _WATCH.timeline({"event": "start", "test": nodeid, "pid": os.getpid(), "ts": time.time()})


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _WATCH is not None:
        _WATCH.last_test_end = now = time.time()
        _WATCH.timeline({"event": "end", "test": nodeid, "pid": os.getpid(), "ts": now})
        _WATCH.current = f"<after {nodeid}>"


def _describe(item: Any) -> dict[str, Any]:
    """What a span or trace our tap saw is, read defensively (tests pass fakes too)."""
    data = getattr(item, "span_data", None)
    kind = "trace" if data is None else str(getattr(data, "type", "?"))
    name = getattr(item, "name", None) if data is None else getattr(data, "name", None)
    fields = {"kind": kind, "name": name, "type": type(item).__name__}
    for key in ("trace_id", "span_id", "parent_id", "started_at"):
        with contextlib.suppress(Exception):
            fields[key] = getattr(item, key, None)
    from agents.tracing import Span, Trace

    fields["sdk_object"] = isinstance(item, Span | Trace)
    # The sidecar knows a trace by its trace id, a span by its span id.
    fields["key"] = fields.get("trace_id") if data is None else fields.get("span_id")
    return {
        k: v if isinstance(v, str | int | float | bool | None) else repr(v)
        for k, v in fields.items()
    }


def _get_json(url: str) -> Any:
    import httpx

    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def _report_left_open(watch: _Watch) -> None:
    """In a process that ran tests: record what it left open, once the sidecar judged it."""
    if watch.processor is None:
        return
    watch.processor.force_flush(5.0)
    left = [(item, test) for item, test in list(watch.open.values())]
    sidecar_view: list[dict[str, Any]] = []
    error = None
    try:
        if left:
            # Give containers time to pass their idle threshold, so the sidecar's
            # judgement (hung or not) is part of the record.
            time.sleep(max(0.0, watch.last_test_end + JUDGE_WAIT - time.time()))
            watch.processor.force_flush(5.0)
        spans = _get_json(f"{watch.url}/v1/spans?service={SERVICE}")["spans"]
        sidecar_view = [s for s in spans if s.get("pid") == os.getpid()]
    except Exception as exc:
        error = repr(exc)
    record = {
        "pid": os.getpid(),
        "left_open": [dict(_describe(item), test=test) for item, test in left],
        "sidecar_spans": sidecar_view,
        "sidecar_error": error,
        "dropped_events": watch.processor.dropped_events,
    }
    path = watch.out / f"left-open-{os.getpid()}.json"
    path.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    watch = _WATCH
    if watch is None:
        return
    _report_left_open(watch)
    if watch.processor is not None:
        # Recorded above; the goodbye makes the sidecar forget this process's spans, so
        # its final view adds only what others left (children that died: orphans). And
        # no sender keeps knocking at a sidecar that is about to stop.
        watch.processor.shutdown(timeout=5.0)
    if watch.sidecar is not None:
        _finish_sidecar(watch)


def _finish_sidecar(watch: _Watch) -> None:
    """In the controlling process: the sidecar's final view and its log, then stop it."""
    sidecar = watch.sidecar
    for name, path in (("spans", "/v1/spans"), ("processes", "/v1/processes")):
        try:
            body = _get_json(f"{sidecar.url}{path}")
        except Exception as exc:
            body = {"error": repr(exc)}
        (watch.out / f"sidecar-{name}.json").write_text(
            json.dumps(body, indent=1), encoding="utf-8"
        )
    sidecar.stop()
    with (watch.out / "sidecar-log.jsonl").open("w", encoding="utf-8") as file:
        for entry in list(sidecar.logs):
            file.write(json.dumps(entry, default=str) + "\n")
    sidecar.close()
