"""A pre-forked spare worker: the fork, and the copy-on-write faults a fresh worker takes on
its first touch of the warm heap, happen before a call arrives instead of during it.

A forked worker writes to thousands of the server's pages as it runs (reference counts of
every object it uses): ~1900 copy-on-write faults, 5-6 ms of an ADD. The spare, while it
waits, copies every private writable page of its own at once (``populate_private_memory``:
``madvise(MADV_POPULATE_WRITE)``, ~30 MB at kernel speed, no Python, no kernel objects made)
so the call it gets takes almost none. It copies in the SCHED_IDLE class
(``populate_when_idle``), with CPU time nothing else wants: a runtime calls a chain's plugins
one after another, and at normal priority the copying slowed the next plugin executable's
start-up down; the server gives it its policy back as it hands it a call. It then blocks on
its channel, a socketpair, until the server hands it one call: the request packet with the
caller's five descriptors (SCM_RIGHTS), exactly as the launcher sent them. From there it is a
worker like any other (``run_worker``), and the same channel carries its status back. EOF on
the channel (the server stopped or dropped it) exits it. A worker forked for one call when no
spare is ready is the same thing without the warm-up (``fork_worker``): forked, ACKed with its
pidfd, then handed the call, so a call the launcher gave up on never runs.

Every worker has SIGKILL as its parent-death signal: a server that dies mid-call (SIGKILL,
OOM) takes its workers along, so no plugin work goes on behind the back of a caller who was
told the call failed (the launcher also waits for the worker's pidfd before it says so).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn, TypeAlias

from pycni.linux import nscalls
from pycni.server import protocol
from pycni.server.forking import fork_with_channel
from pycni.server.peer import Call, PeerError, receive_call
from pycni.server.worker import run_worker

__all__ = [
    "Spare",
    "SpareKeeper",
    "fork_spare",
    "fork_worker",
    "populate_private_memory",
    "populate_when_idle",
    "wake",
    "warm_until_readable",
]

log = logging.getLogger("pycni.server")

_MADV_POPULATE_WRITE = 23  # Linux 5.14+; older kernels say EINVAL and the spare stays cold
# Pages are copied in chunks of this size, the channel checked between two: a call that
# arrives meanwhile is taken at once (~1 ms late at most), the rest of the warm-up skipped.
_POPULATE_CHUNK: Final = 2 << 20

# What a spare runs while it waits; it returns early once its argument says a call came.
Warm: TypeAlias = Callable[[Callable[[], bool]], None]


@dataclass(slots=True, eq=False)
class Spare:
    """The server's handle on its idle spare worker."""

    pid: int
    pidfd: int
    chan: socket.socket

    def hand(self, call: Call) -> None:
        """Give the spare ``call`` (OSError if it cannot take it; nothing has run then)."""
        request = call.request
        data = protocol.encode_request(request.name, request.cwd, dict(request.env))
        rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in call.fds())
        self.chan.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
        wake(self.pid)  # out of the idle class its warm-up may be in: the call is there

    def close(self) -> None:
        self.chan.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)

    def reap(self) -> None:
        """SIGKILL and reap it: our own idle child, holding no call."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.close()


class SpareKeeper:
    """At most one idle spare, watched through its pidfd in the server's selector."""

    def __init__(self, sel: selectors.BaseSelector, *, warm: Warm | None,
                 close_inherited: Callable[[], None]) -> None:
        """``warm``: what the spare runs while it waits; None keeps no spare at all."""
        self._sel = sel
        self._warm = warm
        self._close_inherited = close_inherited
        self._spare: Spare | None = None

    def refill(self) -> None:
        if self._warm is None or self._spare is not None:
            return
        try:
            spare = fork_spare(close_inherited=self._close_inherited, warm=self._warm)
        except OSError as err:
            log.warning("cannot fork a spare worker: %s", err)
            return
        self._spare = spare
        self._sel.register(spare.pidfd, selectors.EVENT_READ, lambda _: self._on_exit(spare))

    def take(self) -> Spare | None:
        """The idle spare, if there is one: the caller's from now on (``hand`` it a call)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            self._sel.unregister(spare.pidfd)
        return spare

    def drop(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            self._sel.unregister(spare.pidfd)
            spare.reap()

    def close_in_child(self) -> None:
        """In a freshly forked worker or spare: close our descriptors, touch nothing else."""
        if self._spare is not None:
            self._spare.close()

    def _on_exit(self, spare: Spare) -> None:
        log.warning("spare worker %d exited while idle", spare.pid)
        self._spare = None
        self._sel.unregister(spare.pidfd)
        spare.reap()


def fork_spare(*, close_inherited: Callable[[], None], warm: Warm) -> Spare:
    """Fork a spare; in it, close the server's descriptors, run ``warm`` and wait."""
    parent = os.getpid()
    pid, pidfd, chan = fork_with_channel(
        lambda theirs: _spare_main(theirs, close_inherited=close_inherited, warm=warm,
                                   parent=parent),
        own_group=True,
    )
    return Spare(pid=pid, pidfd=pidfd, chan=chan)


