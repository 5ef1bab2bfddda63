"""A spare's warm-up: the copy-on-write faults a fresh fork takes on its first touch of the
warm heap, taken before a call arrives instead of during it.

A forked worker writes to thousands of its server's pages as it runs (reference counts of
every object it uses): ~1900 copy-on-write faults, 5-6 ms of a plugin ADD; ~2400, ~6 ms, of a
runtime command. A spare, while it waits, copies every private writable page of its own at
once (``populate_private_memory``: ``madvise(MADV_POPULATE_WRITE)``, 30-40 MB at kernel speed,
no Python, no kernel objects made), so the call it gets takes almost none. It copies in the
SCHED_IDLE class (``populate_when_idle``), with CPU time nothing else wants: at normal priority
the copying competed for the CPUs with the commands around it (a runtime calls a chain's
plugins one after another, and the next plugin executable's start-up slowed down; 90 ms
against 65 ms per `pycni-run run --rm /bin/true` when it was tried); whoever hands it its call
gives it its policy back first (``wake``), so a machine too busy to ever be idle cannot keep
the call waiting.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Callable
from typing import Final, TypeAlias

from pycni.linux import memcalls

__all__ = [
    "Warm",
    "populate_private_memory",
    "populate_when_idle",
    "wake",
    "warm_until_readable",
]

# Pages are copied in chunks of this size, the channel checked between two: a call that
# arrives meanwhile is taken at once (~1 ms late at most), the rest of the warm-up skipped.
_POPULATE_CHUNK: Final = 2 << 20

# What a spare runs while it waits; it returns early once its argument says a call came.
Warm: TypeAlias = Callable[[Callable[[], bool]], None]


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
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        ranges = [line.split(maxsplit=2)[:2] for line in maps]
    for span, perms in ranges:
        if perms != "rw-p":
            continue
        start, end = (int(x, 16) for x in span.split("-"))
        for chunk in range(start, end, _POPULATE_CHUNK):
            if interrupted():
                return
            if not memcalls.populate_write(chunk, min(_POPULATE_CHUNK, end - chunk)):
                return  # no MADV_POPULATE_WRITE here: the spare stays cold


def populate_when_idle(interrupted: Callable[[], bool]) -> None:
    """``populate_private_memory`` in the SCHED_IDLE class (see the module's docstring); the
    policy this process had is back on return."""
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
