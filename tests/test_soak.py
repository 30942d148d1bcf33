"""The soak: 50 concurrent agent runs with injected hangs, tool stalls, blocked event
loops and a killed process, while the sidecar is killed and restarted twice. At the
end a checker compares what was injected with what was detected, alerted, aborted and
recorded, prints the table, and fails on any difference.

``WATCHDOG_SOAK_SECONDS`` sets how long the load lasts (25 s by default, as in CI;
three minutes or more by hand), ``WATCHDOG_SOAK_SEED`` which runs are faulty. (Not
``AGENTS_WATCHDOG_*``: the sidecar refuses variables of its own prefix it does not
know, and this one belongs to the test.)

Workers: ``a`` and ``b`` run 24 runs at a time each, some of which hang in the model
call (released at the end) or stall in a tool (cancelled by its rule); ``c`` runs one
at a time, some of which block its event loop for 3.5 s; ``v`` runs one run that waits
forever in a tool, and is killed with SIGKILL once that is flagged. Thresholds are
generous for healthy work (10 s: a loaded CI machine is slow) and short (1.5 s) for
the tools that stall.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, spans, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import Receiver
from watchdog.standin import StandInServer

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("WATCHDOG_SOAK_SECONDS", "25"))
SEED = int(os.environ.get("WATCHDOG_SOAK_SEED", "7"))
# What a hung span of each fault is: its kind.
HUNG_KIND = {"hang": "response", "stall": "function", "block": "function", "kill": "function"}
CONFIG = """
[thresholds]
default = 120
response = 10
function = 10
agent = 120
turn = 120
task = 120
trace = 120
[[rules]]
kind = "function"
name = "stall_cancel"
threshold = 1.5
action = "cancel"
[[rules]]
kind = "function"
name = "crunch"
threshold = 1.5
[[rules]]
kind = "function"
name = "wait_forever"
threshold = 1.5
[abort]
grace_seconds = 1
[processes]
orphan_retention = 600
loop_blocked_after = 2
[incidents]
reconcile_seconds = 5
[alerting]
stack_wait = 0
[[alerts]]
type = "webhook"
url = "{receiver}"
"""


class Worker:
    """One ``tests.soak_app`` process; its reports are read as they come."""

    def __init__(
        self, name: str, slots: int, plan: dict[str, str], sidecar: str, standin: str
    ) -> None:
        self.name = name
        self.plan = plan
        self.records: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.done = threading.Event()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_WATCHDOG_")}
        command = [sys.executable, "-m", "tests.soak_app", sidecar, standin, name]
        command += [str(slots), str(SECONDS), json.dumps(plan)]
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == "ready":
                self.ready.set()
            elif line.strip() == "done":
                self.done.set()
            elif line.startswith("{"):
                self.records.append(json.loads(line))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def plan_of(rng: random.Random, slots: int, faults: dict[str, int]) -> dict[str, str]:
    """Faulty runs at random places: a slot's first runs, and in a longer soak later
    ones too (a slot finishes a healthy run in well under 3 s, even on a slow machine)."""
    indices = range(max(3, int(SECONDS / 3)))
    positions = rng.sample([(s, i) for s in range(slots) for i in indices], sum(faults.values()))
    kinds = [kind for kind, count in faults.items() for _ in range(count)]
    return {f"{slot}:{index}": kind for (slot, index), kind in zip(positions, kinds, strict=True)}


def trace_of(name: str, key: str) -> str:
    slot, index = (int(part) for part in key.split(":"))
    return f"trace_{name}s{slot:03d}r{index:05d}"


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def workers() -> Iterator[dict[str, Worker]]:
    started: dict[str, Worker] = {}
    yield started
    for worker in started.values():
        worker.close()


def at(moment: float) -> None:
    """Wait for a point of the schedule (when a fault is injected), not for a result."""
    threading.Event().wait(max(0.0, moment - time.monotonic()))


def test_soak(
    standin: StandInServer,
    sidecar_factory: Callable[..., SidecarProcess],
    workers: dict[str, Worker],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(SEED)
    with Receiver() as webhook:
        sidecar = sidecar_factory(CONFIG.format(receiver=webhook.url))
        # As many faults again for every 25 s of soak.
        more = math.ceil(SECONDS / 25)
        plans = {
            "a": (24, plan_of(rng, 24, {"hang": 2 * more, "stall": 3 * more})),
            "b": (24, plan_of(rng, 24, {"hang": more, "stall": 3 * more})),
            "c": (1, {f"0:{1 + 3 * i}": "block" for i in range(2 * more)}),
            "v": (1, {"0:0": "kill"}),
        }
        for name, (slots, plan) in plans.items():
            # The victim's run waits in a tool; the kill is the test's doing.
            run_plan = {k: "wait" if v == "kill" else v for k, v in plan.items()}
            workers[name] = Worker(name, slots, run_plan, sidecar.url, standin.url)
        for worker in workers.values():
            assert worker.ready.wait(60), f"worker {worker.name} did not start"
        began = time.monotonic()

        # A process killed while its run hangs: its spans are orphaned.
        victim = workers["v"]
        sidecar.wait_for("span_hung", timeout=30, where=lambda e: e["service"] == "soak-v")
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        died = sidecar.wait_for(
            "process_died", timeout=20, where=lambda e: e["service"] == "soak-v"
        )
        assert died is not None, "the killed process was not found dead"

        restarts = 0
        for fraction in (0.35, 0.65):
            at(began + fraction * SECONDS)
            sidecar.kill()
            sidecar.start()
            restarts += 1
        at(began + SECONDS)
        planned = {
            trace_of(name, key): fault
            for name, (_, plan) in plans.items()
            for key, fault in plan.items()
        }
        # A faulty run that started is open now or has reported (a slow machine may not
        # reach the later ones); the victim's run was seen hung before the kill.
        open_now = {s["trace_id"] for s in spans(sidecar)}
        reported = {r["trace"] for worker in workers.values() for r in worker.records}
        injected = {
            trace: fault
            for trace, fault in planned.items()
            if fault == "kill" or trace in open_now | reported
        }
        hangs = {t for t, f in injected.items() if f == "hang"}
        # Still open after two restarts: every model call that hangs is known and flagged.
        wait_until(
            lambda: hangs <= {s["trace_id"] for s in spans(sidecar, state="hung")},
            within=15,
        )
        standin.release()
        for name in ("a", "b", "c"):
            assert workers[name].done.wait(60), f"worker {name} did not finish"
        wait_until(lambda: spans(sidecar) == [], within=15)  # nothing left open, no phantom
        wait_until(
            lambda: all(
                i["state"] != "open"
                for i in httpx.get(f"{sidecar.url}/v1/incidents?limit=1000", timeout=10).json()[
                    "incidents"
                ]
            ),
            within=15,
        )
        incidents = httpx.get(f"{sidecar.url}/v1/incidents?limit=1000", timeout=10).json()[
            "incidents"
        ]
        alerts = [alert for body in webhook.bodies() for alert in body["alerts"]]

    records = [r for worker in workers.values() for r in worker.records]
    report = check(injected, records, list(sidecar.logs), alerts, incidents, restarts)
    with capsys.disabled():
        print("\n" + report.table())
    assert not report.differences, report.table() + "\n" + "\n".join(report.differences)


class Report:
    """Counts per fault, and every difference found."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.differences: list[str] = []

    def compare(self, what: str, expected: set[str], found: set[str]) -> int:
        """Note a difference between two sets of traces; returns how many were found."""
        if expected != found:
            missing, extra = sorted(expected - found), sorted(found - expected)
            self.differences.append(f"{what}: missing {missing}, unexpected {extra}")
        return len(found)

    def table(self) -> str:
        header = ("fault", "injected", "detected", "alerted", "aborted", "recorded")
        lines = [header, *self.rows]
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in lines
        )


