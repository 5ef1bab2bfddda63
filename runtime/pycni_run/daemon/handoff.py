"""Getting a command from the daemon into a worker: a pre-forked spare, or a fork made for it.

A spare is forked ahead of time (while nothing runs) in the daemon's own pid namespace, so a
caller in that pid namespace (the usual case: the daemon runs on the host, or in the same
sandbox) gets a worker without waiting for a fork. While it waits it parks the next container's
init (``standby``), then warms up (``pycni.warmfork.warmup``: the pages commands write copied
in the idle class, so the command takes almost no copy-on-write faults). A caller in another pid
namespace gets a worker forked for it after the daemon joined that namespace for its children
(``setns(CLONE_NEWPID)`` then back), so the worker's pids are the caller's.

Either way the worker waits until the daemon has ACKed: a command the client gave up on never
runs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Final

from pycni.linux import nscalls
from pycni.warmfork.peer import receive_packet
from pycni.warmfork.warmup import Warm
from pycni.warmfork.workers import SpareRecipe, Worker, fork_for_call, fork_spare
from pycni_run import standby, wire
from pycni_run.daemon.worker import Call, run_call

__all__ = ["fork_for", "fork_spare_with_standby", "hand"]

_MAX_TEXT: Final = 64 * 1024  # a /proc/PID/cgroup text


def fork_spare_with_standby(close_inherited: Callable[[], None],
                            standby_parent: str | None, warm: Warm) -> Worker:
    """A worker forked now, warming up (``warm``), waiting on its channel for a command
    (``hand``) or EOF; with a standby init parked under ``standby_parent`` (``standby``)
    unless that is None."""

    def park(chan: socket.socket) -> None:
        if standby_parent is not None:
            standby.park(standby_parent, chan.close)

    recipe = SpareRecipe(warm=warm, receive=_receive_call, run=run_call,
                         prepare=park, abandon=standby.discard)
    return fork_spare(recipe, close_inherited=close_inherited)


def hand(worker: Worker, call: Call) -> None:
    """Give a spare ``call`` (OSError if it cannot take it: then nothing has run)."""
    request = call.request
    data = wire.encode_request(request.cwd, request.umask, request.argv, request.env)
    worker.hand(data, [*call.fds, call.conn.fileno()], then=call.cgroup_text.encode() or b"\n")


def _receive_call(chan: socket.socket) -> Call:
    """The command and its descriptors (and, last, the client's connection), then the
    caller's cgroups as a second packet (the channel is readable)."""
    request, fds = receive_packet(chan, wire.MAX_REQUEST, wire.FDS + 1, wire.decode_request)
    text = chan.recv(_MAX_TEXT).decode(errors="replace").strip()
    conn = socket.socket(fileno=fds[-1])
    return Call(request=request, fds=fds[:-1], conn=conn, cgroup_text=text)


def fork_for(call: Call, close_inherited: Callable[[], None]) -> Worker:
    """A worker forked into the caller's pid namespace; it runs ``call`` once told ``go``."""
    home = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        nscalls.setns(call.ns_fd("pid"), nscalls.CLONE_NEWPID)
        try:
            return fork_for_call(call, run_call, close_inherited=close_inherited)
        finally:
            nscalls.setns(home, nscalls.CLONE_NEWPID)  # the daemon's own children stay ours
    finally:
        os.close(home)
