"""In the app: where a span's work is stuck — the chain of awaits of its asyncio task,
followed into whatever it waits on, and the frames of the thread that opened it.

Why one module (over 400 lines): it is one walk. The helpers that see through C
iterators, find the tasks a future stands for and the thread behind an executor future
all feed one visited set and one set of bounds (the ``_MAX_*`` figures below), and each
is only correct together with the others; apart, a reader would have to hold several
files open to follow one step of the walk.

Runs on the sender thread, on request only (never on the hot path). It reads other
threads' frames and tasks that belong to other event loops: everything here only reads,
and what it reads may change under it, so every walk is bounded and tolerant of a
chain that moves while it is followed.

What a walk follows, from a task down to the line that waits:

- ``cr_await`` / ``gi_yieldfrom`` / ``ag_await`` into the coroutine it awaits, and
  through the C iterators that hide the next step (``async for`` leaves an
  ``async_generator_asend``, ``await future`` a ``FutureIter``): their referents
  (``gc.get_referents``, the object's own traversal) are the generator or the future;
- from a future being waited on to the tasks whose completion it stands for: the
  children of a ``gather``, the inner task of a ``shield``, and every task on the loop
  whose done-callback reaches the future — through a closure, ``functools.partial``
  arguments or a bound method's object, and a few levels of attributes and containers
  below them (``asyncio.wait``, ``wait_for``, ``as_completed``, ``asyncio.TaskGroup``,
  anyio task groups);
- from a future chained to a ``concurrent.futures.Future`` (``run_in_executor``,
  ``asyncio.to_thread``) to the worker thread running it, and from a coroutine holding
  a thread (anyio's ``to_thread.run_sync``) to that thread.

A walk does not call into the app's objects it passes: their attributes are read from
``__dict__``, their types checked with ``type()``, the rest found by C traversal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import linecache
import sys
import threading
from collections import deque
from types import BuiltinFunctionType, FrameType, FunctionType, MethodType, ModuleType
from typing import Any, NamedTuple

from watchdog.protocol import MAX_STACK_LENGTH

__all__ = ["bounded", "capture", "task_stack", "thread_stack"]


_MAX_FRAMES = 40  # per printed stack (the innermost are kept)
_MAX_STEPS = 400  # awaitables visited by one walk
_MAX_BRANCHES = 32  # tasks and threads shown below the span's own task
_MAX_TASKS = 10_000  # tasks of a loop searched for done-callbacks
_MAX_CALLBACKS = 16  # callbacks read per future
_MAX_ATTRIBUTES = 64  # attributes of an object, or items of a container, read
_MAX_REACH = 256  # objects a done-callback reaches, searched for the futures it resolves
_MAX_FOLLOWED = 64  # futures followed to find who waits on a task
_MAX_THREADS = 256
_MAX_THREAD_DEPTH = 400  # frames read per thread
# Frames whose ``self.future`` is the concurrent future their thread is running. Only
# these frames' locals are read: on 3.11 and 3.12 reading ``f_locals`` leaves a snapshot
# of the locals on the frame, which a long-lived frame (a worker's main loop, such as
# anyio's) would keep alive until its next read; a ``_WorkItem.run`` frame ends with its
# work item (if ``fn`` raised, the snapshot's ``self`` is one more reference cycle for the
# collector). anyio's worker is found from the coroutine that waits on it instead.
_WORK_ITEM_CODE = ("concurrent/futures/thread.py", "run")


_CONTAINERS = (list, tuple, set, frozenset, deque)
_OPAQUE = (
    asyncio.Future,
    asyncio.AbstractEventLoop,
    threading.Thread,
    type,
    ModuleType,
    FunctionType,
    MethodType,
    BuiltinFunctionType,
    str,
    bytes,
)


class _Branch(NamedTuple):
    """Something the walk shows below the chain that led to it."""

    header: str
    awaitable: Any = None  # a task or future to walk, or
    thread: int | None = None  # a thread whose frames to show (None: the header says all)


def _format_frames(frames: list[Any]) -> list[str]:
    lines = []
    for frame in frames[-_MAX_FRAMES:]:
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        source = linecache.getline(code.co_filename, frame.f_lineno).strip()
        if source:
            lines.append(f"    {source}")
    if len(frames) > _MAX_FRAMES:
        lines.insert(0, f"  ... {len(frames) - _MAX_FRAMES} outer frames omitted")
    return lines


def _frame_of(awaitable: Any) -> Any:
    return (
        getattr(awaitable, "cr_frame", None)
        or getattr(awaitable, "gi_frame", None)
        or getattr(awaitable, "ag_frame", None)
    )


def _is_coroutine_like(obj: Any) -> bool:
    # Asked of the type: an app object's own __getattr__ is never called.
    kind = type(obj)
    return any(hasattr(kind, attribute) for attribute in ("cr_await", "gi_yieldfrom", "ag_await"))


def _is_plain_future(obj: Any) -> bool:
    # type(), not isinstance(): isinstance would ask a proxy object for its __class__.
    kind = type(obj)
    return issubclass(kind, asyncio.Future) and not issubclass(kind, asyncio.Task)


def _see_through(obj: Any) -> Any:
    """The coroutine, generator or future behind an opaque awaitable, or None.

    ``async_generator_asend``/``athrow``, ``FutureIter``, ``anext()``'s awaitable and
    ``coroutine.__await__()`` expose nothing in Python, but their C traversal visits the
    object they iterate.
    """
    if issubclass(type(obj), asyncio.Future) or _is_coroutine_like(obj):
        return obj
    try:
        referents = gc.get_referents(obj)
    except Exception:
        return None
    for referent in referents[:8]:
        if issubclass(type(referent), asyncio.Future) or _is_coroutine_like(referent):
            return referent
    return None


def _suspended_on(awaitable: Any) -> Any:
    """What a coroutine, generator or async generator is suspended on, as it is."""
    for attribute in ("cr_await", "gi_yieldfrom", "ag_await"):
        inner = getattr(awaitable, attribute, None)
        if inner is not None:
            return inner
    return None


def _inner(awaitable: Any) -> Any:
    """What a coroutine, generator or async generator awaits, seen through; or None."""
    inner = _suspended_on(awaitable)
    return None if inner is None else _see_through(inner)


def _callbacks(future: Any) -> list[Any]:
    """The functions of ``future``'s done-callbacks (a snapshot)."""
    try:
        entries = list(getattr(future, "_callbacks", None) or ())[:_MAX_CALLBACKS]
    except Exception:
        return []
    return [entry[0] if isinstance(entry, tuple) else entry for entry in entries]


