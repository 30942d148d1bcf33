"""A uvicorn server whose graceful stop on SIGINT/SIGTERM ends in a normal exit."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import uvicorn

__all__ = ["GracefulServer"]


class GracefulServer(uvicorn.Server):
    """uvicorn's server, minus re-raising the signal after shutting down.

    uvicorn re-raises a captured SIGTERM once it has stopped, so the process dies "by
    signal" (exit status -15) even after a clean shutdown. A daemon that stopped
    cleanly should say so with status 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM as a graceful stop; restore the previous handlers after."""
        # Signals can only be handled on the main thread (servers in test threads).
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        # signal.signal rather than loop.add_signal_handler: it hands back the previous
        # handlers, so they can be restored.
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
