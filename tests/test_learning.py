"""Learned thresholds: ``threshold = "auto"`` follows recent durations, within bounds, and
survives a restart."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agents_app import AppRun, agent_with_tool
from tests.conftest import spans, wait_until
from tests.launcher import SidecarProcess
from tests.test_registry import Harness, start, trace_start
from watchdog.processor import WatchdogProcessor
from watchdog.protocol import SpanEnd
from watchdog.sidecar import learning
from watchdog.sidecar.config import (
    AutoThreshold,
    ConfigError,
    LearningConfig,
    Rule,
    Thresholds,
    load_config,
)
from watchdog.sidecar.learning import DurationLearner, threshold_rows
from watchdog.standin import StandInServer

AUTO = AutoThreshold(floor=1.0, factor=3.0, quantile=0.99, min_samples=8)
THRESHOLDS = Thresholds(
    by_kind={"default": 100.0, "function": 30.0, "trace": 600.0},
    rules=(Rule(kind="function", name="fetch_*", auto=AUTO),),
)


def learner(window: int = 256, max_names: int = 4096) -> DurationLearner:
    return DurationLearner(LearningConfig(path="", window=window, max_names=max_names))


# -- the learner on its own --------------------------------------------------------------


def test_ceiling_applies_until_enough_samples_then_the_quantile_times_factor() -> None:
    learned = learner()
    resolved = THRESHOLDS.resolve("function", "fetch_report")
    assert (resolved.threshold, resolved.setting) == (30.0, "rules[0]")
    for _ in range(7):
        learned.observe("function", "fetch_report", 0.2)
    assert learned.threshold("function", "fetch_report", resolved)[:2] == (30.0, "learning")
    learned.observe("function", "fetch_report", 0.2)
    # 3 x 0.2 s = 0.6 s is below the 1 s floor: the floor holds.
    assert learned.threshold("function", "fetch_report", resolved) == (
        1.0,
        "learned",
        8,
        0.2,
        "floor",
    )
    for _ in range(100):
        learned.observe("function", "fetch_report", 2.0)
    value, source, samples, observed, clamped = learned.threshold(
        "function", "fetch_report", resolved
    )
    assert (value, source, samples, observed, clamped) == (6.0, "learned", 108, 2.0, None)
    for _ in range(300):
        learned.observe("function", "fetch_report", 50.0)
    assert learned.threshold("function", "fetch_report", resolved)[0::4] == (30.0, "ceiling")


def test_memory_is_bounded_by_window_and_names() -> None:
    learned = learner(window=16, max_names=3)
    for value in range(100):
        learned.observe("function", "a", float(value))
    # Only the last 16 durations (84..99) are held: the quantile forgets the old ones.
    resolved = THRESHOLDS.resolve("function", "fetch_a")
    assert learned.threshold("function", "a", resolved)[2:4] == (16, 99.0)
    snapshot = learned.snapshot()
    assert snapshot["durations"][0]["seconds"] == [float(v) for v in range(84, 100)]
    for name in ("b", "c", "d"):
        learned.observe("function", name, 1.0)
    assert len(learned) == 3
    assert ("function", "a") not in set(learned.names())  # least recently taught went first


def test_bad_durations_are_ignored() -> None:
    learned = learner()
    for value in (float("nan"), float("inf"), -1.0):
        learned.observe("function", "x", value)
    assert len(learned) == 0 and not learned.changed


def test_snapshot_round_trips_through_a_file(tmp_path: Path) -> None:
    learned = learner()
    for value in (0.1, 0.2, 0.3):
        learned.observe("function", "fetch_x", value)
    path = str(tmp_path / "state" / "learned.json")
    learning.save(path, learned.snapshot())
    assert not learned.changed
    again = learner()
    assert again.restore(learning.load(path)) == 1
    assert again.snapshot()["durations"] == [
        {"kind": "function", "name": "fetch_x", "seconds": [0.1, 0.2, 0.3]}
    ]
    assert learning.load(str(tmp_path / "absent.json")) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "cannot read"),
        ('{"version": 99, "durations": []}', "version 1"),
        ('{"version": 1, "durations": {}}', "durations: expected a list"),
        ('{"version": 1, "durations": [{"kind": 1}]}', "durations[0]: expected kind"),
    ],
)
def test_a_damaged_state_file_is_reported_not_trusted(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "learned.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem.replace("[", r"\[")):
        learner().restore(learning.load(str(path)))


# -- in the registry ---------------------------------------------------------------------


def test_registry_learns_from_normal_ends_only_and_applies_to_new_spans() -> None:
    h, learned = Harness(THRESHOLDS), learner()
    h.registry.learner = learned
    h.send(trace_start(h.clock.now))
    for index in range(8):
        at = h.clock.now
        h.send(start(f"s{index}", "function", at, name="fetch_report"))
        h.advance(0.2)
        h.send(SpanEnd(f"s{index}", at + 0.2))
    at = h.clock.now
    h.send(start("slow", "function", at, name="fetch_report"))
    assert h.registry.processes["p1"].spans["slow"].threshold == 1.0
    assert h.advance(0.99) == []
    assert h.advance(0.02) == ["slow"]
    h.send(SpanEnd("slow", at + 5.0))
    resolved = THRESHOLDS.resolve("function", "fetch_report")
    # The hung span taught nothing; a span under no auto rule teaches nothing either.
    assert learned.threshold("function", "fetch_report", resolved).samples == 8
    h.send(start("other", "function", h.clock.now, name="other"))
    h.send(SpanEnd("other", h.clock.now + 0.1))
    assert set(learned.names()) == {("function", "fetch_report")}
    rows = threshold_rows(THRESHOLDS, learned, h.registry.seen_names())
    row = next(r for r in rows if r["name"] == "fetch_report")
    assert (row["threshold_seconds"], row["source"], row["setting"]) == (1.0, "learned", "rules[0]")
    assert row["learning"]["clamped"] == "floor" and row["learning"]["samples"] == 8
    other = next(r for r in rows if r["name"] == "other")
    assert (other["threshold_seconds"], other["source"], other["setting"]) == (
        30.0,
        "configured",
        "thresholds.function",
    )
    assert {r["kind"] for r in rows if r["name"] is None} >= {"function", "response", "trace"}


# -- configuration -----------------------------------------------------------------------


def test_auto_rule_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[rules]]\nkind = "function"\nname = "fetch_*"\nthreshold = "auto"\n'
        "floor = 0.5\nceiling = 20\nfactor = 4\nquantile = 0.95\nmin_samples = 30\n"
        '[learning]\nwindow = 64\npath = "/x/learned.json"\n'
        '[incidents]\npath = "/data/incidents.db"\n'
    )
    config = load_config(path, environ={})
    assert config.thresholds.rules[0].auto == AutoThreshold(0.5, 20.0, 4.0, 0.95, 30)
    assert config.learning == LearningConfig("/x/learned.json", 64, 4096)
    path.write_text('[incidents]\npath = "/data/incidents.db"\n')
    assert load_config(path, environ={}).learning.path == "/data/learned-durations.json"


@pytest.mark.parametrize(
    ("rule", "key", "expected"),
    [
        ('threshold = "soon"', "rules[0].threshold", 'seconds > 0 or "auto"'),
        ('threshold = "auto"\nfloor = 5\nceiling = 2', "rules[0].ceiling", "at least floor"),
        ('threshold = "auto"\nfactor = 0.5', "rules[0].factor", "from 1 to 1000"),
        ('threshold = "auto"\nquantile = 99', "rules[0].quantile", "from 0.5 to 1"),
        ('threshold = "auto"\nmin_samples = 0', "rules[0].min_samples", "integer from 1"),
        ('threshold = "auto"\nfloor = -1', "rules[0].floor", "seconds > 0"),
        ("threshold = 3\nfloor = 1", "rules[0].floor", 'only allowed with threshold = "auto"'),
    ],
)
def test_auto_rule_errors_name_the_key(tmp_path: Path, rule: str, key: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[rules]]\nkind = "function"\n{rule}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == key and expected in str(caught.value)


def test_learning_section_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[learning]\nwindow = 2\n")
    with pytest.raises(ConfigError, match=r"learning\.window: expected an integer from 16"):
        load_config(path, environ={})
    path.write_text("[learning]\nwindows = 20\n")
    with pytest.raises(ConfigError, match=r"learning\.windows: unknown key"):
        load_config(path, environ={})


# -- end to end: a real agent, a real sidecar, a restart ----------------------------------

CONFIG = """
[thresholds]
function = 30
response = 30
agent = 60
turn = 60
task = 60
trace = 60