def _held_by(function: Any) -> list[Any]:
    """What a callback holds: ``functools.partial`` arguments, a bound method's object,
    closure cells."""
    held: list[Any] = []
    if type(function) is functools.partial:
        held.extend(function.args)
        held.extend(function.keywords.values())
        function = function.func
    if _is_bound(function):
        held.append(function.__self__)
    elif issubclass(type(function), FunctionType):
        for cell in function.__closure__ or ():
            try:
                held.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
    return held


def _is_bound(function: Any) -> bool:
    return issubclass(type(function), MethodType | BuiltinFunctionType)


def _attributes(obj: Any) -> list[Any]:
    """The instance attributes of ``obj`` (its ``__dict__``), without running its code."""
    try:
        namespace = object.__getattribute__(obj, "__dict__")
    except Exception:
        return []
    if not isinstance(namespace, dict):
        return []
    try:
        return list(namespace.values())[:_MAX_ATTRIBUTES]
    except RuntimeError:  # changed size while copied
        return []


def _items(container: Any) -> list[Any]:
    try:
        return list(container)[:_MAX_ATTRIBUTES]
    except RuntimeError:  # changed size while copied (another thread owns it)
        return []


def _reachable(function: Any) -> list[Any]:
    """What a done-callback can reach: what it holds, and up to three levels below, the
    attributes of objects and the items of containers (a task group's completion future
    is an attribute of the group; the future ``as_completed`` waits on is a getter of a
    queue). Never inside futures, loops, threads or code, which would lead to futures
    the callback has nothing to do with. Bounded to ``_MAX_REACH`` objects."""
    reached: list[Any] = []
    level = _held_by(function)
    for depth in range(4):
        reached.extend(level[: _MAX_REACH - len(reached)])
        if depth == 3 or len(reached) >= _MAX_REACH:
            break
        below: list[Any] = []
        for value in level:
            kind = type(value)
            if kind in _CONTAINERS:  # exactly: a subclass may iterate in its own code
                below.extend(_items(value))
            elif not issubclass(kind, _OPAQUE):
                below.extend(_attributes(value))
        level = below
    return reached


