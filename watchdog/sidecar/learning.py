"""Learned thresholds: recent completed durations per kind/name, in bounded memory.

A rule with ``threshold = "auto"`` lets the threshold of each kind/name it matches
follow ``factor`` times a high quantile of that pair's last ``window`` completed
durations, clamped to ``[floor, ceiling]``. Only spans that ended normally teach: a span
that was flagged as hung, or whose end time is unknown (it ended while the sidecar could
not hear), does not, so repeated hangs cannot talk the threshold up to themselves.

Memory is bounded twice: ``window`` float64 samples per pair in a ring, and at most
``max_names`` pairs, the least recently taught forgotten first. The samples (not the
thresholds) are saved to a JSON file, so a restart keeps what was learned even when the
rule's factor or quantile changed meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any, Final, NamedTuple

from watchdog.sidecar.config import KINDS, LearningConfig, Resolved, Thresholds

__all__ = ["DurationLearner", "Learned", "load", "save", "threshold_rows"]

FORMAT_VERSION: Final = 1


class Learned(NamedTuple):
    """The threshold in force for one kind/name under an ``auto`` rule, and why."""

    threshold: float
    source: str  # "learned", or "learning" while fewer than min_samples are known
    samples: int
    observed: float | None  # the quantile of the recent durations, seconds
    clamped: str | None  # "floor" or "ceiling" when the learned value was held there


class _Series:
    """A ring of one kind/name's recent durations, with its quantile cached."""

    __slots__ = ("_cached", "_fresh", "_next", "count", "values")

    def __init__(self, window: int) -> None:
        self.values = array("d", bytes(8 * window))
        self.count = 0  # samples held, at most the window
        self._next = 0
        self._cached: dict[float, float] = {}
        self._fresh = 0  # samples added since the cache was filled

    def add(self, duration: float, window: int) -> None:
        self.values[self._next] = duration
        self._next = (self._next + 1) % window
        self.count = min(self.count + 1, window)
        self._fresh += 1
        # Recomputing on every sample would cost a sort per span end; a quantile moved
        # by a sixteenth of the window is the coarsest change worth following.
        if self._fresh >= max(1, window // 16) or self.count < 64:
            self._cached.clear()
            self._fresh = 0

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile of the held samples (``count`` must be > 0)."""
        found = self._cached.get(q)
        if found is None:
            ordered = sorted(self.values[: self.count])
            rank = max(1, math.ceil(q * len(ordered)))
            found = self._cached[q] = ordered[rank - 1]
        return found

    def recent(self, window: int) -> list[float]:
        """The held samples, oldest first."""
        if self.count < window:
            return list(self.values[: self.count])
        return list(self.values[self._next :]) + list(self.values[: self._next])


class DurationLearner:
    """Recent durations per kind/name and the thresholds ``auto`` rules derive from them.
    Single-threaded: the sidecar's event loop is its only caller."""

    def __init__(self, config: LearningConfig) -> None:
        self.config = config
        self._series: OrderedDict[tuple[str, str], _Series] = OrderedDict()
        self.changed = False  # since the last save

    def __len__(self) -> int:
        return len(self._series)

    def observe(self, kind: str, name: str, duration: float) -> None:
        """Learn one completed duration (seconds) of a kind/name."""
        if not (math.isfinite(duration) and duration >= 0):
            return
        key = (kind, name)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.config.max_names:
                self._series.popitem(last=False)
            series = self._series[key] = _Series(self.config.window)
        else:
            self._series.move_to_end(key)
        series.add(duration, self.config.window)
        self.changed = True

    def threshold(self, kind: str, name: str, resolved: Resolved) -> Learned:
        """The threshold in force for a kind/name whose rule is ``auto``
        (``resolved.threshold`` is the rule's ceiling)."""
        auto = resolved.auto
        assert auto is not None
        ceiling = resolved.threshold
        series = self._series.get((kind, name))
        count = 0 if series is None else series.count
        if series is None or count < auto.min_samples:
            return Learned(ceiling, "learning", count, None, None)
        observed = series.quantile(auto.quantile)
        value = observed * auto.factor
        if value < auto.floor:
            return Learned(auto.floor, "learned", count, observed, "floor")
        if value > ceiling:
            return Learned(ceiling, "learned", count, observed, "ceiling")
        return Learned(value, "learned", count, observed, None)

    def names(self) -> Iterator[tuple[str, str]]:
        """Every kind/name with learned durations."""
        return iter(list(self._series))

    # -- persistence (plain functions of the state: run them on a worker thread) -------

    def snapshot(self) -> dict[str, Any]:
        """The learned state as JSON-ready data; marks it saved."""
        window = self.config.window
        self.changed = False
        return {
            "version": FORMAT_VERSION,
            "saved_at": time.time(),
            "durations": [
                {"kind": kind, "name": name, "seconds": series.recent(window)}
                for (kind, name), series in self._series.items()
            ],
        }

    def restore(self, data: object) -> int:
        """Take back a :meth:`snapshot`; returns the number of kind/names restored.
        Raises ``ValueError`` naming what is wrong with it."""
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError(f"expected an object with version {FORMAT_VERSION}")
        entries = data.get("durations")
        if not isinstance(entries, list):
            raise ValueError("durations: expected a list")
        restored = 0
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"durations[{index}]: expected an object")
            kind, name, seconds = entry.get("kind"), entry.get("name"), entry.get("seconds")
            if not (isinstance(kind, str) and isinstance(name, str) and isinstance(seconds, list)):
                raise ValueError(f"durations[{index}]: expected kind, name and seconds")
            for value in seconds[-self.config.window :]:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.observe(kind, name, float(value))
            restored += 1
        self.changed = False
        return restored


