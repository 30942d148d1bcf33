"""Who is on the other end: the pid behind a connection, and signals only to it.

The sidecar signals a process only if (1) when the process registered, the pid it
claimed was the pid that owned the client end of its connection — found through the
kernel's socket table on loopback TCP — and (2) right before the signal, a process with
that pid still exists with the create time the app reported. Where possible the signal
goes through a pidfd, so a pid recycled between the check and the signal cannot be hit.
Never pid 1 or below, never the sidecar itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import signal
import time
from collections.abc import Callable

import psutil

from watchdog.protocol import ProcessInfo

__all__ = ["SocketTable", "is_alive", "send_signal", "verify_credentials", "verify_peer"]

# (client ip, client port, server port) -> pids owning that client end
Owners = dict[tuple[str, int, int], set[int]]

# Clock granularity of /proc start times (jiffies) plus float rounding.
_CREATE_TIME_TOLERANCE = 0.05


def verify_peer(
    info: ProcessInfo, client: tuple[str, int] | None, server: tuple[str, int] | None
) -> tuple[bool, str]:
    """Check that ``info.pid`` owns the client end of the connection ``client`` →
    ``server``; returns (verified, why). Runs a scan of the socket table: call it off
    the event loop."""
    problem = _peer_problem(info, client, server)
    if problem is not None:
        return False, problem
    assert client is not None and server is not None
    try:
        owners = read_owners().get((client[0], client[1], server[1]), set())
    except psutil.Error as exc:
        return False, f"cannot read the socket table: {exc}"
    return _owned_by(info, owners)


def _peer_problem(
    info: ProcessInfo, client: tuple[str, int] | None, server: tuple[str, int] | None
) -> str | None:
    """Why the connection cannot be this process's, before any scan; None if it may be."""
    if client is None or server is None:
        return "the connection's addresses are unknown"
    try:
        if not ipaddress.ip_address(client[0]).is_loopback:
            return f"the process connects from {client[0]}, another host"
    except ValueError:
        return f"unrecognised client address {client[0]!r}"
    if info.pid <= 0 or not psutil.pid_exists(info.pid):
        # Cheap, and spares a scan of the socket table for an identity made up.
        return f"pid {info.pid} does not exist here"
    return None


def read_owners() -> Owners:
    """The kernel's TCP socket table: who owns each client end. Scans every TCP socket
    on the host (milliseconds, more with many connections): call it off the event loop."""
    owners: Owners = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.pid is not None and conn.laddr and conn.raddr:
            key = (conn.laddr.ip, conn.laddr.port, conn.raddr.port)
            owners.setdefault(key, set()).add(conn.pid)
    return owners


class SocketTable:
    """The socket table, read at most once at a time and shared by every check that
    waits for it.

    One scan per new process would let a burst of new processes — a fleet restarting,
    or a client inventing identities — keep the sidecar busy scanning. Here at most one
    scan runs at a time, and each serves every check for a connection that was already
    open when the scan began. Used from the event loop only.
    """

    def __init__(
        self, read: Callable[[], Owners] = read_owners, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read = read
        self._clock = clock
        self._owners: Owners = {}
        self._taken_at = -math.inf
        self._scan: asyncio.Task[None] | None = None
        self.scans = 0

    async def verify(
        self,
        info: ProcessInfo,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        opened_before: float,
    ) -> tuple[bool, str]:
        """:func:`verify_peer`, for a connection open since ``opened_before`` (on this
        table's clock), answered from a scan that began after that."""
        problem = _peer_problem(info, client, server)
        if problem is not None:
            return False, problem
        assert client is not None and server is not None
        try:
            while self._taken_at < opened_before:
                if self._scan is None:
                    self._scan = asyncio.get_running_loop().create_task(self._refresh())
                # Shielded: a check that is cancelled must not cancel the others' scan.
                await asyncio.shield(self._scan)
        except psutil.Error as exc:
            return False, f"cannot read the socket table: {exc}"
        owners = self._owners.get((client[0], client[1], server[1]), set())
        return await asyncio.to_thread(_owned_by, info, owners)

    async def _refresh(self) -> None:
        started = self._clock()
        try:
            self._owners = await asyncio.to_thread(self._read)
            self._taken_at = started
            self.scans += 1
        finally:
            self._scan = None


def _owned_by(info: ProcessInfo, owners: set[int]) -> tuple[bool, str]:
    if not owners:
        return False, "no visible process owns the connection (missing permission?)"
    if owners != {info.pid}:
        return (
            False,
            f"the connection belongs to pid {sorted(owners)}, not the claimed pid {info.pid}",
        )
    return _same_process(info)


def verify_credentials(info: ProcessInfo, credentials: tuple[int, int, int]) -> tuple[bool, str]:
    """Check the claimed pid against a Unix socket peer's ``SO_PEERCRED`` (pid, uid, gid)."""
    pid = credentials[0]
    if pid != info.pid:
        return False, f"the socket's peer is pid {pid}, not the claimed pid {info.pid}"
    return _same_process(info)


def _same_process(info: ProcessInfo) -> tuple[bool, str]:
    try:
        created = psutil.Process(info.pid).create_time()
    except psutil.NoSuchProcess:
        return False, f"pid {info.pid} no longer exists"
    except psutil.Error as exc:
        return False, f"cannot inspect pid {info.pid}: {exc}"
    if abs(created - info.create_time) > _CREATE_TIME_TOLERANCE:
        return False, f"pid {info.pid} now belongs to another process (create time differs)"
    return True, f"pid {info.pid} verified"


def send_signal(info: ProcessInfo, signum: int) -> tuple[bool, str]:
    """Signal the process ``info`` describes, after re-checking it is still that
    process; returns (sent, why)."""
    if info.pid <= 1 or info.pid == os.getpid():
        return False, f"refusing to signal pid {info.pid}"
    name = signal.Signals(signum).name
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(info.pid)
        except ProcessLookupError:
            return False, f"pid {info.pid} no longer exists"
        except OSError:
            pidfd = None  # kernel without pidfd: fall back to the pid
    try:
        # Checked after the pidfd is open: the pidfd then refers to the process checked.
        same, why = _same_process(info)
        if not same:
            return False, why
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(info.pid, signum)
    except ProcessLookupError:
        return False, f"pid {info.pid} exited before the signal"
    except PermissionError:
        return False, f"not permitted to signal pid {info.pid}"
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True, f"{name} sent to pid {info.pid}" + (" via pidfd" if pidfd is not None else "")


def is_alive(info: ProcessInfo) -> bool:
    """True while the process (same pid, same create time) exists and is not a zombie."""
    try:
        process = psutil.Process(info.pid)
        # A create time of 0 means the app could not read its own: the pid alone counts.
        if info.create_time > 0 and (
            abs(process.create_time() - info.create_time) > _CREATE_TIME_TOLERANCE
        ):
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