def _plain_futures(values: list[Any]) -> list[Any]:
    return [value for value in values if _is_plain_future(value)]


def _tasks_of(loop: Any) -> list[Any]:
    """The loop's unfinished tasks; read from another thread, so the task sets may change
    while copied (``all_tasks`` retries only part of its copy)."""
    for _ in range(5):
        try:
            return list(asyncio.all_tasks(loop))[:_MAX_TASKS]
        except RuntimeError:
            continue
    return []


def _task_header(awaitable: Any) -> str:
    if issubclass(type(awaitable), asyncio.Task):
        return f"  -> awaiting {awaitable.get_name()!r}:"
    return f"  -> awaiting {type(awaitable).__name__!r}:"


def _outermost_first(top: FrameType | None) -> list[FrameType]:
    """A thread's frames from its innermost ``top`` out (bounded), outermost first."""
    frames: list[FrameType] = []
    frame = top
    while frame is not None and len(frames) < _MAX_THREAD_DEPTH:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def _thread_names() -> dict[int | None, str]:
    return {thread.ident: thread.name for thread in threading.enumerate()}


class _Walk:
    """One bounded walk: what it has visited, and snapshots it takes at most once (the
    tasks of each loop, the frames of every thread)."""

    def __init__(self) -> None:
        self.steps = 0
        self.seen: set[int] = set()
        self._held: list[Any] = []  # keeps what ``seen`` names alive, so ids stay unique
        self._resolved: dict[int, dict[int, list[Any]]] = {}  # loop -> future -> tasks
        self._threads: dict[int, list[FrameType]] | None = None
        self._names: dict[int | None, str] | None = None

    def visit(self, obj: Any) -> bool:
        """True the first time ``obj`` is reached, while the step budget lasts."""
        if id(obj) in self.seen or self.steps >= _MAX_STEPS:
            return False
        self.steps += 1
        self.seen.add(id(obj))
        self._held.append(obj)
        return True

    def resolved_by(self, future: Any) -> list[Any]:
        """The tasks (on ``future``'s loop) whose done-callbacks reach ``future``: the
        tasks whose completion it stands for. The loop's tasks are indexed once."""
        try:
            loop = future.get_loop()
        except Exception:
            return []
        if id(loop) not in self._resolved:
            index: dict[int, list[Any]] = {}
            for task in _tasks_of(loop):
                for function in _callbacks(task):
                    for reached in _plain_futures(_reachable(function)):
                        tasks = index.setdefault(id(reached), [])
                        if task not in tasks:
                            tasks.append(task)
                            self._held.append(reached)
            self._resolved[id(loop)] = index
            self._held.append(loop)
        return self._resolved[id(loop)].get(id(future), [])

    def threads(self) -> dict[int, list[FrameType]]:
        """Every thread's frames now, outermost first."""
        if self._threads is None:
            self._threads = {}
            for ident, top in list(sys._current_frames().items())[:_MAX_THREADS]:
                self._threads[ident] = _outermost_first(top)
        return self._threads

    def thread_name(self, ident: int) -> str:
        if self._names is None:
            self._names = _thread_names()
        return self._names.get(ident, str(ident))

    def thread_running(self, source: Any) -> int | None:
        """The thread whose ``_WorkItem.run`` frame runs the concurrent future ``source``."""
        for ident, frames in self.threads().items():
            for frame in frames:
                code = frame.f_code
                if code.co_name != _WORK_ITEM_CODE[1] or not code.co_filename.replace(
                    "\\", "/"
                ).endswith(_WORK_ITEM_CODE[0]):
                    continue
                try:
                    work_item = frame.f_locals.get("self")
                except Exception:
                    continue
                if getattr(work_item, "future", None) is source:
                    return ident
        return None

    def thread_branch(self, ident: int) -> _Branch:
        return _Branch(
            f"  -> running in thread {self.thread_name(ident)!r} (most recent call last):",
            thread=ident,
        )

    def behind(self, future: Any, awaiter: Any) -> list[_Branch]:
        """What a future stands for: the tasks whose completion it awaits, the threads
        that will resolve it. ``awaiter`` is the coroutine awaiting it, if known."""
        children = getattr(future, "_children", None)  # asyncio.gather
        if children:
            return [_Branch(_task_header(child), child) for child in list(children)]
        branches: list[_Branch] = []
        found: list[Any] = []
        sources: list[Any] = []
        for function in _callbacks(future):
            for value in _held_by(function):
                kind = type(value)
                if issubclass(kind, asyncio.Task) and value is not future:
                    found.append(value)  # asyncio.shield: the inner task
                elif issubclass(kind, concurrent.futures.Future):
                    sources.append(value)  # run_in_executor: the executor's future
        # asyncio.wait, wait_for (3.11), as_completed, TaskGroup, anyio task groups: the
        # awaited tasks tell the future when they are done.
        found.extend(self.resolved_by(future))
        for task in found:
            if id(task) not in self.seen and all(b.awaitable is not task for b in branches):
                branches.append(_Branch(_task_header(task), task))
        idents: list[int] = []
        for source in sources:
            ident = self.thread_running(source)
            if ident is None:
                branches.append(
                    _Branch(
                        "  -> awaiting a concurrent.futures.Future that no thread runs yet"
                        " (queued in its executor, or run by another process)"
                    )
                )
            elif ident not in idents:
                idents.append(ident)
        if awaiter is not None and not sources:
            # anyio's to_thread.run_sync: the awaiting coroutine holds its worker thread.
            try:
                held = gc.get_referents(awaiter)
            except Exception:
                held = []
            for value in held[:_MAX_ATTRIBUTES]:
                is_thread = issubclass(type(value), threading.Thread)
                ident = value.ident if is_thread else None
                if ident is not None and ident not in idents:
                    idents.append(ident)
        branches.extend(self.thread_branch(ident) for ident in idents)
        return branches

    def line(self, start: Any) -> tuple[list[Any], list[_Branch]]:
        """The frames of one line of awaits from ``start`` (a task or a future), outermost
        first, and what its innermost future stands for."""
        frames: list[Any] = []
        task: Any = None
        awaiter: Any = None
        awaitable = start
        while awaitable is not None:
            kind = type(awaitable)
            if issubclass(kind, asyncio.Task) and awaitable is not start:
                return frames, [_Branch(_task_header(awaitable), awaitable)]
            if not self.visit(awaitable):
                break
            if issubclass(kind, asyncio.Task):
                task, awaitable = awaitable, awaitable.get_coro()
                continue
            if issubclass(kind, asyncio.Future):
                return frames, self.behind(awaitable, awaiter)
            frame = _frame_of(awaitable)
            if frame is not None:
                frames.append(frame)
                awaiter = awaitable
            raw = _suspended_on(awaitable)
            following = None if raw is None else _see_through(raw)
            if raw is not None and following is None and task is not None:
                # Nothing to see through (a pure-Python future's iterator): the task
                # knows the future that will wake it.
                following = getattr(task, "_fut_waiter", None)
            awaitable = following
        return frames, []


