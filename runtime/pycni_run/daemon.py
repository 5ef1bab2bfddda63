"""``pycni-run daemon``: the warm runtime daemon (Docker's split: dockerd and a light client).

Single-threaded, one selector, no threads anywhere (a worker must join the caller's mount
namespace, which the kernel allows only to a single-threaded process). Per connection:
accept -> peer check (root, same user namespace, holding every privilege the daemon has:
``pycni.server.privileges``) -> read the one request within
``READ_TIMEOUT`` -> ``LOCAL`` for what stays in-process (``cli.stays_local``) -> ACK with the
worker's pidfd -> hand the call to a worker (``handoff``) -> the worker reports the status
itself. The daemon only watches the worker's pidfd: an exit other than "reported" becomes
Docker's 125 with a message on the caller's stderr. Anything wrong before the ACK drops the
connection and the client runs the command in-process; nothing a peer sends stops the loop.

Stopping (SIGTERM/SIGINT, or ``idle_timeout`` seconds without a command and nothing running,
for a daemon started on demand) closes the socket and exits at once: running workers need
nothing from the daemon, they report to their clients themselves.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pycni.linux import nscalls
from pycni.server import listener, privileges
from pycni.server.peer import PeerError, peer_pidfd, peer_uid, receive_packet
from pycni.server.spare import wake
from pycni_run import handoff, pidfds, standby, wire
from pycni_run.errors import EXIT_RUNTIME, RunError
from pycni_run.served import Call

__all__ = ["DEFAULT_SOCKET", "READ_TIMEOUT", "Daemon"]

DEFAULT_SOCKET: Final = "/run/pycni/run.sock"
READ_TIMEOUT: Final = 2.0  # a peer that connects and sends nothing is dropped after this
MAX_RUNNING: Final = 1024  # beyond this, commands run in-process (the client falls back)
SPARE_EXIT_TIMEOUT: Final = 2.0  # a spare told to stop discards its standby within this

log = logging.getLogger("pycni_run.daemon")


@dataclass(slots=True, eq=False)
class _Pending:
    sock: socket.socket
    pid: int
    deadline: float


@dataclass(slots=True, eq=False)
class _Running:
    worker: handoff.Worker
    conn: socket.socket  # to report a worker that died without reporting
    stderr: int  # our copy of the caller's stderr, for the same
    what: str
    started: float


class Daemon:
    """Serve ``socket_path`` until SIGTERM/SIGINT (or ``idle_timeout`` seconds idle)."""

    def __init__(self, socket_path: str, standby_parent: str | None = None, *,
                 idle_timeout: float | None = None) -> None:
        self.socket_path = socket_path
        self._idle = listener.IdleExit(idle_timeout)
        self._standby_parent = standby_parent  # spares park an init there (``standby``)
        self._sel = selectors.DefaultSelector()
        self._pending: set[_Pending] = set()
        self._running: dict[int, _Running] = {}
        self._spare: handoff.Worker | None = None
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._own = {ns: _ns_id(f"/proc/self/ns/{ns}") for ns in ("pid", "user")}
        self._myself = privileges.myself_or_none()  # None: every caller runs its command
        if self._myself is None:
            log.warning("this /proc cannot tell this process's own privileges: serving nobody")

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self, listening: Callable[[], None] | None = None) -> None:
        """``listening``: called once the socket listens."""
        self._listener = bind(self.socket_path)
        self._sel.register(self._listener, selectors.EVENT_READ, self._accept)
        self._install_signals()
        log.info("listening on %s (pid %d)", self.socket_path, os.getpid())
        try:
            if listening is not None:
                listening()
            self._sweep()  # what a killed daemon left
            self._refill()
            while not self._stopping:
                listener.dispatch(self._sel, self._wait_time())
                now = time.monotonic()
                self._expire(now)
                busy = bool(self._pending or self._running)
                if self._idle.due(now, busy, self._listener):
                    log.info("no command for %gs: stopping", self._idle.timeout)
                    self._stopping = True
        finally:
            self._close_listener()
            self._drop_spare()
            for running in list(self._running.values()):
                self._forget(running)
            log.info("stopped")

    def _wait_time(self) -> float | None:
        deadlines = [p.deadline for p in self._pending]
        idle = self._idle.deadline(bool(self._pending or self._running))
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
            if any(s in (signal.SIGTERM, signal.SIGINT) for s in self._wake_r.recv(64)):
                log.info("stopping; %d running command(s) carry on", len(self._running))
                self._stopping = True

    def _close_listener(self) -> None:
        if self._listener is not None:
            listener.close(self._sel, self._listener, self.socket_path)
            self._listener = None

    def close_inherited(self) -> None:
        """In a fresh worker: close every descriptor that belongs to the daemon."""
        if self._listener is not None:
            self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()
        for pending in self._pending:
            pending.sock.close()
        for running in self._running.values():
            running.worker.close()
            running.conn.close()
            os.close(running.stderr)
        if self._spare is not None:
            self._spare.close()

    # ------------------------------------------------------------------ the spare

    def _sweep(self, owner: int | None = None) -> None:
        if self._standby_parent is not None:
            standby.sweep(self._standby_parent, owner)

    def _fork_spare(self) -> None:
        if self._stopping or self._spare is not None:
            return
        try:
            spare = handoff.fork_spare(self.close_inherited, self._standby_parent)
        except OSError as err:
            log.warning("cannot fork a spare worker: %s", err)
            return
        self._spare = spare
        self._sel.register(spare.pidfd, selectors.EVENT_READ, lambda _: self._spare_died(spare))

    def _take_spare(self) -> handoff.Worker | None:
        spare, self._spare = self._spare, None
        if spare is not None:
            self._sel.unregister(spare.pidfd)
        return spare

    def _spare_died(self, spare: handoff.Worker) -> None:
        log.warning("spare worker %d exited while idle", spare.pid)
        self._take_spare()
        self._kill(spare)
        self._refill()

    def _kill(self, worker: handoff.Worker) -> None:
        worker.kill()
        self._sweep(worker.pid)  # its standby died with it; its cgroup did not

    def _drop_spare(self) -> None:
        """EOF tells the spare to discard its standby and exit; SIGKILL if it does not."""
        spare = self._take_spare()
        if spare is not None:
            wake(spare.pid)  # an idle-class warm-up could wait long for a CPU to see the EOF
            spare.chan.close()
            exited = select.poll()
            exited.register(spare.pidfd, select.POLLIN)
            if not exited.poll(SPARE_EXIT_TIMEOUT * 1000):
                log.warning("spare worker %d ignored its EOF: killed", spare.pid)
            self._kill(spare)

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
        why = privileges.refuse_caller(sock, self._myself, same_pid_ns=False)
        if why:
            log.warning("refused %s; it runs the command itself", why)
            sock.close()
            return
        pid, _ = peer_uid(sock)
        pending = _Pending(sock=sock, pid=pid, deadline=time.monotonic() + READ_TIMEOUT)
        self._pending.add(pending)
        self._sel.register(sock, selectors.EVENT_READ, lambda _: self._on_request(pending))

    def _drop(self, pending: _Pending, why: str) -> None:
        log.warning("dropped request from pid %d: %s", pending.pid, why)
        self._pending.discard(pending)
        self._sel.unregister(pending.sock)
        pending.sock.close()

    def _expire(self, now: float) -> None:
        for pending in [p for p in self._pending if p.deadline <= now]:
            self._drop(pending, f"no complete request within {READ_TIMEOUT}s")

    def _on_request(self, pending: _Pending) -> None:
        try:
            call = _receive(pending.sock)
        except PeerError as err:
            self._drop(pending, str(err))
            return
        self._pending.discard(pending)
        self._sel.unregister(pending.sock)
        pending.sock.setblocking(True)
        try:
            self._start(pending, call)
        except PeerError as err:
            log.warning("request from pid %d: %s", pending.pid, err)
            call.close()

    def _start(self, pending: _Pending, call: Call) -> None:
        argv = [os.fsdecode(a) for a in call.request.argv]
        if _stays_local(argv):
            with contextlib.suppress(OSError):
                call.conn.send(wire.LOCAL)
            raise PeerError("stays in-process (tty or daemon command)")
        if len(self._running) >= MAX_RUNNING:
            raise PeerError(f"{MAX_RUNNING} commands already running")
        same_pidns = self._read_caller(call)
        worker = self._take_spare() if same_pidns else None
        if worker is None:
            self._ack_and_start(call, self._fork_for(call), handoff.go, argv)
        else:
            self._ack_and_start(call, worker, lambda w: handoff.hand(w, call), argv)

    def _read_caller(self, call: Call) -> bool:
        """The caller's cgroups (``call.cgroup_text``), through a pidfd of it: its pid names it
        only in our pid namespace, and /proc may be another's. True if it is in our pid
        namespace. PeerError for a caller in another user namespace (it runs the command)."""
        pidfd = peer_pidfd(call.conn)
        try:
            if _pidfd_ns_id(pidfd, "user") != self._own["user"]:
                raise PeerError("another user namespace: it runs the command itself")
            call.cgroup_text = pidfds.read_proc(pidfd, "cgroup")
            return _pidfd_ns_id(pidfd, "pid") == self._own["pid"]
        except (RunError, OSError) as err:
            raise PeerError(f"cannot read the caller: {err}") from err
        finally:
            os.close(pidfd)

    def _fork_for(self, call: Call) -> handoff.Worker:
        try:
            return handoff.fork_for(call, call.ns_fd("pid"), self.close_inherited)
        except OSError as err:
            raise PeerError(f"cannot fork a worker in its pid namespace: {err}") from err

    def _ack_and_start(
        self,
        call: Call,
        worker: handoff.Worker,
        start: Callable[[handoff.Worker], None],
        argv: list[str],
    ) -> None:
        try:
            call.conn.sendmsg(
                [wire.ACK], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _fd_bytes(worker.pidfd))]
            )
        except OSError as err:  # the client gave up first: it runs in-process, we run nothing
            self._kill(worker)
            self._refill()
            raise PeerError(f"ACK failed: {err}") from err
        try:
            start(worker)
        except OSError as err:
            self._report(call.conn, call.fds[2], f"cannot hand the command to a worker: {err}")
            self._kill(worker)
            call.close()
            self._refill()
            return
        running = _Running(worker=worker, conn=call.conn, stderr=os.dup(call.fds[2]),
                           what=" ".join(argv[:4]), started=time.monotonic())
        for fd in call.fds:
            os.close(fd)
        worker.chan.close()
        self._running[worker.pid] = running
        self._sel.register(worker.pidfd, selectors.EVENT_READ, lambda _: self._on_exit(running))
        self._refill()

    def _refill(self) -> None:
        """Fork the next spare only while nothing runs: its page copying would compete for the
        CPUs with the command it was forked for (2 vCPUs here); idle time is free."""
        if not self._running:
            self._fork_spare()

    # ------------------------------------------------------------------ after the ACK

    def _on_exit(self, running: _Running) -> None:
        _, wait_status = os.waitpid(running.worker.pid, 0)
        code = os.waitstatus_to_exitcode(wait_status)
        elapsed = (time.monotonic() - running.started) * 1000
        log.debug("%s (worker %d): exit %d in %.1f ms", running.what, running.worker.pid, code,
                  elapsed)
        if code != 0:  # it did not report: killed, crashed, or its client went away
            why = f"killed by signal {-code}" if code < 0 else f"exit {code}"
            log.error("%s: worker %d failed (%s)", running.what, running.worker.pid, why)
            self._report(running.conn, running.stderr, f"the runtime daemon's worker {why}")
        self._forget(running)
        self._refill()

    def _forget(self, running: _Running) -> None:
        self._idle.touch()
        self._sel.unregister(running.worker.pidfd)
        running.worker.close()
        running.conn.close()
        os.close(running.stderr)
        del self._running[running.worker.pid]
        self._sweep(running.worker.pid)  # a worker discards its standby; unless it was killed

    @staticmethod
    def _report(conn: socket.socket, stderr: int, msg: str) -> None:
        with contextlib.suppress(OSError):
            os.write(stderr, f"pycni-run: {msg}\n".encode())
        with contextlib.suppress(OSError):
            conn.send(wire.encode_status(EXIT_RUNTIME))


def _stays_local(argv: list[str]) -> bool:
    from pycni_run import cli

    return cli.stays_local(argv)


def _fd_bytes(fd: int) -> bytes:
    return fd.to_bytes(4, sys.byteorder)


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pidfd_ns_id(pidfd: int, kind: str) -> tuple[int, int]:
    fd = nscalls.pidfd_namespace(pidfd, kind)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return st.st_dev, st.st_ino


def _receive(sock: socket.socket) -> Call:
    """Read the one request packet (the socket is readable). Fds are closed on any error."""
    request, fds = receive_packet(sock, wire.MAX_REQUEST, wire.FDS, wire.decode_request)
    return Call(request=request, fds=fds, conn=sock)


def bind(path: str) -> socket.socket:
    """The listening socket (``pycni.server.listener``: root-only, a stale one replaced)."""
    try:
        return listener.bind(path, log)
    except listener.SocketInUse:
        raise RunError(f"another pycni-run daemon is listening on {path}") from None
    except listener.ListenError as err:
        raise RunError(str(err)) from None
