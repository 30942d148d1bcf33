"""Wire messages between the in-app processor and the sidecar.

Both sides import this module and nothing else from each other. Every message is a
``msgspec.Struct`` so that decoding *is* validation: a wrong type, a missing field, an
unknown field or an out-of-range number fails with a message that names the path.

The processor speaks one message, :class:`Batch`, to ``POST /v1/events``; the sidecar
answers with :class:`Reply`. A batch always carries the process identity and a
heartbeat, so the sidecar needs no session state to understand any single request.

Timestamps are the *app's* ``time.monotonic()`` readings: they never jump when the wall
clock is stepped. The sidecar maps them onto its own clock using ``Batch.sent_at``
(the app's monotonic time when the batch left) and the time it arrived, and the
heartbeat's ``wall_minus_mono`` turns them into wall-clock times for display.

Privacy: the wire carries ids, kinds, names (agent, tool, workflow), timings and
process identity. It never carries prompts, model outputs or tool arguments.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_STACK_LENGTH",
    "PROTOCOL_VERSION",
    "Batch",
    "ClientTimeoutsInfo",
    "Command",
    "CommandResult",
    "Event",
    "Heartbeat",
    "LoopReport",
    "ProcessInfo",
    "Reply",
    "SpanEnd",
    "SpanStart",
    "UnsupportedVersion",
    "decode_batch",
    "decode_reply",
    "encode",
]

PROTOCOL_VERSION: Final = 1
MAX_ID_LENGTH: Final = 128
MAX_NAME_LENGTH: Final = 256
MAX_STACK_LENGTH: Final = 32_768

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Name = Annotated[str, Meta(max_length=MAX_NAME_LENGTH)]
Short = Annotated[str, Meta(max_length=64)]
# Monotonic readings and epoch seconds are finite and positive; the upper bound
# rejects absurd values (and infinities) long before float arithmetic goes wrong.
Seconds = Annotated[float, Meta(ge=0.0, le=1e12)]
Count = Annotated[int, Meta(ge=0, le=2**53)]
Pid = Annotated[int, Meta(ge=0, le=2**31)]


class SpanStart(msgspec.Struct, array_like=True, tag="s", forbid_unknown_fields=True):
    """A span (or a trace, as kind ``trace``) began.

    Encoded as a JSON array ``["s", span_id, trace_id, parent_id, kind, name, started,
    thread_id, task_id]`` to keep batches small. ``parent_id`` is ``None`` for a trace
    and for spans directly under their trace. ``thread_id`` and ``task_id`` identify
    the code that opened the span (``threading.get_ident()``, ``id(task)``).
    """

    span_id: Id
    trace_id: Id
    parent_id: Id | None
    kind: Short
    name: Name
    started: Seconds
    thread_id: Count
    task_id: Count | None = None


class SpanEnd(msgspec.Struct, array_like=True, tag="e", forbid_unknown_fields=True):
    """A span ended: ``["e", span_id, ended, error]``; ``error`` says only whether it failed."""

    span_id: Id
    ended: Seconds
    error: bool = False


Event = SpanStart | SpanEnd


class ClientTimeoutsInfo(msgspec.Struct, forbid_unknown_fields=True):
    """The timeouts of the SDK's default OpenAI client, as the app read them once when
    its sender started: seconds to connect and per read (None: no limit), retries
    (None: unknown), and where the figures come from (``openai default``, ...)."""

    connect: Annotated[float, Meta(ge=0.0, le=1e9)] | None
    read: Annotated[float, Meta(ge=0.0, le=1e9)] | None
    max_retries: Annotated[int, Meta(ge=0, le=1_000_000)] | None
    source: Short


class ProcessInfo(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Who is speaking: stable for the life of one process (a forked child gets a new one).

    Fields left at their defaults are not sent, so a sidecar older than a field still
    takes a process that leaves it unset."""

    instance_id: Id
    pid: Pid
    host: Name
    create_time: Seconds
    service: Name
    sdk_version: Short = ""
    watchdog_version: Short = ""
    # None when the app could not tell (an older app, or reading them failed).
    client_timeouts: ClientTimeoutsInfo | None = None


class LoopReport(msgspec.Struct, forbid_unknown_fields=True):
    """One event loop that ran spans: how late its last probe ran (``lag``, seconds), on
    which thread, and — while it is blocked — that thread's stack."""

    thread_id: Count
    lag: Annotated[float, Meta(ge=0.0, le=1e9)]
    stack: Annotated[str, Meta(max_length=MAX_STACK_LENGTH)] | None = None


