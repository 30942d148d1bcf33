"""Where is it stuck: the stacks of a hung span's task and thread.

When a span is flagged, the owning process is asked (a ``stacks`` command on the reply
to its next batch) for the stack of the asyncio task that opened the span — the whole
chain of awaiting coroutines — and of the thread. If no answer comes within
``STACK_TIMEOUT`` seconds (the process is wedged or stopped), and ``py-spy`` is installed,
the process is on this host and its pid was verified, the sidecar takes an out-of-process
dump with ``py-spy dump`` instead. Either way it says which it used, or why there is none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable
from typing import Final

from watchdog.protocol import MAX_STACK_LENGTH, CommandResult
from watchdog.sidecar.commands import CommandQueue
from watchdog.sidecar.logs import log_event
from watchdog.sidecar.registry import OpenSpan, RegistryListener

__all__ = ["StackCollector"]

STACK_TIMEOUT: Final = 3.0
PY_SPY_TIMEOUT: Final = 15.0

# (span, source, stack or None, note, cause or None): the incident and the alert hear of it.
StackReport = Callable[[OpenSpan, str, str | None, str, str | None], None]


class StackCollector(RegistryListener):
    """Asks for the stacks of every newly hung span; falls back to py-spy."""

    def __init__(self, commands: CommandQueue, report: StackReport) -> None:
        self.commands = commands
        self.report = report
        self.host = socket.gethostname()
        self._tasks: set[asyncio.Task[None]] = set()

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """Ask the owning process for stacks, and start the fallback timer."""
        ident = self.commands.issue(
            span.process.info.instance_id,
            "stacks",
            span.span_id,
            "hung span",
            lambda result: self._answered(span, result),
        )
        task = asyncio.get_running_loop().create_task(self._fallback(span, ident))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answered(self, span: OpenSpan, result: CommandResult) -> None:
        if result.ok and result.stack:
            self._record(span, "in-process", result.stack, result.detail, result.cause)
        else:
            self._record(span, "none", None, f"the process could not capture: {result.detail}")

    async def _fallback(self, span: OpenSpan, ident: int) -> None:
        await asyncio.sleep(STACK_TIMEOUT)
        if not self.commands.pending(ident):
            return
        self.commands.abandon(ident)
        process = span.process
        cause = (
            f"the process did not answer within {STACK_TIMEOUT:g} s: its sender thread "
            "gets no turn, so something holds the GIL or the whole process is stopped "
            "(a C extension call that never returns, SIGSTOP, a debugger)"
        )
        why_not = None
        # On PATH, or beside this Python (installed into the same environment).
        py_spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=os.path.dirname(sys.executable)
        )
        if py_spy is None:
            why_not = "py-spy is not installed"
        elif process.info.host != self.host:
            why_not = f"the process runs on {process.info.host}, not here"
        elif not process.verified:
            why_not = f"the process's pid is not verified ({process.verify_note})"
        if why_not is not None:
            self._record(
                span,
                "none",
                None,
                f"the process did not answer within {STACK_TIMEOUT:g} s and {why_not}",
                cause,
            )
            return
        assert py_spy is not None
        stack, note = await _py_spy_dump(py_spy, process.info.pid)
        self._record(span, "py-spy" if stack else "none", stack, note, cause)

    def _record(
        self, span: OpenSpan, source: str, stack: str | None, note: str, cause: str | None = None
    ) -> None:
        span.stack = stack
        span.stack_source = source
        span.cause = cause
        log_event(
            logging.WARNING,
            "span_stack",
            span_id=span.span_id,
            trace_id=span.trace_id,
            service=span.process.service,
            pid=span.process.info.pid,
            source=source,
            note=note,
            cause=cause,
            stack=stack,
        )
        self.report(span, source, stack, note, cause)

    async def stop(self) -> None:
        """Cancel pending fallbacks (sidecar shutdown)."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _py_spy_dump(py_spy: str, pid: int) -> tuple[str | None, str]:
    """``py-spy dump --pid``: (stack, note)."""
    try:
        process = await asyncio.create_subprocess_exec(
            py_spy,
            "dump",
            # Read without suspending the process: a stopped or wedged one cannot be.
            "--nonblocking",
            "--pid",
            str(pid),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        return None, f"py-spy could not start: {exc}"
    try:
        out, err = await asyncio.wait_for(process.communicate(), PY_SPY_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None, f"py-spy did not finish within {PY_SPY_TIMEOUT:g} s"
    if process.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        return None, f"py-spy failed (exit {process.returncode}): {reason[0][:300]}"
    text = out.decode(errors="replace")
    if len(text) > MAX_STACK_LENGTH:
        text = text[: MAX_STACK_LENGTH - 20] + "\n  ... (truncated)"
    return text, "out-of-process dump by py-spy (the process did not answer)"
