"""``make demo``: a real multi-agent app hangs, and the sidecar says so within seconds.

What runs, all on loopback, no API key and no network:
- a stand-in for the OpenAI Responses API (``watchdog.standin``);
- the sidecar, ``agents-watchdog serve``, as a child process with short demo thresholds;
- an openai-agents app: a Coordinator that asks a Researcher sub-agent (as a tool) and
  a Fact-checker tool; the Researcher's model request never returns.

The demo prints what the operator would see — the hung span in ``/v1/spans``, the
Prometheus metrics, the sidecar's log line, the alert arriving at a webhook receiver —
then releases the stuck request and shows the span recovering, the alert resolving and
the incident recorded. It exits 0 when every step happened as described.

The package, in the order the demo runs: ``tour.py`` (the whole demo, part by part),
``detection.py`` (part one: a hang flagged, shown and recovered), ``healing.py`` (part
two: a stuck call healed by timeout), ``stopping.py`` (part three: the abort ladder and
a blind process), ``apps.py`` (the agent apps it runs) and ``narration.py`` (what it
prints and how it reads the sidecar, as an operator would).
"""

from __future__ import annotations

from watchdog.demo.apps import build_app
from watchdog.demo.tour import main

__all__ = ["build_app", "main"]
