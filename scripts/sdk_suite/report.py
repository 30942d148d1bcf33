"""Findings of an SDK-suite run: outcome changes, watchdog warnings, spans left hung."""

from __future__ import annotations

import bisect
import json
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

_COLLECT_ERROR = re.compile(r"^ERROR (\S+\.py)(?: - (.*))?$")
_COLLECT_HEADER = re.compile(r"^_+ ERROR collecting (\S+\.py) _+$")
# What the sidecar holds at the end that nobody should have left: a hung span is still
# stuck, an orphaned one was left open by a process that died.
BAD_STATES = ("hung", "orphaned")
_SINCE_ALERTS = ("AgentProcessUnresponsive", "AgentEventLoopBlocked")


def collection_errors(output: str) -> dict[str, str]:
    """``{test file: reason}`` from ``pytest --collect-only -rE`` output."""
    errors: dict[str, str] = {}
    current = None
    for raw in output.splitlines():
        line = raw.strip()
        header = _COLLECT_HEADER.match(line)
        if header:
            current = header.group(1)
            continue
        if current and line.startswith("E   ") and current not in errors:
            errors[current] = line[4:].strip()
        match = _COLLECT_ERROR.match(line)
        if match:
            errors.setdefault(match.group(1), match.group(2) or "")
    return errors


# -- outcomes ---------------------------------------------------------------------------


def _test_id(case: ET.Element) -> str:
    file = case.get("file") or ""
    name = case.get("name") or ""
    classname = case.get("classname") or ""
    module = file.removesuffix(".py").replace("/", ".")
    if not file:
        return f"{classname}::{name}"
    if name == module:
        return file  # the module itself: an import-time skip or error
    owner = classname[len(module) + 1 :] if classname.startswith(module + ".") else ""
    return "::".join(part for part in (file, owner.replace(".", "::"), name) if part)


def _outcome(case: ET.Element) -> tuple[str, str]:
    found: list[str] = []
    message = ""
    for child in case:
        if child.tag in ("failure", "error"):
            found.append("failed" if child.tag == "failure" else "error")
            message = message or (child.get("message") or "")
        elif child.tag == "skipped":
            found.append("xfailed" if child.get("type") == "pytest.xfail" else "skipped")
            message = message or (child.get("message") or "")
    return ("+".join(sorted(set(found))) if found else "passed"), message


def outcomes(paths: list[Path]) -> dict[str, tuple[str, str]]:
    """``{test id: (outcome, message)}`` from JUnit XML files; missing files give nothing."""
    result: dict[str, tuple[str, str]] = {}
    for path in paths:
        if not path.exists():
            continue
        for case in ET.parse(path).iter("testcase"):
            test, (outcome, message) = _test_id(case), _outcome(case)
            if test in result and result[test][0] != outcome:
                merged = set(result[test][0].split("+")) | set(outcome.split("+"))
                merged.discard("passed")
                outcome = "+".join(sorted(merged)) or "passed"
            result[test] = (outcome, message)
    return result


# -- where a span came from ---------------------------------------------------------------


class Timeline:
    """Which test each process was running at a wall-clock time."""

    def __init__(self, folders: list[Path]) -> None:
        starts: dict[int, list[tuple[float, str, str]]] = defaultdict(list)
        for folder in folders:
            for path in sorted(folder.glob("timeline-*.jsonl")):
                for line in path.read_text(encoding="utf-8").splitlines():
                    entry = json.loads(line)
                    starts[entry["pid"]].append((entry["ts"], entry["event"], entry["test"]))
        self._events = {pid: sorted(events) for pid, events in starts.items()}

    def test_at(self, pid: int, when: float) -> str:
        events = self._events.get(pid)
        if not events:
            return f"<pid {pid} ran no test (a child process?)>"
        index = bisect.bisect_right(events, (when, "~", "~")) - 1
        if index < 0:
            return f"<before the first test of pid {pid}>"
        _, event, test = events[index]
        return test if event == "start" else f"<after {test}>"


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- the findings -------------------------------------------------------------------------


