"""Run the benchmarks: ``python -m bench [--quick] [--only SECTION ...] [--write FILE]``.

Quick mode (``make bench-quick``) is a smoke run of under two minutes that prints each
figure with its target and PASS/MISS. Full mode (``make bench``) measures at full size
and writes the tables into docs/performance.md, between its generated-part markers; a
full run of some sections (``--only``) replaces their tables and keeps the others.
Sections run one after another, never at once: each owns the machine while it measures.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bench import (
    detection,
    footprint,
    ingest,
    processor_memory,
    processor_overhead,
    stack_capture,
    whole_runs,
)
from bench.report import Section, machine, render_console, write_document

SECTIONS: Final[dict[str, Callable[[bool], Section]]] = {
    "hot_path": processor_overhead.measure,
    "footprint": footprint.measure,
    "whole_runs": whole_runs.measure,
    "ingest": ingest.measure,
    "detection": detection.measure,
    "processor_memory": processor_memory.measure,
    "stack_capture": stack_capture.measure,
}
DOCUMENT: Final = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections; returns 1 if one failed to run (a missed target is not
    a failure: it is a result, and it is reported)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke run (under 2 minutes)")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run these only")
    parser.add_argument(
        "--write",
        type=Path,
        default=None,
        help=f"write the tables into this file (default in full mode: {DOCUMENT})",
    )
    args = parser.parse_args(argv)
    logging.getLogger("openai.agents").setLevel(logging.ERROR)
    mode = "quick" if args.quick else "full"
    where = machine()
    print(f"agents-watchdog benchmarks, {mode} mode, on {where}", flush=True)
    sections: list[Section] = []
    failed = []
    begin = time.monotonic()
    for key in args.only or SECTIONS:
        section_begin, started = time.monotonic(), datetime.datetime.now(datetime.UTC)
        try:
            section = SECTIONS[key](args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(key)
            continue
        section.seconds, section.started = time.monotonic() - section_begin, started
        sections.append(section)
        print(render_console(section), flush=True)
    figures = [f for s in sections for f in s.figures if f.passed is not None]
    misses = [f"{s.title}: {f.name}" for s in sections for f in s.figures if f.passed is False]
    print(
        f"\n{len(figures) - len(misses)} of {len(figures)} targets met "
        f"in {time.monotonic() - begin:.0f} s"
        + (f"; sections that failed: {failed}" if failed else "")
    )
    for miss in misses:
        print(f"  MISS {miss}")
    target = args.write or (None if args.quick else DOCUMENT)
    if target is not None and sections:
        write_document(target, sections, list(SECTIONS), mode, where)
        print(f"wrote {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