def save(path: str, snapshot: dict[str, Any]) -> None:
    """Write ``snapshot`` to ``path`` atomically (a reader sees the old file or the new)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".learned-", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(snapshot, out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def load(path: str) -> object | None:
    """The saved state at ``path``, or None when there is none yet.
    Raises ``ValueError`` when the file exists but cannot be read as JSON."""
    try:
        with open(path, encoding="utf-8") as source:
            data: object = json.load(source)
            return data
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def threshold_rows(
    thresholds: Thresholds, learner: DurationLearner, seen: Iterable[tuple[str, str]]
) -> list[dict[str, Any]]:
    """``GET /v1/thresholds``: each kind's own threshold (``name`` null), then every
    kind/name seen or learned, with the threshold in force and where it came from."""
    rows: list[dict[str, Any]] = []
    for kind in sorted(KINDS):
        value, setting = thresholds.base(kind)
        rows.append(_row(kind, None, value, "configured", setting, None, None))
    for kind, name in sorted(set(seen) | set(learner.names())):
        resolved = thresholds.resolve(kind, name)
        if resolved.auto is None:
            rows.append(
                _row(
                    kind,
                    name,
                    resolved.threshold,
                    "configured",
                    resolved.setting,
                    resolved.action,
                    None,
                )
            )
            continue
        learned = learner.threshold(kind, name, resolved)
        auto = resolved.auto
        detail = {
            "samples": learned.samples,
            "min_samples": auto.min_samples,
            "quantile": auto.quantile,
            "observed_seconds": learned.observed,
            "factor": auto.factor,
            "floor_seconds": auto.floor,
            "ceiling_seconds": resolved.threshold,
            "clamped": learned.clamped,
        }
        rows.append(
            _row(
                kind,
                name,
                learned.threshold,
                learned.source,
                resolved.setting,
                resolved.action,
                detail,
            )
        )
    return rows


def _row(
    kind: str,
    name: str | None,
    value: float,
    source: str,
    setting: str,
    action: str | None,
    learning: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "threshold_seconds": round(value, 6),
        "source": source,
        "setting": setting,
        "action": action,
        "learning": learning,
    }