@dataclass
class Findings:
    """Everything the report says, gathered from one run's folder."""

    total: int = 0
    changes: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    reruns: dict[str, tuple[str, str]] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)
    recovered: list[dict[str, Any]] = field(default_factory=list)
    forgotten: list[dict[str, Any]] = field(default_factory=list)
    leaked: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    fakes: list[dict[str, Any]] = field(default_factory=list)
    sidecar_errors: list[dict[str, Any]] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    baseline_counts: dict[str, int] = field(default_factory=dict)
    attached_counts: dict[str, int] = field(default_factory=dict)
    dropped_events: int = 0

    def confirmed_changes(self) -> dict[str, tuple[str, str, str]]:
        """Changes that showed again when both modes reran them (all, without a rerun)."""
        if not self.reruns:
            return self.changes
        return {
            test: change
            for test, change in self.changes.items()
            if test not in self.reruns or self.reruns[test] == change[:2]
        }

    def hung(self) -> list[dict[str, Any]]:
        return [span for span in self.left if span.get("state") in BAD_STATES]

    def missed(self) -> list[dict[str, Any]]:
        """Spans open in the app that the sidecar neither lists nor reported leaked:
        the watchdog was blind to them."""
        leaked = {(span.get("pid"), span.get("span_id")) for span in self.leaked}
        return [
            span
            for span in self.left
            if span.get("state") == "not at sidecar"
            and (span.get("pid"), span.get("span_id")) not in leaked
        ]

    def failing(self) -> bool:
        return bool(self.confirmed_changes() or self.warnings or self.hung() or self.missed())

    def add_reruns(self, out: Path) -> None:
        base = outcomes([out / "rerun-baseline" / "rerun.xml"])
        attached = outcomes([out / "rerun-attached" / "rerun.xml"])
        for test in self.changes:
            self.reruns[test] = (
                base.get(test, ("missing", ""))[0],
                attached.get(test, ("missing", ""))[0],
            )

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "changes": self.changes,
            "reruns": self.reruns,
            "confirmed_changes": sorted(self.confirmed_changes()),
            "watchdog_warnings": self.warnings,
            "left_at_end": self.left,
            "flagged_then_recovered": self.recovered,
            "recovered_at_goodbye": self.forgotten,
            "leaked": self.leaked,
            "alerts_fired": self.alerts,
            "missed_by_sidecar": self.missed(),
            "test_doubles_left_open": self.fakes,
            "sidecar_errors": self.sidecar_errors,
            "processes": self.processes,
            "dropped_events": self.dropped_events,
        }


