"""A spare's warm-up: the copy-on-write faults a fresh fork would take on its first writes to
the warm heap, taken before a call arrives instead of during it, for the pages calls write.

A forked worker writes to some of its server's pages as it runs (reference counts of every
object it uses): ~1000 of the plugin server's ~7800 private pages for a bridge ADD or DEL, each
first write a fault of ~3-4 us here (a DEL took 3.6-4.9 ms in a worker that took ~50 faults,
7-9 ms in one that took ~1000). Copying all of its pages ahead (``MADV_POPULATE_WRITE``) took
a spare ~20 ms of CPU, ~70% of it for pages no call writes, so a runtime calling a chain's
plugins one after the other usually found the spare still copying (it had copied 760-7800
pages when its call came) and each spare held a private copy of the whole heap (~30 MB).

So a server learns which pages its calls write (``HotPages``): a byte per page of its heap as it
was once warm, in memory shared with every process it forks. A worker that came from a spare
marks, after its call (its status reported: off the caller's clock), every page of that heap
now its alone (``/proc/self/pagemap``'s PM_MMAP_EXCLUSIVE: a fork shares them until one side
writes). A spare copies the marked pages only. The map starts empty: the first calls teach it
(and pages the server itself wrote since the fork are marked too: they are few, and as hot).

The copying runs in the SCHED_IDLE class, with CPU time nothing else wants: at normal priority
it competed for the CPUs with the commands around it (the next plugin executable's start-up);
whoever hands a spare its call gives it its policy back first (``wake``), so a machine too busy
to ever be idle cannot keep the call waiting. All of it is best effort: a spare that copies
nothing is slower, not wrong.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import socket
from collections.abc import Callable
from typing import Final, TypeAlias

from pycni.linux import memcalls

__all__ = ["HotPages", "Warm", "learn_after_call", "wake", "warm_until_readable"]

PAGE: Final = mmap.PAGESIZE
# Pages are copied in runs of at most this size, the channel checked between two: a call that
# arrives meanwhile is taken at once (~1 ms late at most), the rest of the warm-up skipped.
_CHUNK_PAGES: Final = (2 << 20) // PAGE
# A pagemap entry's top byte: bit 63 "present", bit 56 "exclusively mapped" (proc(5)).
_EXCLUSIVE: Final = bytes(int(top & 0x81 == 0x81) for top in range(256))
_ENTRY: Final = 8

# What a spare runs while it waits; it returns early once its argument says a call came.
Warm: TypeAlias = Callable[[Callable[[], bool]], None]

Range: TypeAlias = tuple[int, int]  # [start, end) of a mapping, page-aligned


def _private_writable() -> list[Range]:
    """This process's private writable mappings: its heap, the interpreter's and libraries'
    data (a fork shares them until written)."""
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        spans = [line.split(maxsplit=2)[:2] for line in maps]
    out = []
    for span, perms in spans:
        if perms == "rw-p":
            start, end = (int(x, 16) for x in span.split("-"))
            out.append((start, end))
    return out


class HotPages:
    """The pages of this server's warm heap that its calls write, learned from its workers."""

    def __init__(self, ranges: list[Range], marks: mmap.mmap) -> None:
        self.ranges = ranges  # the heap as it was when warm: page i of the map is in these
        self.marks = marks  # one byte per page, 1: written by a call; shared with our forks

    @classmethod
    def of_this_heap(cls) -> HotPages:
        """A map of this process's private writable pages as they are now (warm), all unmarked.
        Take it once warm, before the first spare is forked."""
        ranges = _private_writable()
        pages = sum(end - start for start, end in ranges) // PAGE
        return cls(ranges, mmap.mmap(-1, max(1, pages)))  # MAP_SHARED: our forks write it too

    def marked(self) -> int:
        return self.marks[:].count(1)

    def warm(self, interrupted: Callable[[], bool]) -> None:
        """A spare's ``Warm``: copy the marked pages in the idle class, and have this process
        learn, once it has run its call (``learn_after_call``)."""
        _LEARNING[:] = [self]
        _in_idle_class(lambda: self.populate(interrupted), interrupted)

    def populate(self, interrupted: Callable[[], bool] = lambda: False) -> None:
        """Fault in, writable, every marked page still mapped private and writable here; stop
        as soon as ``interrupted()`` says so (asked before each run of pages)."""
        mapped = _private_writable()
        for start, first, count in self._spans():
            if not any(lo <= start and start + count * PAGE <= hi for lo, hi in mapped):
                continue  # unmapped since the map was taken (or remapped): not ours to touch
            for begin, end in _runs(self.marks, first, count):
                for chunk in range(begin, end, _CHUNK_PAGES):
                    if interrupted():
                        return
                    size = min(_CHUNK_PAGES, end - chunk) * PAGE
                    if not memcalls.populate_write(start + (chunk - first) * PAGE, size):
                        return  # no MADV_POPULATE_WRITE here: the spare stays cold

    def learn(self) -> None:
        """Mark every page of the map this process now holds alone (it wrote it since the
        fork, or it was marked and copied). Best effort."""
        with contextlib.suppress(OSError):
            fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
            try:
                for start, first, count in self._spans():
                    entries = os.pread(fd, count * _ENTRY, start // PAGE * _ENTRY)
                    seen = entries[_ENTRY - 1 :: _ENTRY].translate(_EXCLUSIVE)
                    if len(seen) != count:
                        continue
                    before = self.marks[first : first + count]
                    merged = int.from_bytes(before, "big") | int.from_bytes(seen, "big")
                    self.marks[first : first + count] = merged.to_bytes(count, "big")
            finally:
                os.close(fd)

    def _spans(self) -> list[tuple[int, int, int]]:
        """(start address, first page's index in the map, pages) of each range."""
        out, first = [], 0
        for start, end in self.ranges:
            count = (end - start) // PAGE
            out.append((start, first, count))
            first += count
        return out


def _runs(marks: mmap.mmap, first: int, count: int) -> list[Range]:
    """The runs of marked pages in ``marks[first:first + count]``, as [from, to) indexes."""
    out, at, stop = [], first, first + count
    while (begin := marks.find(b"\x01", at, stop)) >= 0:
        end = marks.find(b"\x00", begin, stop)
        at = stop if end < 0 else end
        out.append((begin, at))
    return out


# In a spare (``HotPages.warm``), the map its worker teaches; empty in any other process.
_LEARNING: list[HotPages] = []


def learn_after_call() -> None:
    """In a worker whose call is done and reported: teach the server's map what this call
    wrote (a worker that came from a spare only: a fork for the call at hand is made under
    a burst, when the CPU is better spent on the calls)."""
    for hot in _LEARNING:
        hot.learn()


def warm_until_readable(chan: socket.socket, warm: Warm) -> None:
    """In a spare: run ``warm`` until ``chan`` has something to read (a call, or EOF), then
    block until it has. A warm-up that fails leaves the worker cold: slower, not wrong."""
    poller = select.poll()  # not select(): the descriptor may be above FD_SETSIZE
    poller.register(chan, select.POLLIN)
    with contextlib.suppress(Exception):
        warm(lambda: bool(poller.poll(0)))
    poller.poll()


def _in_idle_class(work: Callable[[], None], interrupted: Callable[[], bool]) -> None:
    """``work`` in the SCHED_IDLE class (see the module's docstring); the policy this process
    had is back on return."""
    if interrupted():
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        return  # not permitted: a cold worker is slower, not wrong
    try:
        work()
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, param)


def wake(pid: int) -> None:
    """Give ``pid`` (a spare warming up in the idle class) this process's scheduling policy."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(pid, os.sched_getscheduler(0), os.sched_getparam(0))
