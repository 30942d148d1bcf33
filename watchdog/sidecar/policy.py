"""The threshold policy: which threshold, action and deadline apply to a span.

A span of a kind gets the kind's ``[thresholds]`` value (``default`` for kinds not
listed) and its ``[max_duration]``; the first ``[[rules]]`` entry whose ``kind`` and
``name`` glob match it may set its own threshold (a number, or ``"auto"``: learned from
recent durations), an action and a severity. A rule with ``cause`` applies later, once a
hung span's probable cause is known. The tables and entries are declared here as msgspec
Structs: the config loader decodes them, and the same fields are the JSON Schema and
``docs/configuration.md``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, NamedTuple, get_args

import msgspec
from msgspec import UNSET, Meta, UnsetType

from watchdog.sidecar._config_forms import (
    ConfigError,
    Seconds,
    integer,
    known_keys,
    number,
    one_of,
    struct_info,
    tables,
    unknown_key,
)

__all__ = [
    "ACTIONS",
    "CONTAINER_KINDS",
    "DEFAULT_THRESHOLDS",
    "KINDS",
    "SEVERITIES",
    "Action",
    "AutoThreshold",
    "Kind",
    "LearningConfig",
    "MaxDurationTable",
    "Resolved",
    "Rule",
    "Severity",
    "ThresholdTable",
    "KIND_ORDER",
    "Thresholds",
    "check_rules",
    "kind_table",
    "shape_rules",
]

# The span kinds the SDK emits, plus `trace` for the trace itself.
Kind = Literal[
    "trace",
    "task",
    "agent",
    "turn",
    "response",
    "generation",
    "function",
    "handoff",
    "guardrail",
    "custom",
    "mcp_tools",
    "transcription",
    "speech",
    "speech_group",
]
KIND_ORDER: Final[tuple[str, ...]] = get_args(Kind)
KINDS: Final = frozenset(KIND_ORDER)
# Containers are judged by idleness of their subtree, leaves by time open.
CONTAINER_KINDS: Final = frozenset({"trace", "task", "agent", "turn"})
Action = Literal["alert", "timeout", "cancel", "terminate", "kill"]
ACTIONS: Final[tuple[str, ...]] = get_args(Action)
Severity = Literal["info", "warning", "critical"]
SEVERITIES: Final[tuple[str, ...]] = get_args(Severity)

DEFAULT_THRESHOLDS: Final[Mapping[str, float]] = {
    "default": 120.0,
    # Reasoning models legitimately think for minutes; the OpenAI client itself
    # gives up on a read only after 600 s.
    "response": 300.0,
    "generation": 300.0,
    "function": 300.0,
    "mcp_tools": 60.0,
    "handoff": 60.0,
    # Containers: seconds with no span starting or ending anywhere below them while
    # none of their descendants is open (an open descendant is judged on its own).
    "trace": 600.0,
    "task": 600.0,
    "agent": 600.0,
    "turn": 600.0,
}


def _kind_meaning(kind: str) -> str:
    if kind in CONTAINER_KINDS:
        return f"Seconds a `{kind}` span may go with nothing starting or ending below it."
    return f"Seconds a `{kind}` span may stay open."


# `[thresholds]` and `[max_duration]` hold one key per kind; built from KINDS so that a
# new kind is a key of both, with the same form and the same environment variable.
ThresholdTable: Final = msgspec.defstruct(
    "ThresholdTable",
    [
        (
            "default",
            Annotated[Seconds, Meta(description="Threshold of every kind not listed.")],
            DEFAULT_THRESHOLDS["default"],
        ),
        *(
            (
                kind,
                Annotated[Seconds | UnsetType, Meta(description=_kind_meaning(kind))],
                DEFAULT_THRESHOLDS.get(kind, UNSET),
            )
            for kind in KIND_ORDER
        ),
    ],
    frozen=True,
    forbid_unknown_fields=True,
    module=__name__,
)
MaxDurationTable: Final = msgspec.defstruct(
    "MaxDurationTable",
    [
        (
            kind,
            Annotated[
                Seconds | UnsetType,
                Meta(description=f"Seconds a `{kind}` span may last at all, busy or not."),
            ],
            UNSET,
        )
        for kind in KIND_ORDER
    ],
    frozen=True,
    forbid_unknown_fields=True,
    module=__name__,
)


def kind_table(table: msgspec.Struct) -> dict[str, float]:
    """The keys a ``[thresholds]`` or ``[max_duration]`` table sets (defaults included)."""
    values = msgspec.structs.asdict(table)
    return {kind: float(value) for kind, value in values.items() if value is not UNSET}


class AutoThreshold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``threshold = "auto"``: the threshold follows ``factor`` times a high ``quantile``
    of the kind/name's recent completed durations, kept within ``[floor, ceiling]``.

    Until ``min_samples`` durations are known the ceiling applies; ``ceiling = None``
    means the kind's configured threshold, so learning only ever tightens it.
    """

    floor: Annotated[Seconds, Meta(description='With `threshold = "auto"`: never below this.')] = (
        1.0
    )
    ceiling: Annotated[
        Seconds | None,
        Meta(description="Never above this; default: the kind's `[thresholds]` value."),
    ] = None
    factor: Annotated[
        float,
        number(
            1,
            1000,
            "a number from 1 to 1000",
            "The threshold is factor x quantile of recent durations.",
        ),
    ] = 3.0
    quantile: Annotated[
        float,
        number(
            0.5,
            1,
            "a number from 0.5 to 1 (0.99: p99)",
            "Which quantile of recent durations (0.99: p99).",
        ),
    ] = 0.99
    min_samples: Annotated[
        int, integer(1, 100_000, "Until this many durations are known, the ceiling applies.")
    ] = 20


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[rules]]`` entry; ``None`` fields fall through to the kind's defaults.

    In TOML, ``threshold = "auto"`` and the keys of :class:`AutoThreshold` beside it
    make ``auto``.
    """

    kind: Annotated[
        Kind | None, Meta(description="The span kind it applies to; any kind when absent.")
    ] = None
    name: Annotated[str, Meta(description="A glob over the span's name.")] = "*"
    threshold: Annotated[
        Seconds | None,
        Meta(
            description='Seconds, or "auto" to learn it from recent durations.',
            # "auto" is read into `auto` before decoding; the schema still offers it.
            extra={"form": 'a number of seconds > 0 or "auto"', "also": "auto"},
        ),
    ] = None
    action: Annotated[
        Action,
        Meta(description="What to do when such a span hangs.", extra={"form": one_of(ACTIONS)}),
    ] = "alert"
    severity: Annotated[
        Severity,
        Meta(description="The alerts' severity label.", extra={"form": one_of(SEVERITIES)}),
    ] = "warning"
    auto: Annotated[AutoThreshold | None, Meta(extra={"flatten": True})] = None
    # A glob over the hung span's probable cause: such a rule applies once the cause is
    # known (with the stacks), to a span whose first matching rule takes no action.
    cause: Annotated[
        str | None,
        Meta(
            description="A glob over a hung span's probable cause; such a rule gives an action only."
        ),
    ] = None

    def matches(self, kind: str, name: str, cause: str | None = None) -> bool:
        """True when this rule applies to a span of ``kind`` named ``name`` (and, for a
        rule with ``cause``, whose probable cause is ``cause``)."""
        if self.cause is not None and (cause is None or not fnmatch.fnmatchcase(cause, self.cause)):
            return False
        return (self.kind is None or self.kind == kind) and fnmatch.fnmatchcase(name, self.name)


_AUTO_KEYS: Final = frozenset(known_keys(struct_info(AutoThreshold)))


def shape_rules(entries: object) -> list[set[str]]:
    """Read ``[[rules]]`` tables the way :class:`Rule` holds them, in place:
    ``threshold = "auto"`` and the auto keys beside it become ``auto``. Returns the keys
    each rule was written with, for :func:`check_rules`."""
    written = []
    for index, rule in enumerate(tables(entries)):
        key = f"rules[{index}]"
        if "auto" in rule:  # a field of Rule, but not a key of the file
            raise unknown_key(f"{key}.auto", known_keys(struct_info(Rule)))
        auto: dict[str, Any] = {name: rule.pop(name) for name in list(rule) if name in _AUTO_KEYS}
        written.append(set(rule))
        if rule.get("threshold") == "auto":
            del rule["threshold"]
            rule["auto"] = auto
        elif auto:
            raise ConfigError(f"{key}.{next(iter(auto))}", 'only allowed with threshold = "auto"')
    return written


def check_rules(rules: tuple[Rule, ...], written: list[set[str]]) -> None:
    """What no field of a rule says alone; ``written`` as :func:`shape_rules` returned.
    Raises :class:`ConfigError`."""
    for index, (rule, keys) in enumerate(zip(rules, written, strict=True)):
        key = f"rules[{index}]"
        if not keys & {"threshold", "action", "severity"}:
            raise ConfigError(key, "a rule needs at least one of threshold, action, severity")
        if rule.cause is not None and ("threshold" in keys or "action" not in keys):
            raise ConfigError(
                f"{key}.cause",
                "a rule with cause gives an action only (the cause is known once the span "
                "has hung, after its threshold)",
            )
        auto = rule.auto
        if auto is not None and auto.ceiling is not None and auto.ceiling < auto.floor:
            raise ConfigError(
                f"{key}.ceiling", f"must be at least floor ({auto.floor:g}), got {auto.ceiling:g}"
            )


class LearningConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[learning]``: memory and persistence of the durations ``auto`` rules learn from."""

    path: Annotated[
        str,
        Meta(
            description="Where learned durations are kept; default: beside the incident database."
        ),
    ] = ""
    window: Annotated[int, integer(16, 100_000, "Recent durations kept per kind/name.")] = 256
    max_names: Annotated[
        int, integer(1, 1_000_000, "Kind/name pairs remembered; the least recently used go first.")
    ] = 4096