def task_stack(task: Any) -> list[str]:
    """Where a task waits: its chain of awaiting coroutines, outermost first, followed
    into what it awaits — async generators, the tasks behind ``gather``, ``shield``,
    ``asyncio.wait``, ``wait_for``, ``as_completed`` and task groups (each under
    ``-> awaiting 'name':``), and worker threads (``-> running in thread 'name'``, or a
    line saying no thread runs the work yet).

    ``Task.get_stack()`` stops at the task's own coroutine; following ``cr_await``
    reaches the coroutine that is actually waiting (an HTTP read, a sleep, a lock).
    Bounded in steps, branches and frames; never raises (a walk cut short by something
    that changed under it ends with a line saying so).
    """
    walk = _Walk()
    lines: list[str] = []
    pending: deque[_Branch] = deque([_Branch("", task)])
    shown = 0
    threads_shown: set[int] = set()
    try:
        while pending:
            branch = pending.popleft()
            if branch.thread is not None:
                if branch.thread in threads_shown:
                    continue
                threads_shown.add(branch.thread)
                frames = walk.threads().get(branch.thread)
                lines.append(branch.header)
                lines.extend(_format_frames(frames) if frames else ["  (the thread has ended)"])
                continue
            if branch.awaitable is None:
                lines.extend([branch.header] if branch.header else [])
                continue
            frames, below = walk.line(branch.awaitable)
            if branch.header and frames:
                lines.append(branch.header)
            lines.extend(_format_frames(frames))
            for nxt in below:
                if shown >= _MAX_BRANCHES:
                    lines.append("  ... (more awaited tasks and threads not shown)")
                    pending.clear()
                    break
                shown += 1
                pending.append(nxt)
    except Exception as exc:  # something changed under the walk: keep what it found
        lines.append(f"  ... (walk stopped: {type(exc).__name__}: {exc})")
    return lines


