"""Who is on the other end: the pid behind a connection, and signals only to it.

The sidecar signals a process only if (1) when the process registered, the pid it
claimed was the pid that owned the client end of its connection — found through the
kernel's socket table on loopback TCP — and (2) right before the signal, a process with
that pid still exists with the create time the app reported. Where possible the signal
goes through a pidfd, so a pid recycled between the check and the signal cannot be hit.
Never pid 1 or below, never the sidecar itself.
"""

from __future__ import annotations

import ipaddress
import os
import signal

import psutil

from watchdog.protocol import ProcessInfo

__all__ = ["is_alive", "send_signal", "verify_credentials", "verify_peer"]

# Clock granularity of /proc start times (jiffies) plus float rounding.
_CREATE_TIME_TOLERANCE = 0.05


def verify_peer(
    info: ProcessInfo, client: tuple[str, int] | None, server: tuple[str, int] | None
) -> tuple[bool, str]:
    """Check that ``info.pid`` owns the client end of the connection ``client`` →
    ``server``; returns (verified, why). Runs a scan of the socket table: call it off
    the event loop."""
    if client is None or server is None:
        return False, "the connection's addresses are unknown"
    try:
        if not ipaddress.ip_address(client[0]).is_loopback:
            return False, f"the process connects from {client[0]}, another host"
    except ValueError:
        return False, f"unrecognised client address {client[0]!r}"
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error as exc:
        return False, f"cannot read the socket table: {exc}"
    owners: set[int] = {
        conn.pid
        for conn in connections
        if conn.pid is not None
        and conn.laddr
        and conn.raddr
        and (conn.laddr.ip, conn.laddr.port) == (client[0], client[1])
        and conn.raddr.port == server[1]
    }
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