class Resolved(NamedTuple):
    """The settings in force for one span. With ``auto`` set, ``threshold`` is the
    ceiling, in force until enough durations are learned; ``setting`` names the config
    key the threshold came from (``thresholds.response``, ``rules[2]``)."""

    threshold: float
    action: Action
    max_duration: float | None
    severity: str
    auto: AutoThreshold | None = None
    setting: str = ""


@dataclass(frozen=True)
class Thresholds:
    """Resolves the threshold, action and optional whole-span deadline of a span."""

    by_kind: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    max_duration: Mapping[str, float] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    def base(self, kind: str) -> tuple[float, str]:
        """The kind's threshold, and the key it comes from."""
        if kind in self.by_kind:
            return self.by_kind[kind], f"thresholds.{kind}"
        return self.by_kind["default"], "thresholds.default"

    def resolve(self, kind: str, name: str) -> Resolved:
        """What applies to a span of ``kind`` named ``name``: first matching rule wins."""
        base, setting = self.base(kind)
        cap = self.max_duration.get(kind)
        for index, rule in enumerate(self.rules):
            if rule.matches(kind, name):
                threshold, auto = base, rule.auto
                if auto is not None:
                    threshold = base if auto.ceiling is None else auto.ceiling
                    # A floor above the kind's threshold wins: the floor is explicit.
                    threshold = max(threshold, auto.floor)
                    setting = f"rules[{index}]"
                elif rule.threshold is not None:
                    threshold, setting = rule.threshold, f"rules[{index}]"
                return Resolved(threshold, rule.action, cap, rule.severity, auto, setting)
        return Resolved(base, "alert", cap, "warning", None, setting)

    def action_for_cause(self, kind: str, name: str, cause: str) -> tuple[Action, str] | None:
        """The action of the first rule with a ``cause`` that matches a hung span whose
        probable cause is ``cause``, and its key (``rules[3]``); None when none does."""
        for index, rule in enumerate(self.rules):
            if rule.cause is not None and rule.matches(kind, name, cause):
                return rule.action, f"rules[{index}]"
        return None

    def edges(self) -> list[float]:
        """Every configured threshold, for use as histogram bucket edges."""
        values = set(self.by_kind.values()) | set(self.max_duration.values())
        values |= {r.threshold for r in self.rules if r.threshold is not None}
        values |= {r.auto.floor for r in self.rules if r.auto is not None}
        values |= {r.auto.ceiling for r in self.rules if r.auto and r.auto.ceiling is not None}
        return sorted(values)
