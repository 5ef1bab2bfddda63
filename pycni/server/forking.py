"""Forking a worker with a channel back to its parent: the one way the fork server (per-call
workers and spares) and the runtime daemon start a child they watch through a pidfd."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import NoReturn

__all__ = ["fork_with_channel"]


def fork_with_channel(
    child: Callable[[socket.socket], NoReturn], *, own_group: bool = False
) -> tuple[int, int, socket.socket]:
    """Fork; the child runs ``child(its end of a SEQPACKET socketpair)`` and never returns.
    The parent gets (pid, pidfd, its end). ``own_group``: the child leads its own process
    group (set on both sides, so there is no window for a ``killpg`` to miss it)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        raise
    if pid == 0:  # pragma: no cover - the child reports through its channel and exit
        if own_group:
            os.setpgid(0, 0)
        ours.close()
        child(theirs)
    theirs.close()
    if own_group:
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        ours.close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return pid, pidfd, ours
