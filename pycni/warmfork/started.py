"""A server started on demand (``ondemand.exec_started``), from its own side: what it was told
(``--on-demand``, ``--idle-timeout``, ``--start-lock``), the marker next to its socket while it
listens, and ``retire``, which makes it give way to the supervised server (``pycni serve``
from its unit, ``pycni-run daemon`` by hand) when that one starts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pycni import atomicfile, autostart
from pycni.warmfork.peer import peer_uid

if TYPE_CHECKING:
    import argparse  # the servers' command lines only

__all__ = ["OnDemand", "add_arguments", "retire"]

_POLL: Final = 0.005
_RETIRE_TIMEOUT: Final = 10.0


def _marker(socket_path: str) -> str:
    return f"{socket_path}.ondemand"


@dataclass(frozen=True, slots=True, kw_only=True)
class OnDemand:
    """What a server started on demand was told (``--on-demand``, ``--idle-timeout``,
    ``--start-lock``), and what it does about it."""

    socket_path: str
    idle_timeout: float
    start_lock: int | None = None  # inherited, held: released once the server listens

    def listening(self) -> None:
        """The server listens: back to the normal scheduling policy (it starts in SCHED_IDLE:
        ``pycni.autostart``), say so next to the socket (its pid, for ``retire``), clear the
        start's mark (the start succeeded) and release the start lock."""
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        atomicfile.write(_marker(self.socket_path), f"{os.getpid()}\n".encode())
        if self.start_lock is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.start_lock, 0)
            with contextlib.suppress(OSError):
                os.close(self.start_lock)

    @classmethod
    def from_args(cls, socket_path: str, idle_timeout: float | None,
                  start_lock: int | None) -> OnDemand:
        """From the command line ``exec_started`` gave; the start lock stays out of every
        process the server starts (workers, ``nft``) from here on."""
        if start_lock is not None:
            try:
                os.set_inheritable(start_lock, False)
            except OSError:
                start_lock = None  # not an open descriptor: nothing to release
        return cls(socket_path=socket_path, start_lock=start_lock,
                   idle_timeout=autostart.DEFAULT_IDLE_TIMEOUT if idle_timeout is None
                   else idle_timeout)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> OnDemand | None:
        """What ``add_arguments``' options say: None for a server not started on demand."""
        if not ns.on_demand:
            return None
        return cls.from_args(ns.socket, ns.idle_timeout, ns.start_lock)

    def stopped(self) -> None:
        """The server stopped listening: remove its marker (if still its own)."""
        with contextlib.suppress(OSError):
            if _marked_pid(self.socket_path) == os.getpid():
                os.unlink(_marker(self.socket_path))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``exec_started`` gives a server (not for people: the server run without
    them is the one a supervisor runs)."""
    import argparse

    parser.add_argument("--on-demand", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--idle-timeout", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start-lock", type=int, default=None, help=argparse.SUPPRESS)


def _marked_pid(socket_path: str) -> int:
    try:
        with open(_marker(socket_path), encoding="ascii") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def retire(socket_path: str) -> bool:
    """Make a daemon started on demand give way to a supervised one (``pycni serve`` from its
    unit): if the process listening on ``socket_path`` is the one its marker names, SIGTERM it
    and wait until it has stopped listening (it drains its calls after that). True if one was
    retired."""
    pid = _marked_pid(socket_path)
    try:
        pidfd = os.pidfd_open(pid) if pid > 0 else -1
    except OSError:
        return False  # a stale marker
    if pidfd < 0:
        return False
    try:
        # The pidfd is held: while that process listens there, the pid cannot name another.
        if _listener_pid(socket_path) != pid:
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        deadline = time.monotonic() + _RETIRE_TIMEOUT
        while autostart.answers(os.fsencode(socket_path)) and time.monotonic() < deadline:
            time.sleep(_POLL)
        return True
    finally:
        os.close(pidfd)


def _listener_pid(socket_path: str) -> int:
    """The pid of the process listening on ``socket_path`` (SO_PEERCRED), 0 if none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_path)
        return peer_uid(sock)[0]
    except OSError:
        return 0
    finally:
        sock.close()
