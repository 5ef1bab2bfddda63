"""Getting a call from the daemon into a worker: a pre-forked spare, or a fork made for it.

A spare is forked ahead of time (while nothing runs) in the daemon's own pid namespace, so a
caller in that pid namespace (the usual case: the daemon runs on the host, or in the same
sandbox) gets a worker without waiting for a fork. While it waits it parks the next container's
init (``standby``), then copies its pages in the SCHED_IDLE class (``populate_when_idle``,
~40 MB): the worker then takes almost no copy-on-write faults (~2400 otherwise, ~6 ms here).
At normal priority that copying competed for the CPUs with the commands around it (90 ms
against 65 ms per `run --rm /bin/true` when it was tried); in the idle class it takes only
time nothing else wants, and ``hand`` restores the spare's policy before the call. A caller
in another pid namespace gets a worker forked for it after the daemon joined that namespace
for its children (``setns(CLONE_NEWPID)`` then back), so the worker's pids are the caller's.

Either way the worker waits until the daemon has ACKed: a call the client gave up on never
runs.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from pycni.linux import nscalls
from pycni.server.forking import fork_with_channel
from pycni.server.peer import received_fds
from pycni.server.spare import populate_when_idle, wake, warm_until_readable
from pycni_run import standby, wire
from pycni_run.served import Call, run_call

__all__ = ["Worker", "fork_for", "fork_spare"]

_FD_BYTES = 4
_MAX_TEXT = 64 * 1024  # a /proc/PID/cgroup text


@dataclass(slots=True, eq=False)
class Worker:
    """The daemon's handle on a worker: its pid and pidfd, and its channel until it runs."""

    pid: int
    pidfd: int
    chan: socket.socket

    def close(self) -> None:
        self.chan.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)

    def kill(self) -> None:
        """Our own child, holding no call (or one it must not run): SIGKILL and reap."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.close()


def _fork(child: Callable[[socket.socket], NoReturn]) -> Worker:
    pid, pidfd, chan = fork_with_channel(child)
    return Worker(pid=pid, pidfd=pidfd, chan=chan)


def _child_start(close_inherited: Callable[[], None]) -> None:
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)  # the daemon's stop must not stop a worker
    close_inherited()


def _wait_readable(chan: socket.socket) -> None:
    poller = select.poll()  # not select(): the descriptor may be above FD_SETSIZE
    poller.register(chan, select.POLLIN)
    poller.poll()


# ---------------------------------------------------------------------- a spare


def fork_spare(close_inherited: Callable[[], None], standby_parent: str | None) -> Worker:
    """A worker forked now, warm, waiting on its channel for a call (``hand``) or EOF; with a
    standby init parked under ``standby_parent`` (``standby``) unless that is None."""

    def child(chan: socket.socket) -> NoReturn:
        try:
            _child_start(close_inherited)
            if standby_parent is not None:
                standby.park(standby_parent, chan.close)
            warm_until_readable(chan, populate_when_idle)  # no page faults for the call
            call = _receive_call(chan)
        except BaseException:
            with contextlib.suppress(BaseException):
                standby.discard()
            os._exit(0)  # no usable call: the daemon stopped or dropped us
        chan.close()
        run_call(call)

    return _fork(child)


def hand(worker: Worker, call: Call) -> None:
    """Give a spare ``call`` (OSError if it cannot take it: then nothing has run)."""
    wake(worker.pid)  # out of the idle class its warm-up runs in, before the call is there
    request = call.request
    data = wire.encode_request(request.cwd, request.umask, request.argv, request.env)
    fds = [*call.fds, call.conn.fileno()]
    rights = b"".join(fd.to_bytes(_FD_BYTES, sys.byteorder) for fd in fds)
    worker.chan.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    worker.chan.send(call.cgroup_text.encode() or b"\n")


def _receive_call(chan: socket.socket) -> Call:
    data, ancdata, _flags, _ = chan.recvmsg(
        wire.MAX_REQUEST + 1, socket.CMSG_SPACE((wire.FDS + 1) * _FD_BYTES), socket.MSG_CMSG_CLOEXEC
    )
    fds = received_fds(ancdata)
    if len(fds) != wire.FDS + 1:
        raise ValueError(f"expected {wire.FDS + 1} descriptors, got {len(fds)}")
    request = wire.decode_request(data)
    text = chan.recv(_MAX_TEXT).decode(errors="replace").strip()
    conn = socket.socket(fileno=fds[-1])
    return Call(request=request, fds=fds[:-1], conn=conn, cgroup_text=text)


# ---------------------------------------------------------------------- a fork for one caller


def fork_for(call: Call, pidns: int, close_inherited: Callable[[], None]) -> Worker:
    """A worker forked into the caller's pid namespace; it runs ``call`` once ``go`` says so."""
    home = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        nscalls.setns(pidns, nscalls.CLONE_NEWPID)
        try:

            def child(chan: socket.socket) -> NoReturn:
                try:
                    _child_start(close_inherited)
                    _wait_readable(chan)
                    go = chan.recv(16) == b"go"
                except BaseException:
                    go = False
                if not go:
                    os._exit(0)
                chan.close()
                run_call(call)

            return _fork(child)
        finally:
            nscalls.setns(home, nscalls.CLONE_NEWPID)  # the daemon's own children stay ours
    finally:
        os.close(home)


def go(worker: Worker) -> None:
    """Let a worker made by ``fork_for`` run its call."""
    worker.chan.send(b"go")
