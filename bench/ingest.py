"""Sidecar ingest: sustained events per second over HTTP, and CPU at a typical load.

One real sidecar subprocess; several poster subprocesses (bench/wire.py) post
pre-built batches of the real wire protocol over loopback HTTP, as app processes do.
Events per second come from the sidecar's own ``events_received_total`` counter over
a window that leaves out start-up and wind-down; CPU is the sidecar process's user +
system time (psutil ``cpu_times``) over the same window.
"""

from __future__ import annotations

import argparse
import time
from typing import Final

import httpx
import psutil

from bench import wire
from bench.report import Figure, Section, render_console
from watchdog._sidecar_process import SidecarProcess

__all__ = ["events_received", "measure"]

METHOD: Final = """\
A real sidecar subprocess (default configuration, JSON log at `info`) on loopback.
*Sustained*: {flooders} poster subprocesses each send batches of 2,000 events back to
back over one keep-alive connection; the batches are encoded once, before the clock
starts, from interleaved agent runs (trace, agent, three turns, a model call per turn,
a tool call in two of them), so every span that starts also ends. Events per second
are read from the sidecar's `events_received_total` over a {window:.0f} s window after a
1 s warm-up; CPU per event is the sidecar's user + system CPU time (psutil) over that
window divided by the events. On this machine the posters share the second core, so
the sidecar's CPU share during the window is given too. *Typical load*: 4 posters each
send 2,500 events/s in batches every 250 ms (10,000 events/s in all, 16 requests/s); the
sidecar's CPU over a {window:.0f} s window as a percentage of one core."""


def events_received(url: str) -> float:
    """The sidecar's ``events_received_total``, summed over services."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("agents_watchdog_events_received_total")
    )


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _window(
    sidecar: SidecarProcess, posters: list[wire.Posting], warmup: float, window: float
) -> tuple[float, float, float, list[dict[str, int]]]:
    """Let ``posters`` run; returns (events, cpu seconds, wall seconds, poster results)
    over a window that starts after ``warmup``."""
    process = psutil.Process(sidecar.pid)
    for poster in posters:
        poster.ready()
    for poster in posters:
        poster.go()
    time.sleep(warmup)
    events0, cpu0, wall0 = events_received(sidecar.url), _cpu(process), time.monotonic()
    time.sleep(window)
    events1, cpu1, wall1 = events_received(sidecar.url), _cpu(process), time.monotonic()
    results = [poster.result() for poster in posters]
    return events1 - events0, cpu1 - cpu0, wall1 - wall0, results


def sustained(sidecar: SidecarProcess, flooders: int, window: float) -> tuple[float, float, float]:
    """(events/s, CPU µs per event, the sidecar's share of one core) under flooding."""
    posters = [wire.start(sidecar.url, seconds=window + 2.0) for _ in range(flooders)]
    events, cpu, wall, results = _window(sidecar, posters, 1.0, window)
    failures = sum(r["failures"] for r in results)
    if failures:
        raise RuntimeError(f"the sidecar refused {failures} batches")
    return events / wall, cpu / events * 1e6, cpu / wall


def typical(sidecar: SidecarProcess, window: float) -> tuple[float, float]:
    """(the sidecar's CPU % of one core, events/s) at 10,000 events/s from 4 processes."""
    posters = [
        wire.start(sidecar.url, seconds=window + 2.0, rate=2500, batch=625, runs=250)
        for _ in range(4)
    ]
    events, cpu, wall, _ = _window(sidecar, posters, 1.0, window)
    return cpu / wall * 100, events / wall


def measure(quick: bool) -> Section:
    """The ingest section."""
    flooders, window = 3, (4.0 if quick else 20.0)
    section = Section("ingest", "Sidecar ingest", METHOD.format(flooders=flooders, window=window))
    with SidecarProcess() as sidecar:
        process = psutil.Process(sidecar.pid)
        cpu0 = _cpu(process)
        time.sleep(1.0)
        idle = (_cpu(process) - cpu0) * 100
        rate, per_event, share = sustained(sidecar, flooders, window)
        section.add(
            Figure(
                "sustained ingest",
                rate,
                "events/s",
                200_000,
                at_most=False,
                context=f"sidecar at {share:.0%} of a core during the window",
            )
        )
        section.add(
            Figure(
                "sidecar CPU per event",
                per_event,
                "us",
                1e6 / 200_000,
                context="the per-event cost that one core's 200,000 events/s allows",
            )
        )
        percent, achieved = typical(sidecar, window)
        section.add(
            Figure(
                "sidecar CPU at 10,000 events/s",
                percent,
                "% of a core",
                10.0,
                context=f"{achieved:,.0f} events/s delivered; idle sidecar {idle:.1f} %",
            )
        )
    return section


def main(argv: list[str] | None = None) -> int:
    """Run this section alone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(render_console(measure(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
