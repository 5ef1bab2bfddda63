"""`pycni serve`'s service on the warm-fork kit (``pycni.warmfork.loop``): plugin calls.

A call goes: the request (a plugin of ``PLUGINS``) -> a worker (an idle one, or a fork) ->
ACK carrying its pidfd and the call timeout -> the call handed to it -> (the worker reports
its status on its channel, or exits without one | call timeout: SIGKILL | caller hangs up:
SIGKILL) -> the status, relayed as soon as the worker reports it (``pycni.warmfork.relay``).
VERSION is answered by the server itself (``answer``): no fork.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.plugins import PLUGINS
from pycni.server import protocol
from pycni.server.answer import VersionAnswers
from pycni.server.call import Call, receive_call, report_failure
from pycni.server.worker import run_worker
from pycni.warmfork.listener import ListenError, SocketInUse
from pycni.warmfork.loop import Pending
from pycni.warmfork.peer import PeerError, send_status
from pycni.warmfork.relay import Relayed, RelayServer
from pycni.warmfork.warmup import Warm
from pycni.warmfork.workers import SpareRecipe, Worker, fork_for_call, fork_spare

__all__ = ["DEFAULT_TIMEOUT", "Server"]

DEFAULT_TIMEOUT: Final = 60.0
MAX_WORKERS: Final = 256  # beyond this, calls run in-process (the launcher falls back)
# A spare is kept ready only while fewer calls than this run: under a burst its warm-up would
# compete for the CPUs with the calls themselves, and a plain fork is as good.
SPARE_BELOW: Final = max(1, os.cpu_count() or 1)
# Idle workers kept: the one back from the last call (``pycni.warmfork.reuse``) and a forked
# spare for a call that comes before it is back (a DEL's worker waits for the kernel's grace
# period at its nft contexts' release first).
SPARES: Final = 2
# Under a burst, a call that finds no idle worker while this many run waits (at most
# ``WAIT_FOR_WORKER`` s) for one to be back rather than forking another: on a busy machine a
# fresh fork's copy-on-write faults and teardown cost twice the CPU of the call itself.
BUSY_WORKERS: Final = 2 * max(1, os.cpu_count() or 1)
WAIT_FOR_WORKER: Final = 0.5

log = logging.getLogger("pycni.server")


@dataclass(slots=True, eq=False, kw_only=True)
class _Running(Relayed):
    stdout: int  # our copy of the caller's stdout, for the 999 report if the worker dies


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A call received and not yet ACKed, waiting for a worker to be back."""

    pending: Pending
    call: Call
    until: float

    def close(self) -> None:
        self.call.close()
        self.pending.sock.close()


