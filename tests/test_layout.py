"""The layout: names stay importable from the modules that held them before those were
split, and a module grows past 400 lines only with its reason written at its top."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

# (where callers import it from, name, the module that defines it)
MOVED = [
    ("watchdog.sidecar.registry", "OpenSpan", "watchdog.sidecar.records"),
    ("watchdog.sidecar.registry", "ProcessRecord", "watchdog.sidecar.records"),
    ("watchdog.sidecar.registry", "CLIENT_TIMEOUT_FIX", "watchdog.sidecar.records"),
    ("watchdog.sidecar.registry", "client_timeout_warning", "watchdog.sidecar.records"),
    ("watchdog.sidecar.registry", "unknown_end", "watchdog.sidecar.records"),
    ("watchdog.sidecar.registry", "SpanState", "watchdog.sidecar.records"),
    ("watchdog.sidecar.registry", "RegistryListener", "watchdog.sidecar.listener"),
    ("watchdog.sidecar.registry", "Fanout", "watchdog.sidecar.listener"),
    ("watchdog.sidecar.metrics", "IngestStats", "watchdog.sidecar.stats"),
    ("watchdog.sidecar.metrics", "SpanStats", "watchdog.sidecar.stats"),
    ("watchdog.sidecar.metrics", "bucket_edges", "watchdog.sidecar.stats"),
    ("watchdog.sidecar.alerts", "Alert", "watchdog.sidecar.payloads"),
    ("watchdog.sidecar.alerts", "iso", "watchdog.sidecar.payloads"),
    ("watchdog.sidecar.alerts", "alertmanager_alert", "watchdog.sidecar.payloads"),
    ("watchdog.sidecar.alerts", "slack_message", "watchdog.sidecar.payloads"),
    ("watchdog.sidecar.alerts", "webhook_payload", "watchdog.sidecar.payloads"),
    ("watchdog.sidecar.incidents", "IncidentStore", "watchdog.sidecar.incident_store"),
    ("watchdog.sidecar.incidents", "StoreUnavailable", "watchdog.sidecar.incident_store"),
    ("watchdog.demo", "build_app", "watchdog.demo.apps"),
    ("watchdog.demo", "main", "watchdog.demo.tour"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_a_moved_name_is_the_same_object_where_it_was(old: str, name: str, new: str) -> None:
    before, after = importlib.import_module(old), importlib.import_module(new)
    assert getattr(before, name) is getattr(after, name)
    assert name in before.__all__


PACKAGE = Path(__file__).resolve().parents[1] / "watchdog"


def test_a_long_module_says_why_it_is_one() -> None:
    long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().count("\n")
        if lines > 420:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            long[str(path.relative_to(PACKAGE))] = "Why one module" in doc
    assert all(long.values()), [name for name, says in long.items() if not says]