def check(
    injected: dict[str, str],
    records: list[dict[str, Any]],
    logs: list[dict[str, Any]],
    alerts: list[dict[str, Any]],
    incidents: list[dict[str, Any]],
    restarts: int,
) -> Report:
    """Compare, fault by fault, what was injected with what the sidecar did."""
    report = Report()
    hung = [e for e in logs if e.get("event") == "span_hung"]
    firing = [a for a in alerts if a["status"] == "firing"]
    for entry in hung:
        fault = injected.get(entry["trace_id"])
        if fault is None or HUNG_KIND[fault] != entry["kind"]:
            report.differences.append(
                f"false alarm: {entry['kind']} span {entry['name']!r} of {entry['trace_id']}"
            )
    span_alerts = {
        a["annotations"]["trace_id"] for a in firing if a["labels"]["alertname"] == "AgentSpanHung"
    }
    # The sidecar's own word that it aborted the run: it asked for the cancel. Its
    # "succeeded" is not required, since a sidecar restart between the cancel and the span's end
    # ends the ladder that would have confirmed it (the app's record says the run ended).
    aborted_by_sidecar = {
        e["trace_id"]
        for e in logs
        if e.get("event") == "abort_step" and e["outcome"] in ("requested", "succeeded")
    }
    aborted_in_app = {r["trace"] for r in records if r["outcome"] == "aborted"}
    recorded = {i["trace_id"] for i in incidents}
    errors = [r for r in records if r["outcome"].startswith("error")]
    if errors:
        report.differences.append(f"runs that failed: {errors[:5]}")

    for what, found in (("alert", span_alerts), ("incident", recorded)):
        for trace in sorted(found - set(injected)):
            report.differences.append(f"false alarm: {what} for {trace}")

    def of(fault: str, traces: set[str]) -> set[str]:
        return {trace for trace in traces if injected.get(trace) == fault}

    for fault in ("hang", "stall", "block", "kill"):
        expected = of(fault, set(injected))
        detected = report.compare(
            f"{fault}: detected", expected, of(fault, {e["trace_id"] for e in hung})
        )
        alerted = report.compare(f"{fault}: alerted", expected, of(fault, span_alerts))
        if fault == "stall":
            aborted = str(
                report.compare("stall: aborted (app)", expected, of(fault, aborted_in_app))
            )
            report.compare("stall: aborted (sidecar)", expected, of(fault, aborted_by_sidecar))
        else:
            aborted = "-"
            report.compare(
                f"{fault}: aborted", set(), of(fault, aborted_in_app | aborted_by_sidecar)
            )
        stored = report.compare(f"{fault}: recorded", expected, of(fault, recorded))
        report.rows.append(
            (fault, str(len(expected)), str(detected), str(alerted), aborted, str(stored))
        )

    # The blocked loops and the killed process are findings of their own.
    # A loop blocked for 3.5 s is found (and alerted) once per sidecar that sees it.
    blocks = [r for r in records if r["fault"] == "block"]
    loop_found = [e for e in logs if e.get("event") == "event_loop_blocked"]
    loop_alerts = [a for a in firing if a["labels"]["alertname"] == "AgentEventLoopBlocked"]

    def during(moment: float) -> str:
        """The block run under way at ``moment`` (the finding's time, on this host)."""
        return next(
            (b["trace"] for b in blocks if b["started"] <= moment <= b["ended"] + 1),
            f"nothing injected at {moment:.3f}",
        )

    found = {during(epoch(e["ts"])) for e in loop_found}
    alerted_blocks = {during(epoch(a["startsAt"])) for a in loop_alerts}
    for what, traces in (("found", found), ("alerted", alerted_blocks)):
        report.compare(f"blocked loop: {what}", {b["trace"] for b in blocks}, traces)
    report.rows.append(
        ("loop blocked", str(len(blocks)), str(len(found)), str(len(alerted_blocks)), "-", "-")
    )
    died = [e for e in logs if e.get("event") == "process_died"]
    orphaned = [a for a in firing if a["labels"]["alertname"] == "AgentSpansOrphaned"]
    orphan_incidents = [i for i in incidents if i["state"] == "orphaned"]
    if (
        len(died) != 1
        or len(orphaned) != 1
        or {i["trace_id"] for i in orphan_incidents}
        != {t for t, f in injected.items() if f == "kill"}
    ):
        report.differences.append(
            f"killed: 1 injected, {len(died)} found dead, {len(orphaned)} orphan alerts, "
            f"orphaned incidents {[i['trace_id'] for i in orphan_incidents]}"
        )
    report.rows.append(
        ("process killed", "1", str(len(died)), str(len(orphaned)), "-", str(len(orphan_incidents)))
    )
    healthy = [r for r in records if r["fault"] == "ok"]
    false_alarms = [e for e in hung if e["trace_id"] not in injected]
    report.rows.append(
        ("healthy runs", str(len(healthy)), f"{len(false_alarms)} flagged", "-", "-", "-")
    )
    report.rows.append(("sidecar restarts", str(restarts), "-", "-", "-", "-"))
    return report
