"""The runtime daemon's service on the warm-fork kit (``pycni.warmfork.loop``): commands.

A command goes: the request -> ``LOCAL`` for what stays in-process (``cli.stays_local``) ->
the caller read through its pidfd (its cgroups; its user and pid namespaces) -> ACK with the
worker's pidfd -> the command handed to a worker (``handoff``) -> the worker reports the
status itself. The daemon only watches the worker's pidfd: an exit other than "reported"
becomes Docker's 125 with a message on the caller's stderr. Stopping closes the socket and
exits at once: running workers need nothing from the daemon, they report to their clients
themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Final

from pycni.warmfork.listener import ListenError, SocketInUse
from pycni.warmfork.loop import Pending, Running, WarmServer
from pycni.warmfork.peer import PeerError, ns_id, peer_pidfd, pidfd_ns_id, receive_packet
from pycni.warmfork.warmup import Warm
from pycni.warmfork.workers import Worker
from pycni_run import cli, pidfds, standby, wire
from pycni_run.daemon import handoff
from pycni_run.daemon.worker import Call
from pycni_run.errors import EXIT_RUNTIME, RunError

__all__ = ["DEFAULT_SOCKET", "SPARES", "Daemon", "log"]

DEFAULT_SOCKET: Final = "/run/pycni/run.sock"
MAX_RUNNING: Final = 1024  # beyond this, commands run in-process (the client falls back)
SPARE_EXIT_TIMEOUT: Final = 2.0  # a spare told to stop discards its standby within this
# Spares kept waiting, each with its standby, the oldest taken first. With one, a command that
# came right after another found the spare forked at that one's end still copying its pages
# (~12 ms before it was needed), and took the rest of its copy-on-write faults itself: a bridge
# run back-to-back took 67-73 ms, against 58-60 ms after a pause. The second spare had a whole
# command's time to warm up: bench_runtime, bridge/runc 1.15x-1.34x against 1.47x-1.57x,
# --net=none/runc 0.94x-1.02x against 1.08x-1.11x (three runs each, in turns). A third
# bought nothing more (two runs).
SPARES: Final = 2
LONG_COMMAND: Final = 0.5  # seconds; a command running this long does not hold up the spare

log = logging.getLogger("pycni_run.daemon")


@dataclass(slots=True, eq=False, kw_only=True)
class _Running(Running):
    conn: socket.socket  # to report a worker that died without reporting
    stderr: int  # our copy of the caller's stderr, for the same


class Daemon(WarmServer[Call, _Running]):
    """Serve ``socket_path``; spares park their standby init under ``standby_parent``, then
    warm up (``warm``)."""

    noun = "command"
    same_pid_ns = False  # a caller in another pid namespace gets a worker forked into it

    def __init__(self, socket_path: str, standby_parent: str | None = None, *, warm: Warm,
                 idle_timeout: float | None = None) -> None:
        super().__init__(
            socket_path, log=log, idle_timeout=idle_timeout,
            fork_spare=lambda: handoff.fork_spare_with_standby(self.close_inherited,
                                                               standby_parent, warm),
            spare_gone=lambda worker: self._sweep(worker.pid), spare_grace=SPARE_EXIT_TIMEOUT,
            spare_depth=SPARES)
        self._standby_parent = standby_parent
        self._own = {ns: ns_id(f"/proc/self/ns/{ns}") for ns in ("pid", "user")}

    def listen_failed(self, err: ListenError) -> Exception:
        if isinstance(err, SocketInUse):
            return RunError(f"another pycni-run daemon is listening on {self.socket_path}")
        return RunError(str(err))

    def listening(self) -> None:
        self._sweep()  # what a killed daemon left
        self.refill()

    def stopping(self) -> None:
        self.spares.drop()
        for running in list(self._running.values()):
            self.unwatch(running.worker.pidfd)
            del self._running[running.worker.pid]
            running.worker.close()
            self._forget(running)

    def what_runs(self) -> str:
        return f"{len(self._running)} running command(s) carry on"

    def close_in_child(self) -> None:
        for running in self._running.values():
            running.conn.close()
            os.close(running.stderr)
        super().close_in_child()

    def _sweep(self, owner: int | None = None) -> None:
        if self._standby_parent is not None:
            standby.sweep(self._standby_parent, owner)

    def may_refill(self) -> bool:
        """While nothing runs, or only long commands: a spare's fork and its standby's set-up
        (a netns, cgroups) beside a short command slowed it (``--net=none`` runs 4-8 ms, see
        the README), but a command that has run ``LONG_COMMAND`` seconds is a container's life
        in the foreground, and commands from other terminals (``exec`` into it) must not go
        without a spare until it ends."""
        now = time.monotonic()
        return all(now - running.started >= LONG_COMMAND for running in self._running.values())

    def deadlines(self) -> list[float]:
        """Also when the youngest running command becomes a long one (``may_refill``)."""
        turns_long = max((r.started for r in self._running.values()), default=0.0) + LONG_COMMAND
        return [*super().deadlines(), *([turns_long] if turns_long > time.monotonic() else [])]

    def expire(self, now: float) -> None:
        super().expire(now)
        if self._running:
            self.refill()  # a no-op while a spare waits or a short command runs

    # ------------------------------------------------------------------ a command

    def receive(self, sock: socket.socket) -> Call:
        request, fds = receive_packet(sock, wire.MAX_REQUEST, wire.FDS, wire.decode_request)
        return Call(request=request, fds=fds, conn=sock)

    def discard(self, call: Call) -> None:
        call.close()

    def take(self, pending: Pending, call: Call) -> None:
        pending.sock.setblocking(True)
        argv = [os.fsdecode(a) for a in call.request.argv]
        if cli.stays_local(argv):
            with contextlib.suppress(OSError):
                call.conn.send(wire.LOCAL)
            raise PeerError("stays in-process (tty or daemon command)")
        if len(self._running) >= MAX_RUNNING:
            raise PeerError(f"{MAX_RUNNING} commands already running")
        spare = self.spares.take() if self._read_caller(call) else None
        worker = self.hand_over(pending, call, ack=wire.ACK, spare=spare,
                                fork=lambda: handoff.fork_for(call, self.close_inherited),
                                hand=lambda worker: handoff.hand(worker, call))
        if worker is not None:
            self._start(call, worker, " ".join(argv[:4]))

    def failed(self, call: Call, sock: socket.socket, why: str) -> None:
        self._report(sock, call.fds[2], f"the runtime daemon's worker {why}")

    def _read_caller(self, call: Call) -> bool:
        """The caller's cgroups (``call.cgroup_text``), through a pidfd of it: its pid names it
        only in our pid namespace, and /proc may be another's. True if it is in our pid
        namespace. PeerError for a caller in another user namespace (it runs the command)."""
        pidfd = peer_pidfd(call.conn)
        try:
            if pidfd_ns_id(pidfd, "user") != self._own["user"]:
                raise PeerError("another user namespace: it runs the command itself")
            call.cgroup_text = pidfds.read_proc(pidfd, "cgroup")
            return pidfd_ns_id(pidfd, "pid") == self._own["pid"]
        except (RunError, OSError) as err:
            raise PeerError(f"cannot read the caller: {err}") from err
        finally:
            os.close(pidfd)

    def _start(self, call: Call, worker: Worker, what: str) -> None:
        running = _Running(worker=worker, what=what, started=time.monotonic(), conn=call.conn,
                           stderr=os.dup(call.fds[2]))
        for fd in call.fds:
            os.close(fd)
        worker.chan.close()
        self.run(running)
        self.refill()

    # ------------------------------------------------------------------ after the ACK

    def finished(self, running: _Running, code: int) -> None:
        elapsed = (time.monotonic() - running.started) * 1000
        log.debug("%s (worker %d): exit %d in %.1f ms", running.what, running.worker.pid, code,
                  elapsed)
        if code != 0:  # it did not report: killed, crashed, or its client went away
            why = f"killed by signal {-code}" if code < 0 else f"exit {code}"
            log.error("%s: worker %d failed (%s)", running.what, running.worker.pid, why)
            self._report(running.conn, running.stderr, f"the runtime daemon's worker {why}")
        self._forget(running)
        self.refill()

    def _forget(self, running: _Running) -> None:
        self.touch()
        running.conn.close()
        os.close(running.stderr)
        self._sweep(running.worker.pid)  # a worker discards its standby; unless it was killed

    @staticmethod
    def _report(conn: socket.socket, stderr: int, msg: str) -> None:
        with contextlib.suppress(OSError):
            os.write(stderr, f"pycni-run: {msg}\n".encode())
        with contextlib.suppress(OSError):
            conn.send(wire.encode_status(EXIT_RUNTIME))
