"""The server's main loop: single-threaded, one selector, one forked worker per call.

No threads anywhere: a worker must join the caller's mount namespace, which the kernel allows
only to a single-threaded process. Workers are watched through pidfds in the same selector,
so reaping, call timeouts and callers that hang up are all plain events of the one loop.

Per connection: accept -> peer check (root, in this pid namespace, and holding every
privilege the server has: ``privileges``) -> read the one request within
``READ_TIMEOUT`` -> a worker (the idle spare, or a fork) -> ACK carrying its pidfd -> hand it
the call -> (worker reports its status on its report channel, or exits without one | call
timeout: SIGKILL | caller hangs up: SIGKILL) -> status. The status goes to
the caller as soon as the worker reports it, before its exit is reaped. VERSION is answered
by the loop itself (``answer``): no fork. Anything wrong before the ACK drops the connection
and the launcher runs the call in-process; nothing a peer sends can stop the loop.
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
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.plugins import PLUGINS
from pycni.server import listener, privileges, protocol
from pycni.server.answer import VersionAnswers
from pycni.server.peer import (
    Call,
    PeerError,
    peer_uid,
    receive_call,
    report_failure,
    send_status,
)
from pycni.server.spare import Spare, SpareKeeper, Warm, fork_worker

__all__ = ["DEFAULT_TIMEOUT", "READ_TIMEOUT", "Server"]

DEFAULT_TIMEOUT: Final = 60.0
READ_TIMEOUT: Final = 2.0  # a peer that connects and sends nothing is dropped after this
MAX_WORKERS: Final = 256  # beyond this, calls run in-process (the launcher falls back)
# A spare is kept ready only while fewer calls than this run: under a burst its warm-up would
# compete for the CPUs with the calls themselves, and a plain fork is as good.
SPARE_BELOW: Final = max(1, os.cpu_count() or 1)

log = logging.getLogger("pycni.server")


@dataclass(slots=True, eq=False)
class _Pending:
    sock: socket.socket
    peer: int
    deadline: float


@dataclass(slots=True, eq=False)
class _Running:
    sock: socket.socket | None  # None once the caller hung up or has its status
    stdout: int  # our copy of the caller's stdout, for the 999 report if the worker dies
    pid: int
    pidfd: int
    report: socket.socket | None  # the worker's status channel; None once read
    what: str
    started: float
    deadline: float
    killed: str = ""
    delivered: bool = False  # the caller has its status


class Server:
    """Listen on ``socket_path`` and serve until SIGTERM/SIGINT, or ``idle_timeout`` seconds
    without a call (then finish running calls)."""

    def __init__(
        self,
        socket_path: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        warm: Warm | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        """``warm``: what a spare worker runs while it waits (None: no spare, fork per call)."""
        self.socket_path = socket_path
        self.timeout = timeout
        self._idle = listener.IdleExit(idle_timeout)
        self._sel = selectors.DefaultSelector()
        self._spares = SpareKeeper(self._sel, warm=warm, close_inherited=self.close_inherited)
        self._pending: set[_Pending] = set()
        self._running: dict[int, _Running] = {}
        self._answers = VersionAnswers(self._sel, timeout=timeout)
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._myself = privileges.myself_or_none()  # None: every caller runs its call
        if self._myself is None:
            log.warning("this /proc cannot tell this process's own privileges: serving nobody")

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self, listening: Callable[[], None] | None = None) -> None:
        """``listening``: called once the socket listens."""
        self._listener = _bind(self.socket_path)
        self._sel.register(self._listener, selectors.EVENT_READ, self._accept)
        self._install_signals()
        log.info("listening on %s (call timeout %.1fs, pid %d)", self.socket_path, self.timeout,
                 os.getpid())
        try:
            if listening is not None:
                listening()
            self._refill_spare()
            while not self._stopping or self._running or self._answers.busy:
                self._step()
        finally:
            self._spares.drop()
            self._close_listener()
            log.info("stopped")

    def _step(self) -> None:
        listener.dispatch(self._sel, self._wait_time())
        now = time.monotonic()
        self._expire(now)
        if self._idle.due(now, self._busy(), self._listener):
            self._stop(f"no call for {self._idle.timeout:g}s")

    def _busy(self) -> bool:
        return bool(self._pending or self._running or self._answers.busy)

    def _wait_time(self) -> float | None:
        deadlines = [p.deadline for p in self._pending]
        deadlines += [r.deadline for r in self._running.values() if not r.killed]
        deadlines += self._answers.deadlines()
        idle = None if self._stopping else self._idle.deadline(self._busy())
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
                    self._stop(f"signal {signum}")

    def _stop(self, why: str) -> None:
        """Stop listening first (nothing is accepted after this), then drain what runs."""
        if self._stopping:
            return
        log.info("%s: stopping, finishing %d running call(s)", why, len(self._running))
        self._stopping = True
        self._close_listener()
        self._spares.drop()
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
            for sock in (running.sock, running.report):
                if sock is not None:
                    sock.close()
            if running.stdout >= 0:
                os.close(running.stdout)
            os.close(running.pidfd)
        self._answers.close_in_child()
        self._spares.close_in_child()

    # ------------------------------------------------------------------ before the ACK

    def _accept(self, listener: object) -> None:
        assert isinstance(listener, socket.socket)
        try:
            sock, _ = listener.accept()
        except OSError as err:  # EMFILE and friends: log, keep serving
            log.warning("accept failed: %s", err)
            return
        sock.setblocking(False)
        self._idle.touch()
        # Its /proc (in its mount namespace) must be of the pid namespace our workers are in,
        # or /proc/self would not resolve there: same_pid_ns.
        why = privileges.refuse_caller(sock, self._myself, same_pid_ns=True)
        if why:
            log.warning("refused %s; it runs the call itself", why)
            sock.close()
            return
        pid, _ = peer_uid(sock)
        pending = _Pending(sock=sock, peer=pid, deadline=time.monotonic() + READ_TIMEOUT)
        self._pending.add(pending)
        self._sel.register(sock, selectors.EVENT_READ, lambda _: self._on_request(pending))

    def _drop(self, pending: _Pending, why: str) -> None:
        log.warning("dropped request from pid %d: %s", pending.peer, why)
        self._pending.discard(pending)
        self._sel.unregister(pending.sock)
        pending.sock.close()

    def _on_request(self, pending: _Pending) -> None:
        try:
            call = receive_call(pending.sock)
            if call.request.name not in PLUGINS:
                call.close()
                raise PeerError(f"unknown plugin {call.request.name!r}")
        except PeerError as err:
            self._drop(pending, str(err))
            return
        if len(self._running) >= MAX_WORKERS:
            call.close()
            self._drop(pending, f"{MAX_WORKERS} calls already running")
            return
        self._pending.discard(pending)
        self._sel.unregister(pending.sock)
        self._start(pending, call)

    # ------------------------------------------------------------------ the call

    def _start(self, pending: _Pending, call: Call) -> None:
        what = f"{call.request.name} {call.env_value(b'CNI_COMMAND') or '?'}"
        if call.env_value(b"CNI_COMMAND") == "VERSION":
            if self._ack(pending, call, what, None):
                self._answers.start(pending.sock, pending.peer, call)
            return
        try:
            worker = self._spares.take() or self._fork(pending.sock)
        except OSError as err:  # before the ACK: the launcher runs the call in-process
            log.warning("%s from pid %d: cannot fork a worker (%s)", what, pending.peer, err)
            call.close()
            pending.sock.close()
            return
        if not self._ack(pending, call, what, worker):
            worker.reap()  # it holds no call
            return
        try:
            worker.hand(call)
        except OSError as err:  # it died since it was forked: the launcher waits for a status
            log.warning("%s: worker %d could not take the call: %s", what, worker.pid, err)
            report_failure(call.stdout, "pycni server's worker could not take the call", str(err))
            send_status(pending.sock, 1)
            worker.reap()
            call.close()
            pending.sock.close()
            return
        self._run(pending, call, worker, what)

    def _ack(self, pending: _Pending, call: Call, what: str, worker: Spare | None) -> bool:
        """ACK the call, with the worker's pidfd (the launcher waits on it before it reports
        a failure of its own); False, with everything closed, if the launcher gave up."""
        rights = [] if worker is None else [
            (socket.SOL_SOCKET, socket.SCM_RIGHTS, worker.pidfd.to_bytes(4, sys.byteorder))]
        try:
            pending.sock.sendmsg([protocol.encode_ack(self.timeout)], rights)
        except OSError as err:  # the launcher gave up first: it runs in-process, we run nothing
            log.warning("%s from pid %d: ACK failed (%s)", what, pending.peer, err)
            call.close()
            pending.sock.close()
            return False
        return True

    def _run(self, pending: _Pending, call: Call, worker: Spare, what: str) -> None:
        """Watch ``worker`` run ``call``: its exit, its report, its caller hanging up."""
        for fd in (call.stdin, call.stderr, call.netns, call.mntns):
            os.close(fd)
        report = worker.chan  # the channel that carried the call now carries its status
        report.setblocking(False)
        now = time.monotonic()
        running = _Running(sock=pending.sock, stdout=call.stdout, pid=worker.pid,
                           pidfd=worker.pidfd, report=report, what=what, started=now,
                           deadline=now + self.timeout)
        self._running[worker.pid] = running
        self._sel.register(running.pidfd, selectors.EVENT_READ, lambda _: self._on_exit(running))
        self._sel.register(report, selectors.EVENT_READ, lambda _: self._on_report(running))
        self._sel.register(pending.sock, selectors.EVENT_READ,
                           lambda _: self._on_hangup(running))
        log.debug("%s from pid %d: worker pid %d", what, pending.peer, worker.pid)
        # No spare is forked here: the fork (a few ms of page-table copying) would hold up
        # this very call's status, which this single thread delivers. It comes after it.

    def _fork(self, sock: socket.socket) -> Spare:
        def close_inherited() -> None:
            self.close_inherited()
            sock.close()  # only the server talks to the launcher

        return fork_worker(close_inherited=close_inherited)

    def _refill_spare(self) -> None:
        if not self._stopping and len(self._running) < SPARE_BELOW:
            self._spares.refill()

    def _kill(self, running: _Running, why: str) -> None:
        if not running.killed:
            running.killed = why
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.pid, signal.SIGKILL)

    def _on_hangup(self, running: _Running) -> None:
        assert running.sock is not None
        try:
            data = running.sock.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # nothing is expected after the request; ignore it
        self._sel.unregister(running.sock)
        running.sock.close()
        running.sock = None
        log.warning("%s (pid %d): caller hung up, killing the worker", running.what, running.pid)
        self._kill(running, "the caller hung up")

    def _expire(self, now: float) -> None:
        for pending in [p for p in self._pending if p.deadline <= now]:
            self._drop(pending, f"no complete request within {READ_TIMEOUT}s")
        self._answers.expire(now)
        for running in self._running.values():
            if not running.killed and running.deadline <= now:
                log.error("%s (pid %d): timed out after %.1fs, killing it", running.what,
                          running.pid, self.timeout)
                self._kill(running, f"timed out after {self.timeout:.1f}s")

    def _on_report(self, running: _Running) -> None:
        """The worker's status, sent just before it exits (EOF: it died without one)."""
        assert running.report is not None
        try:
            data = running.report.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._close_report(running)
        if not data or running.killed:
            return  # the exit (pidfd) decides
        try:
            status = protocol.decode_status(data)
        except protocol.ProtocolError as err:
            log.warning("%s (pid %d): bad report: %s", running.what, running.pid, err)
            return
        self._deliver(running, status)

    def _close_report(self, running: _Running) -> None:
        if running.report is not None:
            self._sel.unregister(running.report)
            running.report.close()
            running.report = None

    def _deliver(self, running: _Running, status: int) -> None:
        """Hand the caller its status; from here the call is done for everyone."""
        running.delivered = True
        self._idle.touch()
        os.close(running.stdout)
        running.stdout = -1
        elapsed = (time.monotonic() - running.started) * 1000
        log.debug("%s (pid %d): exit %d in %.1f ms", running.what, running.pid, status, elapsed)
        if running.sock is not None:
            self._sel.unregister(running.sock)
            send_status(running.sock, status)
            running.sock.close()
            running.sock = None
        # The caller has its status: a runtime's next plugin call is an interpreter start-up
        # away (~10 ms), time enough to fork the spare that will take it.
        self._refill_spare()

    def _on_exit(self, running: _Running) -> None:
        self._sel.unregister(running.pidfd)
        os.close(running.pidfd)
        self._close_report(running)
        del self._running[running.pid]
        _, wait_status = os.waitpid(running.pid, 0)
        if not running.delivered:
            self._deliver(running, self._status_of(running, os.waitstatus_to_exitcode(wait_status)))
        self._refill_spare()

    def _status_of(self, running: _Running, code: int) -> int:
        if code >= 0 and not running.killed:
            return code
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.pid, signal.SIGKILL)  # whatever it left behind (a delegate)
        why = running.killed or f"killed by signal {-code}"
        log.error("%s (pid %d): worker %s", running.what, running.pid, why)
        report_failure(running.stdout, f"pycni server worker for {running.what} failed", why)
        return 1


def _bind(path: str) -> socket.socket:
    try:
        return listener.bind(path, log)
    except listener.SocketInUse:
        raise CNIError(ErrorCode.INTERNAL, f"another pycni server is listening on {path}") from None
    except listener.ListenError as err:
        raise CNIError(ErrorCode.INTERNAL, "pycni server cannot listen", str(err)) from None
