"""A foreground run's second monitor: it finishes the container if the first one is killed.

A foreground ``pycni-run run`` is the container's monitor: it waits for the init and tears
everything down (CNI DEL, netns pin, cgroups, overlay, state; all of it with ``--rm``). A
SIGKILL to it (the user's ``kill -9``, an OOM kill, a CI timeout) used to leave all that
behind for good. Docker's and podman's monitors (containerd-shim, conmon) are processes that
outlive their client; here it is this small fork, made before anything of the container
exists, in its own session, holding none of the caller's stdio:

- the monitor hands it a pidfd of the container's init once there is one (``watch``);
- a monitor that finished the container itself says so (``release``) and it exits;
- on EOF instead (the monitor died), it waits for the init to exit, if there is one, and
  finishes the container as the monitor would have (``teardown.finish_named``: teardown,
  the exit recorded, the container removed with ``--rm``). The exit code is unknown to it
  (the init is not its child): the container is recorded as exited without one.

The runtime daemon's worker needs none (``not_needed``): a killed client leaves it running.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
from dataclasses import dataclass
from typing import NoReturn

from pycni_run import teardown
from pycni_run.config import RuntimeConfig
from pycni_run.errors import warn

__all__ = ["Watchdog", "not_needed", "start"]

_INIT = b"init"
_DONE = b"done"
_needed = [True]


def not_needed() -> None:
    """This process is not its client's: a killed client leaves it to finish (the daemon's
    worker)."""
    _needed[0] = False


@dataclass(slots=True)
class Watchdog:
    pid: int
    chan: socket.socket | None

    def watch(self, init_pidfd: int) -> None:
        """The container's init exists: hand the watchdog a copy of our pidfd of it (passed
        over the channel), before it may exec."""
        if self.chan is None:
            return
        try:
            socket.send_fds(self.chan, [_INIT], [init_pidfd])
        except OSError as err:  # the safety net is gone: the run itself goes on
            warn(f"the run's watchdog is gone: {err}")

    def release(self) -> None:
        """The monitor finished the container itself: the watchdog exits."""
        if self.chan is None:
            return
        with contextlib.suppress(OSError):
            self.chan.send(_DONE)
        self.chan.close()
        self.chan = None
        # Not waited for: it exits at once, and its exit (a copy of this heap to unmap) is
        # not worth the caller's time; whoever reaps our orphans reaps it.


def start(cfg: RuntimeConfig, name: str, container_id: str) -> Watchdog:
    """Fork the watchdog of container ``name`` (a no-op one where none is needed)."""
    if not _needed[0]:
        return Watchdog(pid=0, chan=None)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a forked child, ended by os._exit
        ours.close()
        _main(cfg, name, container_id, theirs)
    theirs.close()
    return Watchdog(pid=pid, chan=ours)


def _main(cfg: RuntimeConfig, name: str, container_id: str, chan: socket.socket) -> NoReturn:
    code = 1
    try:
        _detach()
        init = _await_monitor(chan)
        if init is not None:
            _await_exit(init)
            teardown.finish_named(cfg, name, container_id, None)
        code = 0
    finally:
        os._exit(code)


def _detach() -> None:
    """Its own session (no terminal's signals), and none of the caller's stdio: a caller
    reading the command's output to EOF must not wait for the watchdog."""
    os.setsid()
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _await_monitor(chan: socket.socket) -> int | None:
    """None once the monitor says it is done; else (it died) the init's pidfd, or -1 if it
    died before there was one."""
    init = -1
    while True:
        data, fds, _flags, _addr = socket.recv_fds(chan, 16, 1)
        if data == _INIT and fds:
            init = fds[0]
        elif data == _DONE:
            return None
        elif not data:
            return init


def _await_exit(pidfd: int) -> None:
    if pidfd < 0:
        return
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)  # readable once the init has exited
    poller.poll()
    os.close(pidfd)