def _count(results: dict[str, tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for outcome, _ in results.values():
        counts[outcome] += 1
    return dict(sorted(counts.items()))


def analyse(out: Path, phases: list[str]) -> Findings:
    """Compare the two runs in ``out`` and read the attached run's records."""
    findings = Findings()
    base = outcomes([out / "baseline" / f"{phase}.xml" for phase in phases])
    attached = outcomes([out / "attached" / f"{phase}.xml" for phase in phases])
    findings.total = len(base.keys() | attached.keys())
    findings.baseline_counts, findings.attached_counts = _count(base), _count(attached)
    for test in sorted(base.keys() | attached.keys()):
        before = base.get(test, ("missing", ""))
        after = attached.get(test, ("missing", ""))
        if before[0] != after[0]:
            findings.changes[test] = (before[0], after[0], after[1] or before[1])

    folders = [out / "attached" / phase for phase in phases]
    timeline = Timeline(folders)
    for folder in folders:
        for path in sorted(folder.glob("watchdog-log-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                findings.warnings.append(json.loads(line))
        tapped = _read_left_open(folder, timeline, findings)
        _read_sidecar_log(folder, timeline, findings, tapped)
        processes = folder / "sidecar-processes.json"
        if processes.exists():
            body = json.loads(processes.read_text(encoding="utf-8"))
            for process in body.get("processes", []) if isinstance(body, dict) else []:
                findings.processes.append(dict(process, phase=folder.name))
    return findings


def _read_left_open(
    folder: Path, timeline: Timeline, findings: Findings
) -> dict[tuple[int, str], dict[str, Any]]:
    """Spans open at the end: the sidecar's final view, each joined with the test our
    tap saw start it (exact), else the test its process ran when it started (by time)."""
    by_key: dict[tuple[int, str], dict[str, Any]] = {}
    seen: set[tuple[int, str]] = set()
    for path in sorted(folder.glob("left-open-*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        findings.dropped_events += int(record.get("dropped_events") or 0)
        for item in record["left_open"]:
            if not item.get("sdk_object"):
                # A test double a test handed to the SDK's dispatcher (object(), a Mock):
                # no SDK span, nothing a real app would send.
                findings.fakes.append(dict(item, phase=folder.name, pid=record["pid"]))
                continue
            by_key[(record["pid"], str(item.get("key")))] = item
        for span in record["sidecar_spans"]:
            seen.add((span["pid"], span["span_id"]))
            findings.left.append(_left_entry(span, by_key, timeline, folder.name, "worker"))
        for (pid, key), item in by_key.items():
            if pid == record["pid"] and (pid, key) not in seen:
                # Our tap saw it open but the sidecar does not list it.
                findings.left.append(
                    {
                        "phase": folder.name,
                        "pid": pid,
                        "span_id": key,
                        "state": "not at sidecar",
                        "kind": item.get("kind"),
                        "name": item.get("name"),
                        "test": item.get("test"),
                        "test_source": "tap",
                        "seen_by": "tap",
                    }
                )
    final = folder / "sidecar-spans.json"
    if final.exists():
        body = json.loads(final.read_text(encoding="utf-8"))
        for span in body.get("spans", []) if isinstance(body, dict) else []:
            if (span["pid"], span["span_id"]) not in seen:
                findings.left.append(_left_entry(span, by_key, timeline, folder.name, "final"))
    return by_key


def _left_entry(
    span: dict[str, Any],
    by_key: dict[tuple[int, str], dict[str, Any]],
    timeline: Timeline,
    phase: str,
    seen_by: str,
) -> dict[str, Any]:
    entry = {
        key: span.get(key)
        for key in ("state", "kind", "name", "agent", "age_seconds", "threshold_seconds")
        + ("reason", "pid", "span_id", "trace_id", "parent_id", "started_at")
    }
    entry["phase"], entry["seen_by"] = phase, seen_by
    tapped = by_key.get((span["pid"], span["span_id"]))
    if tapped is not None:
        entry["test"], entry["test_source"] = tapped.get("test"), "tap"
    else:
        started = _epoch(span.get("started_at"))
        entry["test"] = timeline.test_at(span["pid"], started) if started else "?"
        entry["test_source"] = "time"
    return entry


def _read_sidecar_log(
    folder: Path,
    timeline: Timeline,
    findings: Findings,
    tapped: dict[tuple[int, str], dict[str, Any]],
) -> None:
    path = folder / "sidecar-log.jsonl"
    if not path.exists():
        return
    flagged: dict[tuple[Any, Any], dict[str, Any]] = {}
    began: dict[Any, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        event = entry.get("event")
        when = _epoch(entry.get("ts")) or 0.0
        if event == "span_hung":
            flagged[(entry.get("pid"), entry.get("span_id"))] = entry
        elif event == "span_leaked":
            item = tapped.get((entry.get("pid"), str(entry.get("span_id"))))
            started = when - float(entry.get("age_seconds") or 0)
            findings.leaked.append(
                {
                    "phase": folder.name,
                    "kind": entry.get("kind"),
                    "name": entry.get("name"),
                    "pid": entry.get("pid"),
                    "span_id": entry.get("span_id"),
                    "age_seconds": entry.get("age_seconds"),
                    "ts": entry.get("ts"),
                    "note": entry.get("note"),
                    "test": item.get("test") if item else timeline.test_at(entry["pid"], started),
                    "test_source": "tap" if item else "time",
                }
            )
        elif event in ("process_unresponsive", "event_loop_blocked"):
            # The alert that follows names its start: so long silent, or so long blocked.
            quiet = entry.get("silent_seconds") or entry.get("lag_seconds") or 0.0
            began[entry.get("pid")] = when - float(quiet)
        elif event == "alert_firing":
            labels = entry.get("labels") or {}
            pid = int(labels.get("pid") or 0)
            since = began.get(pid, when) if labels.get("alertname") in _SINCE_ALERTS else when
            findings.alerts.append(
                {
                    "phase": folder.name,
                    "ts": entry.get("ts"),
                    "alertname": labels.get("alertname"),
                    "pid": pid,
                    "kind": labels.get("kind"),
                    "name": labels.get("name"),
                    "summary": (entry.get("annotations") or {}).get("summary"),
                    "description": (entry.get("annotations") or {}).get("description"),
                    "test_at_alert": timeline.test_at(pid, since) if pid else "?",
                }
            )
        elif event == "span_recovered":
            hung = flagged.pop((entry.get("pid"), entry.get("span_id")), None)
            if entry.get("duration_seconds") is None:
                # Forgotten, not ended: its process said goodbye with it still open
                # (the plugin's own shutdown after recording it as left open).
                findings.forgotten.append(dict(entry, phase=folder.name))
                continue
            started = (_epoch(entry.get("ts")) or 0.0) - float(entry.get("duration_seconds") or 0)
            findings.recovered.append(
                {
                    "phase": folder.name,
                    "kind": entry.get("kind"),
                    "name": entry.get("name"),
                    "pid": entry.get("pid"),
                    "duration_seconds": entry.get("duration_seconds"),
                    "reason": (hung or {}).get("reason"),
                    "test": timeline.test_at(entry["pid"], started),
                }
            )
        elif event == "raw" or (
            entry.get("level") in ("error", "critical") and event != "process_died"
        ):
            # Anything the sidecar itself got wrong (a dead app process is not that).
            findings.sidecar_errors.append(dict(entry, phase=folder.name))


# -- the text ------------------------------------------------------------------------------


def render(
    findings: Findings,
    sdk_version: str,
    watched: str,
    skipped_files: dict[str, str],
    timings: dict[str, dict[str, float]],
    workers: int,
) -> str:
    lines = [f"SDK suite under agents-watchdog: openai-agents {sdk_version}, {workers} worker(s)"]
    lines.append(f"  agents-watchdog under test: {watched}")
    for mode, phases in timings.items():
        total = sum(phases.values())
        parts = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in phases.items())
        lines.append(f"  {mode}: {total:.0f} s ({parts})")
    lines.append(f"  tests: {findings.total}; baseline {findings.baseline_counts}")
    lines.append(f"         attached {findings.attached_counts}")
    if skipped_files:
        lines.append(f"  not collected in either run ({len(skipped_files)} files):")
        lines += [f"    {path}: {why}" for path, why in sorted(skipped_files.items())]

    confirmed = findings.confirmed_changes()
    lines.append("")
    lines.append(
        f"1. Outcome changes: {len(findings.changes)} ({len(confirmed)} confirmed by a rerun)"
    )
    for test, (before, after, message) in findings.changes.items():
        rerun = findings.reruns.get(test)
        note = ""
        if rerun:
            verdict = "reproduced" if rerun == (before, after) else "did not reproduce"
            note = f"; rerun alone: baseline {rerun[0]}, attached {rerun[1]} ({verdict})"
        lines.append(f"   {test}: {before} -> {after}{note}")
        if message:
            lines.append(f"      {message[:300]}")

    lines.append("")
    lines.append(f"2. watchdog log records at WARNING+: {len(findings.warnings)}")
    for record in findings.warnings:
        lines.append(
            f"   [{record['level']}] {record['logger']} (pid {record['pid']}, "
            f"{record['thread']}, during {record['test']}): {record['message']}"
        )
        if record.get("exc"):
            lines += [f"      {line}" for line in record["exc"].rstrip().splitlines()[-6:]]

    hung = findings.hung()
    lines.append("")
    lines.append(f"3. Spans hung or orphaned at the end: {len(hung)}")
    for span in hung:
        lines.append(_span_line(span))
    others = [
        span for span in findings.left if span.get("state") not in (*BAD_STATES, "not at sidecar")
    ]
    if others:
        lines.append(
            f"   also still open (not flagged themselves, e.g. parents of the above): {len(others)}"
        )
        lines += [_span_line(span) for span in others]

    missed = findings.missed()
    if missed:
        lines.append(f"   open in the app but unknown to the sidecar (blind): {len(missed)}")
        lines += [_span_line(span) for span in missed]

    lines.append("")
    lines.append(
        f"Spans the sidecar reported leaked (the task that opened them finished without "
        f"ending them; dropped, counted in leaked_spans_total, never hung): {len(findings.leaked)}"
    )
    for span in findings.leaked:
        lines.append(
            f"   {span['kind']} {span['name']!r} pid {span['pid']} span {span['span_id']}, "
            f"reported {span['age_seconds']} s after it began; "
            f"test ({span['test_source']}): {span['test']}"
        )
    lines.append(f"Alerts the sidecar fired during the run: {len(findings.alerts)}")
    for alert in findings.alerts:
        lines.append(
            f"   {alert['ts']} {alert['alertname']} pid {alert['pid']}: {alert['description']}"
        )
        lines.append(f"      test running in that process when it began: {alert['test_at_alert']}")
    lines.append(f"Flagged during the run, then ended (information): {len(findings.recovered)}")
    for span in findings.recovered:
        lines.append(
            f"   {span['kind']} {span['name']!r}: {span['duration_seconds']} s "
            f"({span['reason']}); test {span['test']}"
        )
    if findings.forgotten:
        lines.append(
            f"span_recovered logged at a goodbye (hung spans still open when the plugin shut "
            f"its processor down; duration null): {len(findings.forgotten)}"
        )
    if findings.fakes:
        lines.append(
            f"Test doubles (not SDK spans) tests passed to the dispatcher and never ended: "
            f"{len(findings.fakes)}, in "
            + ", ".join(sorted({str(item.get("test")) for item in findings.fakes}))
        )
    if findings.sidecar_errors:
        lines.append(f"Sidecar errors in its log: {len(findings.sidecar_errors)}")
        lines += [f"   {json.dumps(entry)[:400]}" for entry in findings.sidecar_errors]
    if findings.dropped_events:
        lines.append(f"Events the processors dropped (queue full): {findings.dropped_events}")
    states: dict[str, int] = defaultdict(int)
    for process in findings.processes:
        states[str(process.get("state"))] += 1
    lines.append(f"App processes the sidecar still knew at the end: {dict(states)}")
    lines.append("")
    lines.append("RESULT: " + ("FINDINGS (exit 1)" if findings.failing() else "clean (exit 0)"))
    return "\n".join(lines) + "\n"


def _span_line(span: dict[str, Any]) -> str:
    age = span.get("age_seconds")
    return (
        f"   [{span.get('state')}] {span.get('kind')} {span.get('name')!r}"
        + (f" agent={span['agent']!r}" if span.get("agent") else "")
        + (f" age {age:.1f} s" if isinstance(age, int | float) else "")
        + (f" reason: {span['reason']}" if span.get("reason") else "")
        + f"\n      pid {span.get('pid')} span {span.get('span_id')} ({span.get('phase')}, "
        f"seen by {span.get('seen_by')}); test ({span.get('test_source')}): {span.get('test')}"
    )