def _awaiters(future: Any) -> list[Any]:
    """The tasks waiting on ``future``: directly (their wake-up callback is bound to
    them), or through a future its callbacks reach (``gather``, ``shield``,
    ``asyncio.wait``, ``wait_for``, ``as_completed``, task groups); nearest first."""
    found: list[Any] = []
    pending: deque[tuple[Any, int]] = deque([(future, 0)])
    followed = [future]  # also keeps them alive, so their ids stay unique
    seen = {id(future)}
    while pending and len(followed) < _MAX_FOLLOWED:
        current, depth = pending.popleft()
        for function in _callbacks(current):
            owner = getattr(function, "__self__", None) if _is_bound(function) else None
            if issubclass(type(owner), asyncio.Task):
                if owner not in found:
                    found.append(owner)
                continue
            if depth >= 4:
                continue
            held = _held_by(function)
            held_tasks = [value for value in held if issubclass(type(value), asyncio.Task)]
            for value in held_tasks + _plain_futures(_reachable(function)):
                if id(value) not in seen:
                    seen.add(id(value))
                    followed.append(value)
                    pending.append((value, depth + 1))
    return found


def _awaiting_chain(task: Any) -> list[Any]:
    """The tasks that wait on ``task``, outermost first (one line of descent)."""
    chain: list[Any] = []
    current = task
    try:
        while len(chain) < 16:
            parents = [t for t in _awaiters(current) if t is not task and t not in chain]
            if not parents:
                break
            current = parents[0]
            chain.append(current)
    except Exception:  # changed while read: the part found so far is still true
        pass
    chain.reverse()
    return chain


def _own_frames(task: Any) -> list[Any]:
    """A task's coroutine frames down to where it awaits another task or a future."""
    frames: list[Any] = []
    try:
        awaitable = task.get_coro()
        while awaitable is not None and len(frames) < 200:
            frame = _frame_of(awaitable)
            if frame is None:
                break
            frames.append(frame)
            awaitable = _inner(awaitable)
    except Exception:
        pass
    return frames


def thread_stack(thread_id: int) -> list[str]:
    """What the thread is executing right now, innermost last."""
    return _format_frames(_outermost_first(sys._current_frames().get(thread_id)))


def capture(obj: Any, info: tuple[float, int, Any]) -> str:
    """The stacks of the span's task (if any) and of the thread that opened it."""
    _, thread_id, task = info
    parts = []
    if task is not None and not task.done():
        # Who waits on the span's task says why it runs (a tool call, a sub-agent);
        # the span's own task then says where it is stuck.
        chain = _awaiting_chain(task)
        for index, parent in enumerate(chain):
            parts.append(
                f"Task {parent.get_name()!r} (awaiting, outermost first):"
                if index == 0
                else f"  -> awaiting {parent.get_name()!r}:"
            )
            parts.extend(_format_frames(_own_frames(parent)))
        parts.append(
            f"  -> awaiting {task.get_name()!r} (the span's task):"
            if chain
            else f"Task {task.get_name()!r} (awaiting, outermost first):"
        )
        parts.extend(
            task_stack(task) or ["  (no frames: the task is not suspended in a coroutine)"]
        )
    names = _thread_names()
    parts.append(f"Thread {names.get(thread_id, thread_id)!r} (now, most recent call last):")
    parts.extend(thread_stack(thread_id) or ["  (the thread has ended)"])
    return bounded("\n".join(parts))


def bounded(text: str, limit: int = MAX_STACK_LENGTH) -> str:
    """``text`` cut to ``limit`` characters in the middle: the outermost frames say why it
    runs and the innermost say where it is stuck, so both ends are kept."""
    if len(text) <= limit:
        return text
    marker = "\n  ... ({} characters omitted) ...\n"
    keep = limit - len(marker.format(len(text)))
    head = text[: keep // 3]
    tail = text[len(text) - (keep - len(head)) :]
    return head + marker.format(len(text) - len(head) - len(tail)) + tail