[[rules]]
kind = "function"
name = "fetch_report"
threshold = "auto"
floor = 1
factor = 3
min_samples = 8
"""


def threshold_of(sidecar: SidecarProcess, name: str) -> dict[str, Any]:
    """The ``/v1/thresholds`` row of a kind/name (an empty dict until it is seen)."""
    response = httpx.get(f"{sidecar.url}/v1/thresholds", timeout=5)
    response.raise_for_status()
    rows = response.json()["thresholds"]
    row: dict[str, Any] = next((r for r in rows if r["name"] == name), {})
    return row


@pytest.mark.slow
def test_auto_rule_flags_a_5s_call_not_a_0_3s_one_and_survives_restart(
    standin: StandInServer,
    sidecar_factory: Callable[..., SidecarProcess],
    watch: Callable[..., WatchdogProcessor],
) -> None:
    sidecar = sidecar_factory(CONFIG)
    watch(sidecar.url)
    durations: list[float] = []
    release = threading.Event()

    async def tool() -> str:
        seconds = durations.pop(0)
        if seconds >= 5:
            # A call that would take 5 s: the test ends it early once it is flagged.
            await asyncio.to_thread(release.wait, seconds)
        else:
            await asyncio.sleep(seconds)
        return "report"

    def run(*steps: str) -> AppRun:
        return AppRun(standin, agent_with_tool(steps, tool)).start()

    # Normal life: eight calls of 0.2 s.
    durations[:] = [0.2] * 8
    assert run("tool=fetch_report*8", "reply=Done").wait() == "Done"
    learned = wait_until(
        lambda: (row := threshold_of(sidecar, "fetch_report")).get("source") == "learned" and row
    )
    assert learned["threshold_seconds"] == 1.0  # 3 x 0.2 s is below the 1 s floor
    assert learned["learning"]["samples"] == 8 and learned["setting"] == "rules[0]"

    # A 0.3 s call is slower than usual, yet well within: not flagged.
    durations[:] = [0.3]
    assert run("tool=fetch_report", "reply=Done").wait() == "Done"
    wait_until(lambda: threshold_of(sidecar, "fetch_report")["learning"]["samples"] == 9)
    assert not [e for e in sidecar.logs if e.get("event") == "span_hung"]

    # A 5 s call is flagged at the learned 1 s, far below the configured 30 s.
    durations[:] = [5.0]
    slow = run("tool=fetch_report", "reply=Done")
    hung = sidecar.wait_for("span_hung", timeout=10)
    assert hung is not None and hung["name"] == "fetch_report"
    assert hung["threshold_seconds"] == 1.0 and hung["age_seconds"] < 2.5
    release.set()
    assert slow.wait() == "Done"
    sidecar.wait_for("span_recovered", timeout=5)
    # The flagged call did not teach.
    assert threshold_of(sidecar, "fetch_report")["learning"]["samples"] == 9

    # Restart: what was learned is back before any new sample arrives.
    sidecar.restart()
    assert sidecar.wait_for("learned_thresholds_restored", timeout=5) is not None
    row = threshold_of(sidecar, "fetch_report")
    assert (row["threshold_seconds"], row["source"], row["learning"]["samples"]) == (
        1.0,
        "learned",
        9,
    )
    release.clear()
    durations[:] = [5.0]
    again = run("tool=fetch_report", "reply=Done")
    span = wait_until(lambda: next(iter(spans(sidecar, state="hung", kind="function")), None))
    assert span["threshold_seconds"] == 1.0
    release.set()
    assert again.wait() == "Done"
    saved = json.loads(Path(sidecar_state(sidecar)).read_text())
    assert saved["durations"][0]["name"] == "fetch_report"


def sidecar_state(sidecar: SidecarProcess) -> str:
    entry = sidecar.wait_for("learned_thresholds_restored", timeout=0)
    assert entry is not None
    return str(entry["path"])
