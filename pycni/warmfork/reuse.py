"""A worker that served a call goes back to where it started, or says why it cannot.

Forking a worker per call cost far more CPU than the call: a bridge ADD's worker spent ~19 ms
of CPU against ~7 ms for the same ADD in a process that had run one before (copy-on-write
faults on ~1000 pages of the server's heap, then the teardown of the copies at exit). Under 20
parallel calls on 2 CPUs that overhead was most of the wall time. So a plugin server's worker
whose call succeeded goes back to its server's namespaces, cwd and environment and waits for
the next call, its pages already its own.

Only a worker that left nothing behind: ``restore`` waits a little for the threads a call
left (they end on their own), then refuses (and the worker exits, as every worker did
before) when the call left another thread, a descriptor that was not there before, a process
it started (even one it waited for: what that one started may live on in the worker's
process group), or other credentials. Signal handlers, the signal mask and the
umask are put back. What a call leaves in Python's memory (imported modules, the firewall
backend probed once per process) is what the in-process path keeps across the calls of one
runtime command too.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pycni.linux import nscalls

__all__ = ["Baseline"]

_NAMESPACES = (("net", nscalls.CLONE_NEWNET), ("mnt", nscalls.CLONE_NEWNS))
THREADS_WITHIN = 1.0  # seconds the threads a call left get to end
# Every catchable signal: a handler a call installed must not run in the next caller's call.
_SIGNALS = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline:
    """A worker as it was before its first call (``capture``), to go back to (``restore``)."""

    namespaces: tuple[tuple[int, int], ...]  # (our descriptor of it, CLONE_NEW*)
    cwd: int
    env: dict[bytes, bytes]
    fds: frozenset[int]
    umask: int
    ids: tuple[Any, ...]
    handlers: tuple[Any, ...]
    mask: frozenset[int]
    children_faults: int  # a process that ran and was waited for shows up here

    @classmethod
    def capture(cls, *, not_ours: Iterable[int] = ()) -> Baseline:
        """In a worker that has not become its caller yet; ``not_ours``: descriptors the call
        brought (they are closed once it ran)."""
        namespaces = tuple(
            (os.open(f"/proc/thread-self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), nstype)
            for name, nstype in _NAMESPACES)
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        umask = os.umask(0)
        os.umask(umask)
        return cls(
            namespaces=namespaces, cwd=cwd, env=dict(os.environb),
            fds=_open_fds() - frozenset(not_ours), umask=umask, ids=_ids(),
            handlers=tuple(signal.getsignal(s) for s in _SIGNALS),
            mask=frozenset(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, ())),
            children_faults=_children_faults())

    def restore(self, *, threads_within: float = THREADS_WITHIN) -> str | None:
        """Back to the baseline: None once there, else why not (the worker must exit then;
        it may be half-way back). Threads the call left get ``threads_within`` seconds to
        end (a bridge DEL's veth deletion waits in the kernel for an RCU barrier after the
        DEL is done): joining a mount namespace needs a single thread."""
        if not _single_threaded(time.monotonic() + threads_within):
            return "the call left a thread running"
        try:
            for fd, nstype in self.namespaces:
                nscalls.setns(fd, nstype)
            os.fchdir(self.cwd)
        except OSError as err:
            return f"cannot go back to the server's namespaces: {err}"
        os.environb.clear()
        os.environb.update(self.env)
        os.umask(self.umask)
        for signum, handler in zip(_SIGNALS, self.handlers, strict=True):
            if handler is not None and signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        return self._left_behind()

    def _left_behind(self) -> str | None:
        running = _child_running()  # reaps what exited: its faults count below
        if running or _children_faults() != self.children_faults:
            return "the call ran another process"
        extra = _open_fds() - self.fds
        if extra:
            return f"the call left descriptors open: {sorted(extra)}"
        if _ids() != self.ids:
            return "the call changed the worker's credentials"
        return None


def _single_threaded(deadline: float) -> bool:
    """Whether the other threads ended by ``deadline``. A thread Python calls done still
    exists for a moment (the join returns before the thread has left the kernel)."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    while len(os.listdir("/proc/thread-self/..")) != 1:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0002)
    return True


def _open_fds() -> frozenset[int]:
    """This process's open descriptors (the listing's own is closed again by then)."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    return frozenset(fd for fd in listed if _is_open(fd))


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def _ids() -> tuple[Any, ...]:
    return os.getresuid(), os.getresgid(), tuple(os.getgroups())


def _children_faults() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt


def _child_running() -> bool:
    """A child of ours that has not exited (exited ones are reaped here)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True

