"""The in-process stack reaches the line that waits, through each asyncio/anyio construct.

Each test runs an event loop in a thread of its own, gets a task stuck somewhere it can
recognise, and captures from the test thread — as the sender thread does in an app.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from watchdog._stacks import capture, task_stack

TIMEOUT = 10.0


class LoopThread:
    """An event loop running in a thread of its own; leaving cancels what still runs
    there, shuts its default executor down and joins the thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="stacks-loop", daemon=True)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        assert self._ready.wait(TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the loop thread did not exit"

    @property
    def thread_id(self) -> int:
        assert self._thread.ident is not None
        return self._thread.ident

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    def start(self, coro: Coroutine[Any, Any, Any], name: str = "stacks-test") -> asyncio.Task[Any]:
        """``coro`` as a task on the loop."""
        assert self.loop is not None
        made: concurrent.futures.Future[asyncio.Task[Any]] = concurrent.futures.Future()
        loop = self.loop
        self.loop.call_soon_threadsafe(lambda: made.set_result(loop.create_task(coro, name=name)))
        return made.result(TIMEOUT)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    with LoopThread() as running:
        yield running


def frame_shown(stack: str, function: str, source: str) -> bool:
    """Whether ``stack`` has a frame of ``function`` whose source line is ``source``."""
    lines = stack.splitlines()
    return any(
        line.endswith(f", in {function}") and following.strip() == source
        for line, following in zip(lines, lines[1:], strict=False)
    )


def stack_showing(
    task: asyncio.Task[Any],
    loop: LoopThread,
    *frames: tuple[str, str],
    order: tuple[str, ...] = (),
) -> str:
    """The captured stack of ``task`` once it shows every (function, source line) of
    ``frames`` and the texts of ``order``, each below the one before: the stuck code
    signals just before it awaits, so the task may still need a moment to suspend.
    Fails with the last capture."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        stack = capture(None, (0.0, loop.thread_id, task))
        if all(frame_shown(stack, *frame) for frame in frames) and in_order(stack, *order):
            return stack
        if time.monotonic() > deadline:
            pytest.fail(f"the stack never showed {frames} {order}:\n{stack}")
        time.sleep(0.02)  # polling with a deadline, not synchronising


STUCK = ("stuck_in_wait", "await never.wait()  # stuck here")


async def stuck_in_wait(entered: threading.Event) -> str:
    never = asyncio.Event()
    entered.set()
    await never.wait()  # stuck here
    return "never"


def blocked_in_thread(entered: threading.Event, release: threading.Event) -> str:
    entered.set()
    release.wait(TIMEOUT)  # blocked here
    return "released"


BLOCKED = ("blocked_in_thread", "release.wait(TIMEOUT)  # blocked here")


def in_order(stack: str, *texts: str) -> bool:
    """Whether each of ``texts`` appears in ``stack`` below the one before."""
    position = 0
    for text in texts:
        found = stack.find(text, position)
        if found < 0:
            return False
        position = found + len(text)
    return True


# -- async generators ---------------------------------------------------------------


async def events(entered: threading.Event) -> AsyncIterator[str]:
    yield "first"
    yield await stuck_in_wait(entered)


async def relayed(entered: threading.Event) -> AsyncIterator[str]:
    async for event in events(entered):  # relays the inner stream
        yield event


def test_async_for_is_followed_into_the_generators(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def consume() -> None:
        async for _event in relayed(entered):  # consumes the stream
            pass

    task = loop_thread.start(consume())
    assert entered.wait(TIMEOUT)
    stack = stack_showing(
        task,
        loop_thread,
        ("consume", "async for _event in relayed(entered):  # consumes the stream"),
        ("relayed", "async for event in events(entered):  # relays the inner stream"),
        ("events", "yield await stuck_in_wait(entered)"),
        STUCK,
        order=("in consume", "in relayed", "in events", "in stuck_in_wait"),
    )
    assert stack.startswith("Task 'stacks-test' (awaiting, outermost first):")


def test_anext_and_athrow_are_followed_into_the_generator(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def cleaning_up() -> AsyncGenerator[str, None]:
        try:
            yield "first"
        finally:
            await stuck_in_wait(entered)  # cleanup that hangs

    async def consume() -> None:
        stream = cleaning_up()
        await anext(stream, None)
        await stream.aclose()  # waits for the cleanup

    task = loop_thread.start(consume())
    assert entered.wait(TIMEOUT)
    stack_showing(
        task,
        loop_thread,
        ("consume", "await stream.aclose()  # waits for the cleanup"),
        ("cleaning_up", "await stuck_in_wait(entered)  # cleanup that hangs"),
        STUCK,
    )


# -- tasks awaited through a future -------------------------------------------------


def test_asyncio_wait_shows_the_awaited_task(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def caller() -> None:
        child = asyncio.create_task(stuck_in_wait(entered), name="waited-child")
        await asyncio.wait({child}, return_when=asyncio.FIRST_COMPLETED)

    task = loop_thread.start(caller(), name="caller")
    assert entered.wait(TIMEOUT)
    stack_showing(
        task,
        loop_thread,
        STUCK,
        order=("in caller", "  -> awaiting 'waited-child':", "in stuck_in_wait"),
    )


def test_the_awaited_task_of_asyncio_wait_names_its_caller(loop_thread: LoopThread) -> None:
    entered = threading.Event()
    children: list[asyncio.Task[Any]] = []

    async def caller() -> None:
        children.append(asyncio.create_task(stuck_in_wait(entered), name="waited-child"))
        await asyncio.wait(children)  # waits for its child

    loop_thread.start(caller(), name="caller")
    assert entered.wait(TIMEOUT)
    stack = stack_showing(
        children[0], loop_thread, STUCK, order=("in caller", "(the span's task)", "in stuck_")
    )
    assert stack.startswith("Task 'caller' (awaiting, outermost first):"), stack
    assert frame_shown(stack, "caller", "await asyncio.wait(children)  # waits for its child")


def test_as_completed_shows_the_awaited_tasks_both_ways(loop_thread: LoopThread) -> None:
    entered = threading.Event()
    children: list[asyncio.Task[Any]] = []

    async def caller() -> None:
        children.append(asyncio.create_task(stuck_in_wait(entered), name="screening"))
        for next_done in asyncio.as_completed(children):
            await next_done  # the first to finish

    task = loop_thread.start(caller(), name="caller")
    assert entered.wait(TIMEOUT)
    stack_showing(
        task,
        loop_thread,
        ("caller", "await next_done  # the first to finish"),
        STUCK,
        order=("in caller", "  -> awaiting 'screening':", "in stuck_in_wait"),
    )
    stack_showing(
        children[0],
        loop_thread,
        STUCK,
        order=("Task 'caller' (awaiting", "in caller", "(the span's task)", "in stuck_in_wait"),
    )


def test_wait_for_shows_the_awaited_task(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def caller() -> None:
        child = asyncio.create_task(stuck_in_wait(entered), name="timed-child")
        await asyncio.wait_for(child, timeout=60)  # with a timeout

    task = loop_thread.start(caller(), name="caller")
    assert entered.wait(TIMEOUT)
    stack_showing(
        task,
        loop_thread,
        ("caller", "await asyncio.wait_for(child, timeout=60)  # with a timeout"),
        STUCK,
        order=("in caller", "in wait_for", "  -> awaiting 'timed-child':", "in stuck_in_wait"),
    )


def test_gather_shows_every_child(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def quick() -> None:
        await asyncio.Event().wait()  # the other child

    async def caller() -> None:
        await asyncio.gather(quick(), stuck_in_wait(entered))

    task = loop_thread.start(caller(), name="caller")
    assert entered.wait(TIMEOUT)
    stack = stack_showing(
        task, loop_thread, STUCK, ("quick", "await asyncio.Event().wait()  # the other child")
    )
    assert stack.count("  -> awaiting 'Task-") == 2, stack


def test_shield_shows_the_inner_task(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def caller() -> None:
        await asyncio.shield(asyncio.create_task(stuck_in_wait(entered), name="shielded"))

    task = loop_thread.start(caller(), name="caller")
    assert entered.wait(TIMEOUT)
    stack = stack_showing(task, loop_thread, STUCK, order=("  -> awaiting 'shielded':",))
    assert stack.count("in stuck_in_wait") == 1, stack


def test_asyncio_task_group_shows_its_tasks(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def caller() -> None:
        async with asyncio.TaskGroup() as group:  # waits for its tasks
            group.create_task(stuck_in_wait(entered), name="grouped")

    task = loop_thread.start(caller(), name="caller")
    assert entered.wait(TIMEOUT)
    stack_showing(
        task,
        loop_thread,
        ("caller", "async with asyncio.TaskGroup() as group:  # waits for its tasks"),
        STUCK,
        order=("in caller", "in __aexit__", "  -> awaiting 'grouped':", "in stuck_in_wait"),
    )


def test_anyio_task_group_shows_its_tasks(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def caller() -> None:
        async with anyio.create_task_group() as group:  # waits for its tasks
            group.start_soon(stuck_in_wait, entered, name="anyio-grouped")

    task = loop_thread.start(caller(), name="caller")
    assert entered.wait(TIMEOUT)
    stack_showing(
        task,
        loop_thread,
        ("caller", "async with anyio.create_task_group() as group:  # waits for its tasks"),
        STUCK,
        order=(
            "in caller",
            "anyio/_backends/_asyncio.py",
            "in __aexit__",
            "  -> awaiting 'anyio-grouped':",
            "in stuck_in_wait",
        ),
    )


def test_anyio_memory_stream_receive_is_followed(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def stuck_in_receive() -> None:
        send, receive = anyio.create_memory_object_stream[str](1)
        async with send, receive:
            entered.set()
            await receive.receive()  # nothing is ever sent

    task = loop_thread.start(stuck_in_receive())
    assert entered.wait(TIMEOUT)
    stack_showing(
        task,
        loop_thread,
        ("stuck_in_receive", "await receive.receive()  # nothing is ever sent"),
        ("receive", "await receive_event.wait()"),
        order=("in stuck_in_receive", "anyio/streams/memory.py", "asyncio/locks.py", "in wait"),
    )


def test_a_request_awaited_through_asyncio_wait_reaches_its_response_stream(
    loop_thread: LoopThread,
) -> None:
    """The SDK's MCP tool call: ``asyncio.wait`` on a task that sends a request and waits
    on its response stream (mcp's send_request), under anyio's ``fail_after``."""
    entered = threading.Event()

    async def send_request(responses: Any) -> Any:
        with anyio.fail_after(60):
            entered.set()
            return await responses.receive()  # the response that never comes

    async def invoke_tool() -> None:
        send, receive = anyio.create_memory_object_stream[str](1)
        async with send, receive:
            call = asyncio.create_task(send_request(receive), name="call_tool")
            await asyncio.wait({call}, return_when=asyncio.FIRST_COMPLETED)

    task = loop_thread.start(invoke_tool(), name="invoke_tool")
    assert entered.wait(TIMEOUT)
    stack_showing(
        task,
        loop_thread,
        ("send_request", "return await responses.receive()  # the response that never comes"),
        ("receive", "await receive_event.wait()"),
        order=("in invoke_tool", "  -> awaiting 'call_tool':", "in send_request", "in receive"),
    )


# -- work running in threads --------------------------------------------------------


def test_run_in_executor_names_the_worker_thread_and_its_line(loop_thread: LoopThread) -> None:
    entered, release = threading.Event(), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stacks-pool") as pool:

        async def caller() -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(pool, blocked_in_thread, entered, release)

        try:
            task = loop_thread.start(caller(), name="caller")
            assert entered.wait(TIMEOUT)
            stack_showing(
                task,
                loop_thread,
                BLOCKED,
                order=(
                    "in caller",
                    "  -> running in thread 'stacks-pool_0' (most recent call last):",
                    "concurrent/futures/thread.py",
                    "in blocked_in_thread",
                ),
            )
        finally:
            release.set()


def test_to_thread_names_the_default_executors_thread(loop_thread: LoopThread) -> None:
    entered, release = threading.Event(), threading.Event()

    async def caller() -> None:
        await asyncio.to_thread(blocked_in_thread, entered, release)

    try:
        task = loop_thread.start(caller(), name="caller")
        assert entered.wait(TIMEOUT)
        stack_showing(
            task,
            loop_thread,
            BLOCKED,
            order=("in caller", "in to_thread", "  -> running in thread 'asyncio_", "in blocked_"),
        )
    finally:
        release.set()


def test_anyio_to_thread_names_its_worker_thread(loop_thread: LoopThread) -> None:
    entered, release = threading.Event(), threading.Event()

    async def caller() -> None:
        await anyio.to_thread.run_sync(blocked_in_thread, entered, release)

    try:
        task = loop_thread.start(caller(), name="caller")
        assert entered.wait(TIMEOUT)
        stack_showing(
            task,
            loop_thread,
            BLOCKED,
            order=(
                "in caller",
                "in run_sync",
                "  -> running in thread 'AnyIO worker thread' (most recent call last):",
                "in blocked_in_thread",
            ),
        )
    finally:
        release.set()


def test_work_queued_behind_a_busy_pool_says_no_thread_runs_it_yet(loop_thread: LoopThread) -> None:
    entered, release = threading.Event(), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="busy-pool") as pool:

        async def caller() -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(pool, blocked_in_thread, entered, release)

        try:
            loop_thread.start(caller(), name="first")
            assert entered.wait(TIMEOUT)
            queued = loop_thread.start(caller(), name="queued")
            stack = stack_showing(
                queued,
                loop_thread,
                order=("in caller", "no thread runs yet (queued in its executor"),
            )
            assert "busy-pool" not in stack and "in blocked_in_thread" not in stack
        finally:
            release.set()


def test_code_blocking_the_event_loop_shows_in_the_threads_stack(loop_thread: LoopThread) -> None:
    entered, release = threading.Event(), threading.Event()

    async def blocks_the_loop() -> None:
        blocked_in_thread(entered, release)  # sync code in a coroutine

    try:
        task = loop_thread.start(blocks_the_loop())
        assert entered.wait(TIMEOUT)
        stack_showing(
            task,
            loop_thread,
            BLOCKED,
            order=(
                "in blocks_the_loop",  # the task, running: no await to follow
                "Thread 'stacks-loop' (now, most recent call last):",
                "in blocks_the_loop",
                "in blocked_in_thread",
            ),
        )
    finally:
        release.set()


# -- bounds --------------------------------------------------------------------------


def test_a_deep_chain_and_a_wide_gather_stay_bounded(loop_thread: LoopThread) -> None:
    entered = threading.Event()

    async def deep(depth: int) -> None:
        if depth:
            await deep(depth - 1)
        else:
            await stuck_in_wait(entered)

    async def wide() -> None:
        await asyncio.gather(*(asyncio.Event().wait() for _ in range(200)), deep(300))

    task = loop_thread.start(wide(), name="wide")
    assert entered.wait(TIMEOUT)
    stack = capture(None, (0.0, loop_thread.thread_id, task))
    lines = task_stack(task)
    assert "  ... (more awaited tasks and threads not shown)" in lines
    assert len(lines) < 40 * 2 * 40, len(lines)
    assert len(stack) <= 32_768


def test_capturing_while_tasks_and_threads_come_and_go_never_raises(
    loop_thread: LoopThread,
) -> None:
    entered = threading.Event()

    async def churn() -> None:
        entered.set()
        while True:  # cancelled when the loop thread stops
            await asyncio.gather(*(asyncio.sleep(0) for _ in range(20)))
            await asyncio.wait({asyncio.create_task(asyncio.sleep(0))})
            await asyncio.to_thread(sum, range(100))

    task = loop_thread.start(churn(), name="churn")
    assert entered.wait(TIMEOUT)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over mid-walk as often as possible
    try:
        for _ in range(300):
            stack = capture(None, (0.0, loop_thread.thread_id, task))
            assert stack.startswith("Task 'churn' (awaiting, outermost first):"), stack
            assert "walk stopped" not in stack, stack
            assert "Thread 'stacks-loop' (now, most recent call last):" in stack
    finally:
        sys.setswitchinterval(interval)


def test_a_walk_never_raises_on_what_it_cannot_read() -> None:
    assert task_stack(object()) == []
    assert task_stack(None) == []

    class Hostile:
        @property
        def cr_await(self) -> Any:
            raise RuntimeError("changed while read")

    assert task_stack(Hostile())[-1].startswith("  ... (walk stopped: RuntimeError")

    async def finished() -> None:
        return None

    done = asyncio.run(_finished_task(finished))
    text = capture(None, (0.0, threading.get_ident(), done))
    assert text.startswith("Thread 'MainThread' (now, most recent call last):")


async def _finished_task(body: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
    task = asyncio.create_task(body())
    await task
    return task
