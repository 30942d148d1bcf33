"""The stand-in's script language: what the fake model does, written in its model name.

A script is ``"standin:"`` followed by ``;``-separated steps. The step for a request is
chosen by how many tool results (``function_call_output`` input items) the agent has
already received, counted from its last handoff (so a handoff target starts at its own
first step); a ``tool=NAME*N`` step accounts for N results. Steps:

``reply=TEXT``
    A final assistant message with TEXT (a default text when empty; when the request asks for
    a JSON-schema output, an example object matching the schema).
``tool=NAME`` / ``tool=NAME*N``
    One (or N parallel) ``function_call`` items for tool NAME, with arguments made from the
    tool's parameter schema (required strings ``"x"``, numbers ``1``, booleans ``true``).
``handoff=AGENT_NAME``
    A call to the handoff tool ``transfer_to_<agent_name>`` (normalised the way the SDK does).
``hang``
    Never answer until released (:meth:`StandIn.release`, ``POST /control/release``), the
    stand-in is closed, or the client disconnects; then answer as ``reply=``.
``hang=once``
    Hang like ``hang`` the first time a request reaches this step of this model, and
    answer as ``reply=`` every later time: a call that heals on its retry.
``slow=SECONDS``
    Wait that long, then answer as ``reply=``.

Past the last step (or for a model name without the prefix) the answer is a default reply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DEFAULT_REPLY",
    "HANDOFF_PREFIX",
    "MODEL_PREFIX",
    "ScriptError",
    "Step",
    "StepKind",
    "count_tool_results",
    "handoff_tool_name",
    "parse_script",
    "script",
    "select_step",
]

MODEL_PREFIX = "standin:"
"""Model names starting with this prefix carry a script; any other name gets a default reply."""

DEFAULT_REPLY = "Done."
"""Text of the final message for ``reply=`` without text, released hangs, ``slow`` steps and
requests past the end of their script."""

HANDOFF_PREFIX = "transfer_to_"
"""How the SDK's handoff tools are named; a handoff result restarts the step count."""

_TOOL_NAME = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\*(\d+))?$")
_MAX_PARALLEL_CALLS = 64

StepKind = Literal["reply", "tool", "handoff", "hang", "slow"]


class ScriptError(ValueError):
    """A model-name script that cannot be parsed (answered with HTTP 400)."""


@dataclass(frozen=True)
class Step:
    """One parsed script step.

    ``value`` is the reply text, tool name or handoff agent name; ``count`` the number of
    parallel calls of a ``tool`` step; ``seconds`` the delay of a ``slow`` step.
    """

    kind: StepKind
    value: str = ""
    count: int = 1
    seconds: float = 0.0

    @property
    def results(self) -> int:
        """How many tool results this step accounts for when choosing later steps (at least 1)."""
        return self.count if self.kind == "tool" else 1


def script(*steps: str) -> str:
    """Build a stand-in model name from steps: ``script("tool=a", "reply=ok")``."""
    return MODEL_PREFIX + ";".join(steps)


def parse_script(model: str) -> list[Step]:
    """Parse a model name into steps.

    A name without :data:`MODEL_PREFIX` is an empty script. Raises :class:`ScriptError` for an
    unknown step or a malformed value. Step text cannot contain ``;``.
    """
    if not model.startswith(MODEL_PREFIX):
        return []
    steps: list[Step] = []
    for raw in model[len(MODEL_PREFIX) :].split(";"):
        part = raw.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if key == "reply":
            steps.append(Step("reply", value))
        elif key == "hang":
            if value not in ("", "once"):
                raise ScriptError(f"step {part!r}: expected hang or hang=once")
            steps.append(Step("hang", value))
        elif key == "tool":
            match = _TOOL_NAME.match(value)
            if match is None:
                raise ScriptError(f"step {part!r}: expected tool=NAME or tool=NAME*N")
            count = int(match.group(2)) if match.group(2) else 1
            if not 1 <= count <= _MAX_PARALLEL_CALLS:
                raise ScriptError(f"step {part!r}: N must be between 1 and {_MAX_PARALLEL_CALLS}")
            steps.append(Step("tool", match.group(1), count=count))
        elif key == "handoff":
            if not value:
                raise ScriptError(f"step {part!r}: expected handoff=AGENT_NAME")
            steps.append(Step("handoff", value))
        elif key == "slow":
            try:
                seconds = float(value)
            except ValueError:
                raise ScriptError(f"step {part!r}: expected slow=SECONDS") from None
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ScriptError(f"step {part!r}: SECONDS must be a finite number >= 0")
            steps.append(Step("slow", seconds=seconds))
        else:
            raise ScriptError(f"unknown step {part!r} in model {model!r}")
    return steps


def count_tool_results(items: Iterable[Mapping[str, Any]]) -> int:
    """Count ``function_call_output`` items after the last handoff result.

    A handoff result is the output of a ``function_call`` whose name starts with
    ``transfer_to_``; counting restarts after it so the receiving agent begins its own script.
    """
    items = list(items)
    handoff_calls = {
        item.get("call_id")
        for item in items
        if item.get("type") == "function_call"
        and str(item.get("name", "")).startswith(HANDOFF_PREFIX)
    }
    count = 0
    for item in items:
        if item.get("type") != "function_call_output":
            continue
        count = 0 if item.get("call_id") in handoff_calls else count + 1
    return count


def select_step(steps: Sequence[Step], tool_results: int) -> Step | None:
    """Return the step to perform after ``tool_results`` tool results, or None past the end.

    Each step accounts for :attr:`Step.results` results, so for scripts without ``*N`` the
    index is simply ``tool_results``.
    """
    remaining = tool_results
    index = 0
    while index < len(steps) and remaining > 0:
        remaining -= steps[index].results
        index += 1
    return steps[index] if index < len(steps) else None


def handoff_tool_name(agent_name: str) -> str:
    """The SDK's default handoff tool name for an agent: ``transfer_to_<normalised name>``."""
    name = re.sub(r"\s", "_", f"{HANDOFF_PREFIX}{agent_name}")
    return re.sub(r"[^a-zA-Z0-9_]", "_", name).lower()
