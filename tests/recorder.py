"""A loopback HTTP endpoint that records what a processor sends.

The real sidecar cannot show the exact bytes on the wire, nor fail on command; this
stand-in exists for the tests that are about those two things (what the processor
sends, and how it behaves when the sidecar errors or restarts). Everything else is
tested against the real sidecar.
"""

from __future__ import annotations

import threading
import uuid
from types import TracebackType

from tests.receivers import LoopbackServer, QuietHandler
from watchdog.protocol import PROTOCOL_VERSION, Batch, Reply, decode_batch, encode


class Recorder:
    """Records every batch; ``status`` other than 200 makes it fail requests."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.batches: list[Batch] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.attempts = 0
        self.waiting = 0
        # Cleared, requests wait before they are answered: a sidecar that is slow.
        self.answering = threading.Event()
        self.answering.set()
        self.sidecar_id = uuid.uuid4().hex
        self.ask_resync = False
        self.changed = threading.Condition()
        recorder = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with recorder.changed:
                    recorder.waiting += 1
                    recorder.changed.notify_all()
                recorder.answering.wait(60)
                with recorder.changed:
                    recorder.attempts += 1
                    status = recorder.status
                    reply = Reply(
                        v=PROTOCOL_VERSION,
                        sidecar_id=recorder.sidecar_id,
                        resync=recorder.ask_resync,
                    )
                    if status == 200:
                        recorder.ask_resync = False
                        recorder.bodies.append(body)
                        recorder.batches.append(decode_batch(body))
                        recorder.headers.append({k.lower(): v for k, v in self.headers.items()})
                    recorder.changed.notify_all()
                payload = encode(reply) if status == 200 else b'{"error": "down"}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._http = LoopbackServer(Handler)
        self.url = self._http.url

    def wait_for(self, check: object, timeout: float = 10.0, since: int = 0) -> Batch:
        """The first recorded batch, from index ``since``, for which ``check`` holds."""
        import time

        assert callable(check)
        deadline = time.monotonic() + timeout
        with self.changed:
            index = since
            while True:
                while index < len(self.batches):
                    batch = self.batches[index]
                    index += 1
                    if check(batch):
                        return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no matching batch arrived")
                self.changed.wait(remaining)

    def __enter__(self) -> Recorder:
        self._http.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._http.stop()