def fork_worker(*, close_inherited: Callable[[], None]) -> Spare:
    """A worker for the call at hand: a spare without the warm-up, ``hand`` it the call."""
    return fork_spare(close_inherited=close_inherited, warm=lambda _: None)


def _spare_main(
    chan: socket.socket, *, close_inherited: Callable[[], None], warm: Warm, parent: int
) -> NoReturn:
    try:
        nscalls.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:  # the server died before the line above
            os._exit(0)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        close_inherited()
        warm_until_readable(chan, warm)
        call = receive_call(chan)
    except (PeerError, OSError):
        os._exit(0)  # no call: the server stopped or dropped us
    except BaseException:
        os._exit(1)
    run_worker(call, close_inherited=lambda: None, report=chan)


def warm_until_readable(chan: socket.socket, warm: Warm) -> None:
    """In a spare: run ``warm`` until ``chan`` has something to read (a call, or EOF), then
    block until it has. A warm-up that fails leaves the worker cold: slower, not wrong."""
    poller = select.poll()  # not select(): the descriptor may be above FD_SETSIZE
    poller.register(chan, select.POLLIN)
    with contextlib.suppress(Exception):
        warm(lambda: bool(poller.poll(0)))
    poller.poll()


def populate_private_memory(interrupted: Callable[[], bool] = lambda: False) -> None:
    """Fault in, writable, every private read-write mapping of this process: after a fork,
    that copies the parent's pages now instead of on each first write. Best effort; stops
    as soon as ``interrupted()`` says so (checked every ``_POPULATE_CHUNK`` bytes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        ranges = [line.split(maxsplit=2)[:2] for line in maps]
    for span, perms in ranges:
        if perms != "rw-p":
            continue
        start, end = (int(x, 16) for x in span.split("-"))
        for chunk in range(start, end, _POPULATE_CHUNK):
            if interrupted():
                return
            size = min(_POPULATE_CHUNK, end - chunk)
            failed = libc.madvise(chunk, size, _MADV_POPULATE_WRITE) != 0
            if failed and ctypes.get_errno() == errno.EINVAL:  # no MADV_POPULATE_WRITE here
                return


def populate_when_idle(interrupted: Callable[[], bool]) -> None:
    """``populate_private_memory`` in the SCHED_IDLE class: the copying gets only CPU time
    nothing else wants (at normal priority it slowed the commands run next to it down), and
    the policy this process had is back on return. ``wake`` is the other half: whoever hands
    this process its call restores its policy first, so a machine too busy to ever be idle
    cannot keep the call waiting."""
    if interrupted():
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        return  # not permitted: a cold worker is slower, not wrong
    try:
        populate_private_memory(interrupted)
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, param)


def wake(pid: int) -> None:
    """Give ``pid`` (a spare in ``populate_when_idle``) this process's scheduling policy."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(pid, os.sched_getscheduler(0), os.sched_getparam(0))
