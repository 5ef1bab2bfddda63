"""The loop of a warm server: single-threaded, one selector, one worker per running call.

No threads anywhere: a worker must join its caller's mount namespace, which the kernel allows
only to a single-threaded process. Everything is an event of the one selector: a connection,
its request, a worker's exit (its pidfd), a signal (through the wakeup fd), a deadline.

Per connection: accept -> the peer check (root, holding every privilege the server has, and
in its pid namespace if the service needs that: ``privileges``) -> one request packet within
``READ_TIMEOUT`` -> the service's ``take``, which refuses it (``PeerError``) or hands it over
(``hand_over``): a worker (the idle spare, or a fork) -> ACK carrying the worker's pidfd ->
the call handed to it (``run``). Anything wrong before the ACK drops the connection and the
caller runs its call itself. Nothing a peer sends can stop the loop. A running worker is
watched through its pidfd until it exits, and killed with its process group if it outlives
its deadline. Up to the service's number of spares wait (``workers.SpareKeeper``: two for
each service), forked again whenever the service's ``refill`` policy allows; a call takes a
worker back from its last call first (``back_to_spares``: the plugin server's), then the
oldest.

Stopping (SIGTERM/SIGINT, or ``idle_timeout`` seconds without a call for a server started on
demand: ``listener.IdleExit``) closes the socket first (nothing is accepted after), drops the
queued requests, then lets the service drain what it runs (``draining``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from pycni.warmfork import listener, privileges
from pycni.warmfork.peer import PeerError, peer_uid
from pycni.warmfork.workers import SpareKeeper, Worker

__all__ = ["READ_TIMEOUT", "Pending", "Running", "WarmServer"]

READ_TIMEOUT = 2.0  # a peer that connects and sends nothing is dropped after this

C = TypeVar("C")  # a service's decoded call
R = TypeVar("R", bound="Running")


@dataclass(slots=True, eq=False)
class Pending:
    """An accepted connection whose request has not come in yet."""

    sock: socket.socket
    pid: int  # the caller's, in the server's pid namespace (SO_PEERCRED)
    deadline: float


@dataclass(slots=True, eq=False, kw_only=True)
class Running:
    """A worker running a call, watched through its pidfd."""

    worker: Worker
    what: str  # for the log: the plugin and its verb, or the command
    started: float
    deadline: float | None = None
    killed: str = ""  # why the server killed it


class WarmServer(Generic[C, R]):
    """Listen on ``socket_path`` and serve until stopped. A service says what a call is
    (``receive``), what it does with one (``take``) and what a worker's exit means
    (``finished``); the rest is here."""

    noun: ClassVar[str] = "call"  # what a request is called in the log
    same_pid_ns: ClassVar[bool] = True  # callers must be in the server's pid namespace

    def __init__(
        self,
        socket_path: str,
        *,
        log: logging.Logger,
        idle_timeout: float | None = None,
        fork_spare: Callable[[], Worker] | None = None,
        spare_gone: Callable[[Worker], None] = lambda _worker: None,
        spare_grace: float = 0.0,
        spare_depth: int = 1,
    ) -> None:
        """``fork_spare``: a new spare (None: a fork per call); ``spare_gone``: after a spare
        ended; ``spare_grace``: how long a dropped spare may take to see its EOF."""
        self.socket_path = socket_path
        self.log = log
        self._idle = listener.IdleExit(idle_timeout)
        self._sel = selectors.DefaultSelector()
        self._pending: set[Pending] = set()
        self._running: dict[int, R] = {}
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self.spares = SpareKeeper(self._sel, fork_spare, log=log, gone=spare_gone,
                                  grace=spare_grace, depth=spare_depth)
        self.spares.died = self.refill
        self._myself = privileges.myself_or_none()  # None: every caller runs its call
        if self._myself is None:
            log.warning("this /proc cannot tell this process's own privileges: serving nobody")

    # ------------------------------------------------------------------ the service's part

    def receive(self, sock: socket.socket) -> C:
        """The one request packet (``sock`` is readable); ``PeerError`` if unusable."""
        raise NotImplementedError

    def take(self, pending: Pending, call: C) -> None:
        """ACK ``call`` and start a worker for it, or ``PeerError`` (nothing ACKed)."""
        raise NotImplementedError

    def discard(self, call: C) -> None:
        """Close what ``call`` holds (refused before its ACK)."""
        raise NotImplementedError

    def finished(self, running: R, code: int) -> None:
        """``running``'s worker exited with ``code`` (a wait status as an exit code)."""

    def failed(self, call: C, sock: socket.socket, why: str) -> None:
        """``call`` was ACKed but no worker ran it: tell its caller (``why``)."""

    def listen_failed(self, err: listener.ListenError) -> Exception:
        """The error to raise when the socket cannot be set up."""
        return err

    def may_refill(self) -> bool:
        """Whether a spare may be forked now (its warm-up competes for the CPUs)."""
        return True

    def listening(self) -> None:
        """The socket listens."""
        self.refill()

    def stopping(self) -> None:
        """The socket is closed: let go of what only served new calls (the spare)."""
        self.spares.drop()

    def draining(self) -> bool:
        """Whether to keep serving after the stop (until what runs is done)."""
        return False

    def close_in_child(self) -> None:
        """In a fresh worker: close the service's own descriptors."""
        self.spares.close_in_child()

    def what_runs(self) -> str:
        """What the stop leaves running, for the log."""
        return f"finishing {len(self._running)} running {self.noun}(s)"

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self, listening: Callable[[], None] | None = None) -> None:
        """``listening``: called once the socket listens."""
        try:
            self._listener = listener.bind(self.socket_path, self.log)
        except listener.ListenError as err:  # SocketInUse too: listen_failed tells them apart
            raise self.listen_failed(err) from None
        self._sel.register(self._listener, selectors.EVENT_READ, self._accept)
        self._install_signals()
        self.log.info("listening on %s (%spid %d)", self.socket_path, self.listening_note(),
                      os.getpid())
        try:
            if listening is not None:
                listening()
            self.listening()
            while not self._stopping or self.draining():
                self._step()
        finally:
            self.stopping()
            self._close_listener()
            self.log.info("stopped")

    def listening_note(self) -> str:
        return ""

    def _step(self) -> None:
        listener.dispatch(self._sel, self._wait_time())
        now = time.monotonic()
        for pending in [p for p in self._pending if p.deadline <= now]:
            self._drop(pending, f"no complete request within {READ_TIMEOUT}s")
        self.expire(now)
        if self._idle.due(now, self.busy(), self._listener):
            self.stop(f"no {self.noun} for {self._idle.timeout:g}s")

    def busy(self) -> bool:
        return bool(self._pending or self._running)

    def deadlines(self) -> list[float]:
        """When the loop must look again at the latest (a call's deadline)."""
        return [r.deadline for r in self._running.values()
                if r.deadline is not None and not r.killed]

    def expire(self, now: float) -> None:
        for running in list(self._running.values()):
            if running.deadline is not None and not running.killed and running.deadline <= now:
                why = f"timed out after {running.deadline - running.started:.1f}s"
                self.log.error("%s (pid %d): %s, killing it", running.what, running.worker.pid,
                               why)
                self.kill(running, why)

    def _wait_time(self) -> float | None:
        deadlines = [p.deadline for p in self._pending] + self.deadlines()
        idle = None if self._stopping else self._idle.deadline(self.busy())
        deadlines += [] if idle is None else [idle]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _install_signals(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)  # the wakeup fd carries the signal number
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_signal)

    def _on_signal(self, _: object) -> None:
        with contextlib.suppress(BlockingIOError):
            for signum in self._wake_r.recv(64):
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self.stop(f"signal {signum}")

    def stop(self, why: str) -> None:
        """Stop listening first (nothing is accepted after this), then drain what runs."""
        if self._stopping:
            return
        self.log.info("%s: stopping, %s", why, self.what_runs())
        self._stopping = True
        self._close_listener()
        self.stopping()
        for pending in list(self._pending):
            self._drop(pending, "server stopping")

    def _close_listener(self) -> None:
        if self._listener is not None:
            listener.close(self._sel, self._listener, self.socket_path)
            self._listener = None

    def close_inherited(self) -> None:
        """In a fresh worker: close every descriptor that belongs to the server."""
        if self._listener is not None:
            self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()
        for pending in self._pending:
            pending.sock.close()
        for running in self._running.values():
            running.worker.close()
        self.close_in_child()

    # ------------------------------------------------------------------ before the ACK

    def _accept(self, sock: object) -> None:
        assert isinstance(sock, socket.socket)
        try:
            conn, _ = sock.accept()
        except OSError as err:  # EMFILE and friends: log, keep serving
            self.log.warning("accept failed: %s", err)
            return
        conn.setblocking(False)
        self._idle.touch()
        why = privileges.refuse_caller(conn, self._myself, same_pid_ns=self.same_pid_ns)
        if why:
            self.log.warning("refused %s; it runs the %s itself", why, self.noun)
            conn.close()
            return
        pid, _ = peer_uid(conn)
        pending = Pending(sock=conn, pid=pid, deadline=time.monotonic() + READ_TIMEOUT)
        self._pending.add(pending)
        self._sel.register(conn, selectors.EVENT_READ, lambda _: self._on_request(pending))

    def _drop(self, pending: Pending, why: str) -> None:
        self.log.warning("dropped request from pid %d: %s", pending.pid, why)
        self._pending.discard(pending)
        self._sel.unregister(pending.sock)
        pending.sock.close()

    def _on_request(self, pending: Pending) -> None:
        try:
            call = self.receive(pending.sock)
        except PeerError as err:
            self._drop(pending, str(err))
            return
        self._pending.discard(pending)
        self._sel.unregister(pending.sock)
        try:
            self.take(pending, call)
        except PeerError as err:
            self.refuse(pending, call, err)

    def refuse(self, pending: Pending, call: C, err: PeerError) -> None:
        """Drop ``call`` unACKed (``err`` says why): its caller runs it itself."""
        self.log.warning("request from pid %d: %s", pending.pid, err)
        self.discard(call)
        pending.sock.close()

    def ack(self, sock: socket.socket, data: bytes, worker: Worker | None) -> None:
        """Send the ACK ``data``, with ``worker``'s pidfd (the caller waits on it before it
        reports a failure of its own). OSError if the caller gave up first."""
        rights = [] if worker is None else [
            (socket.SOL_SOCKET, socket.SCM_RIGHTS, worker.pidfd.to_bytes(4, sys.byteorder))]
        sock.sendmsg([data], rights)

    def hand_over(
        self,
        pending: Pending,
        call: C,
        *,
        ack: bytes,
        spare: Worker | None,
        fork: Callable[[], Worker],
        hand: Callable[[Worker], None],
    ) -> Worker | None:
        """``call`` to a worker: ``spare`` (``hand`` it the call) or ``fork()`` (told ``go``),
        ACKed to its caller first with ``ack``. ``PeerError`` while nothing is ACKed; None,
        with the call let go of, if the worker could not take it after the ACK."""
        try:
            worker = spare or fork()
        except OSError as err:
            raise PeerError(f"cannot fork a worker: {err}") from err
        try:
            self.ack(pending.sock, ack, worker)
        except OSError as err:  # the caller gave up first: it runs its call, we run nothing
            self.spares.discard(worker)
            self.refill()
            raise PeerError(f"ACK failed: {err}") from err
        try:
            if spare is not None:
                hand(worker)
            else:
                worker.go()
        except OSError as err:  # it died since it was forked: the caller waits for a status
            self.log.warning("worker %d could not take the %s: %s", worker.pid, self.noun, err)
            self.spares.discard(worker)
            self.failed(call, pending.sock, f"could not take the {self.noun}: {err}")
            self.discard(call)
            pending.sock.close()
            self.refill()
            return None
        return worker

    def refill(self) -> None:
        """Fork spares up to the service's number if its policy allows it now."""
        if not self._stopping and self.may_refill():
            self.spares.refill()

    # ------------------------------------------------------------------ after the ACK

    def run(self, running: R) -> None:
        """Watch ``running``'s worker until it exits (``finished``)."""
        self._running[running.worker.pid] = running
        self._sel.register(running.worker.pidfd, selectors.EVENT_READ,
                           lambda _: self._on_exit(running))

    def watch(self, fileobj: socket.socket | int, handler: Callable[[], None]) -> None:
        self._sel.register(fileobj, selectors.EVENT_READ, lambda _: handler())

    def unwatch(self, fileobj: socket.socket | int) -> None:
        self._sel.unregister(fileobj)

    def touch(self) -> None:
        """A call just ended: the idle time starts again."""
        self._idle.touch()

    def kill(self, running: R, why: str) -> None:
        """SIGKILL ``running``'s worker with its process group (what it started too)."""
        if not running.killed:
            running.killed = why
        running.worker.kill_group()

    def back_to_spares(self, running: R) -> None:
        """``running``'s worker served its call and waits for another: an idle spare again
        (discarded if the server is stopping)."""
        self._sel.unregister(running.worker.pidfd)
        del self._running[running.worker.pid]
        if self._stopping:
            self.spares.settle(None)
            self.spares.discard(running.worker)
            return
        self.spares.settle(running.worker)
        self.refill()
        self.worker_free()

    def worker_free(self) -> None:
        """A worker is idle again, or gone: a service may start a call that waited."""

    def _on_exit(self, running: R) -> None:
        self._sel.unregister(running.worker.pidfd)
        running.worker.close_pidfd()  # before ``finished`` forks a spare: not inherited
        del self._running[running.worker.pid]
        _, wait_status = os.waitpid(running.worker.pid, 0)
        self.finished(running, os.waitstatus_to_exitcode(wait_status))
        running.worker.close()
        self.worker_free()
