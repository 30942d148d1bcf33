"""An app that forks without exec while its processor is busy, as prefork servers do.

    python -m tests.fork_app SIDECAR_URL CHILDREN

The parent registers a processor, opens a span that stays open (``parent-stuck``) and
keeps short spans going on a thread, so that its sender is at work — possibly holding
a lock — when it forks. It forks CHILDREN children, one after another, without exec.
Each child opens a span of its own that stays open (``child-stuck-N``), runs short
spans, prints ``child N PID``, and waits for SIGUSR1; then even-numbered children end
their span and flush, odd-numbered ones leave it open, and all exit with ``os._exit``
(no goodbye, as a worker killed by its master). The parent prints ``forked``, waits for
SIGUSR1 and exits normally (its processor says goodbye).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from agents import custom_span, trace
from agents.tracing import set_trace_processors

from watchdog.processor import WatchdogProcessor


def short_spans(stop: threading.Event) -> None:
    with trace("parent-load"):
        while not stop.is_set():
            with custom_span("work"):
                stop.wait(0.002)  # the span's work


def child(index: int, processor: WatchdogProcessor) -> None:
    with trace(f"child-{index}") as run:
        stuck = custom_span(f"child-stuck-{index}", parent=run)
        stuck.start()
        for _ in range(200):
            with custom_span("work"):
                pass
        # One write per line: the parent and its children share this pipe.
        os.write(1, f"child {index} {os.getpid()}\n".encode())
        signal.sigwait({signal.SIGUSR1})
        if index % 2 == 0:
            stuck.finish()
    if index % 2 == 0:
        processor.force_flush()  # what it ended is known; then gone without a word
    os._exit(0)


def main(url: str, children: int) -> None:
    # Delivered to sigwait only: blocked in every thread, children included.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    processor = WatchdogProcessor(
        url, service="forker", flush_interval=0.1, heartbeat_interval=0.25
    )
    set_trace_processors([processor])
    stop = threading.Event()
    load = threading.Thread(target=short_spans, args=(stop,), daemon=True)
    with trace("parent-run") as run:
        stuck = custom_span("parent-stuck", parent=run)
        stuck.start()
        load.start()
        for index in range(children):
            for _ in range(50):  # the sender has something to do at the fork
                with custom_span("work"):
                    pass
            if os.fork() == 0:
                child(index, processor)
        os.write(1, b"forked\n")
        signal.sigwait({signal.SIGUSR1})
        stop.set()
        load.join()
        stuck.finish()
    processor.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
