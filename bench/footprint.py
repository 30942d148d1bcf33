"""What watching costs an app before its first span: import and ``install()``.

A fresh interpreter imports ``agents`` and builds the SDK's own trace provider (its
exporter and HTTP stack, as an app's first run would), then the clock and the resident
set size are read around ``import watchdog.processor`` plus ``install()``. Today's
processor and the one before its sender worked in bulk (``bench/baseline.py``) are
measured in alternating fresh processes, from compiled bytecode as an installed package
is (a first, unmeasured run writes it); the medians are reported.

Run alone: ``python -m bench.footprint``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from bench import baseline
from bench.report import Figure, Section

PROBE: Final = """
import json, os, sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
import agents
agents.tracing.get_trace_provider()
before_modules = set(sys.modules)
rss0, t0 = rss(), time.perf_counter()
module = __import__(MODULE, fromlist=["install"])
module.install(url="http://127.0.0.1:9", service="footprint")
t1, rss1 = time.perf_counter(), rss()
added = sorted(set(sys.modules) - before_modules)
print(json.dumps({"ms": (t1 - t0) * 1e3, "mib": (rss1 - rss0) / 2**20, "modules": added}))
"""


def probe(module: str, path: str | None) -> dict[str, object]:
    """One fresh process importing ``module`` and installing its processor."""
    env = dict(os.environ)
    # As an installed package is: compiled once (pip writes the bytecode at install).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    code = PROBE.replace("MODULE", repr(module))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def measure(quick: bool) -> Section:
    """Import time and memory added by the processor, today's and the baseline's."""
    runs = 5 if quick else 15
    section = Section(
        "footprint",
        "App footprint: import and install()",
        __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
    )
    folder = Path(tempfile.mkdtemp(prefix="agents-watchdog-before-"))
    cases: dict[str, tuple[str, str | None]] = {"after": ("watchdog.processor", None)}
    if baseline.write_modules(folder):
        cases["before"] = ("watchdog_before", str(folder))
    found: dict[str, list[dict[str, object]]] = {name: [] for name in cases}
    for module, path in cases.values():
        probe(module, path)  # writes the bytecode, as an install would have
    for _ in range(runs):
        for name, (module, path) in cases.items():
            found[name].append(probe(module, path))

    def median(name: str, key: str) -> float:
        return statistics.median(float(str(r[key])) for r in found[name])

    modules = len(found["after"][0]["modules"])  # type: ignore[arg-type]
    section.add(
        Figure(
            "import + install() time",
            median("after", "ms"),
            "ms",
            30.0,
            context=f"median of {runs} fresh processes; {modules} modules added",
            digits=1,
        )
    )
    section.add(
        Figure(
            "import + install() memory",
            median("after", "mib"),
            "MiB",
            10.0,
            context="resident set growth",
            digits=1,
        )
    )
    if "before" in found:
        old_modules = len(found["before"][0]["modules"])  # type: ignore[arg-type]
        section.add(
            Figure(
                "import + install() time, before",
                median("before", "ms"),
                "ms",
                context=f"the processor at {baseline.BEFORE}; {old_modules} modules added",
                digits=1,
            )
        )
        section.add(
            Figure(
                "import + install() memory, before",
                median("before", "mib"),
                "MiB",
                context="resident set growth",
                digits=1,
            )
        )
    return section


if __name__ == "__main__":
    from bench.report import render_console

    print(render_console(measure("--quick" in sys.argv)))