class Heartbeat(msgspec.Struct, forbid_unknown_fields=True):
    """Liveness and health of the processor, sent with every batch."""

    interval: Annotated[float, Meta(gt=0.0, le=3600.0)]
    open_spans: Count
    dropped_events: Count
    wall_minus_mono: Annotated[float, Meta(ge=-1e12, le=1e12)]
    loops: Annotated[list[LoopReport], Meta(max_length=1000)] = []
    # Spans that began and ended between two sends and were summarised rather than
    # sent one by one (beyond the sampled ones), since the process started.
    summarised: Count = 0
    # Failures raised on the sender thread that it recovered from, since it started.
    sender_errors: Count = 0
    # Why agent runs of this process go unseen (tracing off, the processor removed),
    # with the fix; None while everything it runs is watched.
    blind: Annotated[str, Meta(max_length=1000)] | None = None


class CommandResult(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """What became of a command: ``ok`` when it was carried out (a cancel delivered to
    the task's event loop); ``detail`` says what happened or why not."""

    id: Count
    ok: bool
    detail: Annotated[str, Meta(max_length=1000)]
    stack: Annotated[str, Meta(max_length=MAX_STACK_LENGTH)] | None = None
    # With stacks: the probable cause of the hang and its fix, in plain words.
    cause: Annotated[str, Meta(max_length=1000)] | None = None


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    """The one message the processor sends.

    The sidecar applies ``events`` in order, then, when ``resync`` is present, makes
    the process's open spans exactly the spans listed there (the processor's own view,
    which already includes every event in this batch). ``goodbye`` marks a clean
    shutdown of the app, so the sidecar forgets the process without calling it dead.
    """

    v: int
    process: ProcessInfo
    seq: Count
    sent_at: Seconds
    heartbeat: Heartbeat
    events: list[Event] = []
    resync: list[SpanStart] | None = None
    goodbye: bool = False
    results: list[CommandResult] = []
    # Spans (or traces) under which summarised short spans ran since the last batch:
    # activity that keeps those containers from looking idle.
    active: Annotated[list[Id], Meta(max_length=100_000)] = []
    # Spans that can never end: the task (or thread) that opened them has finished
    # without ending them. The sidecar drops them from the open set, never flags them.
    leaked: Annotated[list[Id], Meta(max_length=100_000)] = []


class Command(msgspec.Struct):
    """Work for the processor. ``timeout``: make the innermost await of the work of span
    ``span_id`` raise ``TimeoutError``. ``cancel``: end the run of span ``span_id``
    (cancel its task and its run's). ``cancel_trace``: end every run with a span open in
    trace ``span_id``.
    ``stacks``: capture the stacks of the span's task and thread."""

    id: int
    action: str
    span_id: str
    reason: str = ""


class Reply(msgspec.Struct):
    """The sidecar's answer. ``sidecar_id`` changes when the sidecar restarts;
    ``resync`` asks the processor to send its full open-span state; ``commands`` are
    to be carried out, their results sent back in a following batch."""

    v: int
    sidecar_id: str
    resync: bool = False
    commands: list[Command] = []


_batch_decoder: Final = msgspec.json.Decoder(Batch)
_reply_decoder: Final = msgspec.json.Decoder(Reply)
_encoder: Final = msgspec.json.Encoder()


class _Envelope(msgspec.Struct):
    v: int


def decode_batch(body: bytes) -> Batch:
    """Decode and validate a batch, or raise ``ValueError`` saying what is wrong.

    An unsupported protocol version is reported as such even when the rest of the
    message would not decode, so an old sidecar tells a new app what the problem is.
    """
    try:
        batch = _batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        _check_version(body)
        raise ValueError(f"invalid batch: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    except RecursionError:
        # msgspec recurses per nesting level; a hostile body can exhaust the stack.
        raise ValueError("invalid batch: JSON nested too deeply") from None
    if batch.v != PROTOCOL_VERSION:
        raise UnsupportedVersion(batch.v)
    return batch


class UnsupportedVersion(ValueError):
    """The peer speaks a protocol version this side does not."""

    def __init__(self, version: object) -> None:
        super().__init__(
            f"unsupported protocol version {version!r}; this side speaks {PROTOCOL_VERSION}"
        )
        self.version = version


def _check_version(body: bytes) -> None:
    try:
        envelope = msgspec.json.decode(body, type=_Envelope)
    except (msgspec.MsgspecError, RecursionError):
        return
    if envelope.v != PROTOCOL_VERSION:
        raise UnsupportedVersion(envelope.v)


def decode_reply(body: bytes) -> Reply:
    """Decode the sidecar's reply; raises ``msgspec.MsgspecError`` on bad input."""
    return _reply_decoder.decode(body)


def encode(message: Batch | Reply) -> bytes:
    """Encode a message as compact JSON."""
    return _encoder.encode(message)