class Server(RelayServer[Call, _Running]):
    """Serve plugin calls on ``socket_path``; ``warm``: what a spare worker runs while it
    waits (None: no forked spare, a fork per call unless a worker is back from its last);
    ``idle_timeout``: stop after that long without a call (then finish running calls)."""

    reuses_workers = True

    def __init__(self, socket_path: str, *, timeout: float = DEFAULT_TIMEOUT,
                 warm: Warm | None = None, idle_timeout: float | None = None) -> None:
        recipe = None if warm is None else SpareRecipe(
            warm=warm, receive=receive_call, run=run_worker, die_with_parent=True,
            own_group=True)
        super().__init__(socket_path, log=log, idle_timeout=idle_timeout,
                         fork_spare=None if recipe is None else lambda: fork_spare(
                             recipe, close_inherited=self.close_inherited),
                         spare_depth=SPARES)
        self.timeout = timeout
        self._answers = VersionAnswers(self._sel, timeout=timeout)
        self._waiting: deque[_Waiting] = deque()

    def listening_note(self) -> str:
        return f"call timeout {self.timeout:.1f}s, "

    def listen_failed(self, err: ListenError) -> Exception:
        if isinstance(err, SocketInUse):
            return CNIError(ErrorCode.INTERNAL,
                            f"another pycni server is listening on {self.socket_path}")
        return CNIError(ErrorCode.INTERNAL, "pycni server cannot listen", str(err))

    def may_refill(self) -> bool:
        return len(self._running) < SPARE_BELOW

    def busy(self) -> bool:
        return super().busy() or self._answers.busy or bool(self._waiting)

    def draining(self) -> bool:
        return bool(self._running or self._answers.busy)

    def deadlines(self) -> list[float]:
        waited = [self._waiting[0].until] if self._waiting else []
        return super().deadlines() + self._answers.deadlines() + waited

    def expire(self, now: float) -> None:
        self._answers.expire(now)
        super().expire(now)
        while self._waiting and self._waiting[0].until <= now:
            self._start(self._waiting.popleft())  # waited long enough: a fork then

    def worker_free(self) -> None:
        while self._waiting and (self.spares.idle() or len(self._running) < BUSY_WORKERS):
            self._start(self._waiting.popleft())

    def stopping(self) -> None:
        super().stopping()
        while self._waiting:  # not ACKed: their callers run them themselves
            self._waiting.popleft().close()

    def close_in_child(self) -> None:
        for running in self._running.values():
            if running.stdout >= 0:
                os.close(running.stdout)
        for waiting in self._waiting:
            waiting.close()
        self._answers.close_in_child()
        super().close_in_child()

    # ------------------------------------------------------------------ the call

    def receive(self, sock: socket.socket) -> Call:
        call = receive_call(sock)
        if call.request.name not in PLUGINS:
            call.close()
            raise PeerError(f"unknown plugin {call.request.name!r}")
        return call

    def discard(self, call: Call) -> None:
        call.close()

    def take(self, pending: Pending, call: Call) -> None:
        if len(self._running) + len(self._waiting) >= MAX_WORKERS:
            raise PeerError(f"{MAX_WORKERS} calls already running")
        if call.env_value(b"CNI_COMMAND") == "VERSION":  # answered here, by no worker
            try:
                self.ack(pending.sock, protocol.encode_ack(self.timeout), None)
            except OSError as err:  # the launcher gave up first: it runs the call itself
                raise PeerError(f"{call.request.name} VERSION: ACK failed ({err})") from err
            self._answers.start(pending.sock, pending.pid, call)
            return
        if self._waiting or (not self.spares.idle() and len(self._running) >= BUSY_WORKERS):
            # in order: a worker back takes the first
            self._waiting.append(_Waiting(pending, call, time.monotonic() + WAIT_FOR_WORKER))
            return
        self._hand_over(pending, call)

    def _start(self, waiting: _Waiting) -> None:
        """A call that waited, to a worker; refused as a request would be."""
        try:
            self._hand_over(waiting.pending, waiting.call)
        except PeerError as err:
            self.refuse(waiting.pending, waiting.call, err)

    def _hand_over(self, pending: Pending, call: Call) -> None:
        what = f"{call.request.name} {call.env_value(b'CNI_COMMAND') or '?'}"

        def close_inherited() -> None:
            self.close_inherited()
            pending.sock.close()  # only the server talks to the launcher

        worker = self.hand_over(
            pending, call, ack=protocol.encode_ack(self.timeout), spare=self.spares.take(),
            fork=lambda: fork_for_call(call, run_worker, close_inherited=close_inherited,
                                       die_with_parent_=True, own_group=True),
            hand=lambda spare: spare.hand(call.encode(), call.fds()))
        if worker is not None:
            self._watch(pending, call, worker, what)

    def failed(self, call: Call, sock: socket.socket, why: str) -> None:
        report_failure(call.stdout, "pycni server's worker failed", why)
        send_status(sock, 1, log)

    def _watch(self, pending: Pending, call: Call, worker: Worker, what: str) -> None:
        """Relay ``worker``'s status for ``call``; only it uses the caller's descriptors now."""
        for fd in (call.stdin, call.stderr, call.netns, call.mntns):
            os.close(fd)
        now = time.monotonic()  # the channel that carried the call carries its status:
        self.relay(_Running(worker=worker, what=what, started=now, deadline=now + self.timeout,
                            sock=pending.sock, stdout=call.stdout, report=worker.chan))
        log.debug("%s from pid %d: worker pid %d", what, pending.pid, worker.pid)
        # No spare is forked here: the fork (a few ms of page-table copying) would hold up
        # this very call's status, which this single thread delivers. It comes after it.

    # ------------------------------------------------------------------ after the ACK

    def delivering(self, running: _Running) -> None:
        os.close(running.stdout)
        running.stdout = -1

    def unreported(self, running: _Running, code: int) -> int:
        if code >= 0 and not running.killed:
            return code
        running.worker.kill_group()  # whatever it left behind (a delegate)
        why = running.killed or f"killed by signal {-code}"
        log.error("%s (pid %d): worker %s", running.what, running.worker.pid, why)
        report_failure(running.stdout, f"pycni server worker for {running.what} failed", why)
        return 1
