"""A server's workers: forked ahead of a call (a spare) or for the call at hand, each with a
channel back to the server and watched through its pidfd.

A spare is forked while the server is idle. In it the server's descriptors are closed, the
service's ``prepare`` runs (the runtime parks a container init there: ``pycni_run.standby``),
then the warm-up (``warmup``) until the server hands it one call on its channel: the request
packet with the caller's descriptors (SCM_RIGHTS), exactly as the caller sent them. EOF on
the channel (the server stopped or dropped it) ends it. A worker forked for the call at hand
has the call already (the fork copied it) and runs it once told ``go``. Either way the server
ACKs the caller first, with the worker's pidfd: a call the caller gave up on never runs.

From there the service's ``run(call, chan)`` takes over, never returning. ``die_with_parent``:
SIGKILL as the worker's parent-death signal, so a server that dies mid-call (SIGKILL, OOM)
takes its workers along and no work goes on behind the back of a caller told the call failed
(the plugin server's; the runtime daemon's workers finish their commands without it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar

from pycni.warmfork.child import die_with_parent, fork_with_channel, reset_child
from pycni.warmfork.warmup import Warm, wake, warm_until_readable

__all__ = ["READY", "SpareKeeper", "SpareRecipe", "Worker", "fork_for_call", "fork_spare"]

C = TypeVar("C")

_GO = b"go"
# A worker that served its call and can take another says so on its channel (after its status).
READY = b"ready"


@dataclass(slots=True, eq=False)
class Worker:
    """The server's handle on a worker: its pid and pidfd, and its channel."""

    pid: int
    pidfd: int
    chan: socket.socket

    def hand(self, data: bytes, fds: Sequence[int], *, then: bytes = b"") -> None:
        """Give a spare its call: ``data`` with ``fds`` (SCM_RIGHTS), then ``then`` if any
        (OSError if it cannot take it; nothing has run then)."""
        wake(self.pid)  # out of the idle class its warm-up may be in, before the call is there
        rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        self.chan.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
        if then:
            self.chan.send(then)

    def go(self) -> None:
        """Let a worker forked for its call (``fork_for_call``) run it."""
        self.chan.send(_GO)

    def close_pidfd(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def close(self) -> None:
        self.chan.close()
        self.close_pidfd()

    def kill_group(self) -> None:
        """SIGKILL its process group: the worker and whatever it started (a delegate)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Our own child, holding no call (or one it must not run): SIGKILL, reap, close."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class SpareRecipe(Generic[C]):
    """What a service's spare does: ``prepare`` before its warm-up, ``warm`` while it waits,
    ``receive`` its call from the channel, ``run`` it (never returning); ``abandon`` when no
    call comes (EOF or anything unusable)."""

    warm: Warm
    receive: Callable[[socket.socket], C]
    run: Callable[[C, socket.socket], NoReturn]
    prepare: Callable[[socket.socket], None] = lambda _chan: None
    abandon: Callable[[], None] = lambda: None
    die_with_parent: bool = False
    own_group: bool = False


def fork_spare(recipe: SpareRecipe[C], *, close_inherited: Callable[[], None]) -> Worker:
    """Fork a spare: in it, the server's descriptors closed, then ``recipe`` (see above)."""
    parent = os.getpid()

    def child(chan: socket.socket) -> NoReturn:
        try:
            if recipe.die_with_parent:
                die_with_parent(parent)
            reset_child()
            close_inherited()
            recipe.prepare(chan)
            warm_until_readable(chan, recipe.warm)
            call = recipe.receive(chan)
        except BaseException:
            with contextlib.suppress(BaseException):
                recipe.abandon()
            os._exit(0)  # no call: the server stopped or dropped us
        recipe.run(call, chan)

    pid, pidfd, chan = fork_with_channel(child, own_group=recipe.own_group)
    return Worker(pid=pid, pidfd=pidfd, chan=chan)


def fork_for_call(
    call: C,
    run: Callable[[C, socket.socket], NoReturn],
    *,
    close_inherited: Callable[[], None],
    die_with_parent_: bool = False,
    own_group: bool = False,
) -> Worker:
    """A worker for ``call``: it runs ``run(call, its channel)`` once told ``go`` (and exits,
    having run nothing, on anything else)."""
    parent = os.getpid()

    def child(chan: socket.socket) -> NoReturn:
        try:
            if die_with_parent_:
                die_with_parent(parent)
            reset_child()
            close_inherited()
            poller = select.poll()  # not select(): the descriptor may be above FD_SETSIZE
            poller.register(chan, select.POLLIN)
            poller.poll()
            go = chan.recv(16) == _GO
        except BaseException:
            go = False
        if not go:
            os._exit(0)
        run(call, chan)

    pid, pidfd, chan = fork_with_channel(child, own_group=own_group)
    return Worker(pid=pid, pidfd=pidfd, chan=chan)


class SpareKeeper:
    """Up to ``depth`` idle spares, each watched through its pidfd in the server's selector:
    workers back from a call first (``settle``: their pages are their own already), then the
    forked ones, oldest first. A worker expected back (``expect``) counts as one: no spare is
    forked for it to replace."""

    def __init__(
        self,
        sel: selectors.BaseSelector,
        fork: Callable[[], Worker] | None,
        *,
        log: logging.Logger,
        gone: Callable[[Worker], None] = lambda _worker: None,
        grace: float = 0.0,
        depth: int = 1,
    ) -> None:
        """``fork``: a new spare (None keeps none at all); ``gone``: after a spare ended;
        ``grace``: how long a dropped spare may take to see its EOF before it is killed;
        ``depth``: how many may wait."""
        self._sel = sel
        self._fork = fork
        self._log = log
        self._gone = gone
        self._grace = grace
        self._depth = depth
        self._spares: list[Worker] = []
        self._expected = 0
        self.died: Callable[[], None] = lambda: None  # after a spare exited while idle

    def refill(self) -> None:
        while self._fork is not None and len(self._spares) + self._expected < self._depth:
            try:
                spare = self._fork()
            except OSError as err:
                self._log.warning("cannot fork a spare worker: %s", err)
                return
            self._keep(spare, len(self._spares))

    def expect(self) -> None:
        """A worker whose call is done may come back (``settle`` says whether it did)."""
        self._expected += 1

    def settle(self, worker: Worker | None) -> None:
        """An expected worker is back (idle, ``worker``) or will not be (None). Kept first;
        beyond ``depth`` the last spare goes."""
        self._expected = max(0, self._expected - 1)
        if worker is None:
            return
        self._keep(worker, 0)
        while len(self._spares) > self._depth:
            extra = self._spares.pop()
            self._sel.unregister(extra.pidfd)
            self.discard(extra)

    def _keep(self, spare: Worker, index: int) -> None:
        self._spares.insert(index, spare)
        self._sel.register(spare.pidfd, selectors.EVENT_READ, lambda _: self._on_exit(spare))

    def idle(self) -> int:
        """How many wait for a call."""
        return len(self._spares)

    def take(self) -> Worker | None:
        """The first idle spare (the warmest), if there is one: the caller's from now on."""
        if not self._spares:
            return None
        spare = self._spares.pop(0)
        self._sel.unregister(spare.pidfd)
        return spare

    def _take_all(self) -> list[Worker]:
        spares = []
        while (spare := self.take()) is not None:
            spares.append(spare)
        return spares

    def drop(self) -> None:
        """EOF tells the spares to let go of what they prepared and exit; SIGKILL for any
        that does not within the grace time (at once without one)."""
        spares = self._take_all()
        if self._grace and spares:
            exited = select.poll()
            for spare in spares:
                wake(spare.pid)  # an idle-class warm-up could wait long for a CPU to see the EOF
                spare.chan.close()
                exited.register(spare.pidfd, select.POLLIN)
            deadline = time.monotonic() + self._grace
            waiting = {spare.pidfd: spare for spare in spares}
            while waiting and (left := deadline - time.monotonic()) > 0:
                for fd, _ in exited.poll(int(left * 1000) + 1):
                    exited.unregister(fd)
                    waiting.pop(fd, None)
            for spare in waiting.values():
                self._log.warning("spare worker %d ignored its EOF: killed", spare.pid)
        for spare in spares:
            self.discard(spare)

    def discard(self, worker: Worker) -> None:
        """Kill and reap a worker that holds no call (a spare, or one whose call was not
        ACKed), then whatever the service does after (``gone``)."""
        worker.kill()
        self._gone(worker)

    def close_in_child(self) -> None:
        """In a freshly forked worker or spare: close our descriptors, touch nothing else."""
        for spare in self._spares:
            spare.close()

    def _on_exit(self, spare: Worker) -> None:
        self._log.warning("spare worker %d exited while idle", spare.pid)
        self._spares.remove(spare)
        self._sel.unregister(spare.pidfd)
        self.discard(spare)
        self.died()
