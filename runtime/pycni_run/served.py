"""The daemon's worker: become the caller, run the very same ``cli.main``, report the status.

A worker is a fork of the warm daemon. It enters the caller's namespaces (net, uts, ipc,
cgroup, then mnt: from there on paths, ``/proc`` and ``/run/netns`` are the caller's; the
pid namespace was joined before the fork, so its pids are the caller's too), takes the
caller's cwd, umask, environment and stdio, places containers under the caller's cgroups, and
runs ``cli.main(argv)`` exactly as the in-process ``pycni-run`` would. It sends the exit status
to the client itself, then exits 0; any other exit tells the daemon to report a failure (125).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import NoReturn

from pycni.linux import nscalls
from pycni_run import cgroups, standby, watchdog, wire
from pycni_run.errors import EXIT_RUNTIME

__all__ = ["Call", "run_call"]

_NS_FLAGS = {
    "net": nscalls.CLONE_NEWNET,
    "uts": nscalls.CLONE_NEWUTS,
    "ipc": nscalls.CLONE_NEWIPC,
    "cgroup": nscalls.CLONE_NEWCGROUP,
    "mnt": nscalls.CLONE_NEWNS,
}


@dataclass(slots=True, kw_only=True, eq=False)
class Call:
    """A request, the caller's descriptors (stdio then namespaces) and its connection."""

    request: wire.Request
    fds: list[int]
    conn: socket.socket
    cgroup_text: str = ""

    def ns_fd(self, name: str) -> int:
        return self.fds[3 + wire.NAMESPACES.index(name)]

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.conn.close()


def run_call(call: Call) -> NoReturn:
    """In the worker. Never returns: the status goes to the client, then the worker exits."""
    status = EXIT_RUNTIME
    try:
        _detach_from_daemon(call)
        _join(call)
        _become_caller(call)
        status = _run_cli(call.request.argv)
    except BaseException as err:
        with contextlib.suppress(BaseException):
            print(f"pycni-run: runtime daemon worker failed: {err!r}", file=sys.stderr)
            traceback.print_exception(err, file=sys.stderr)
    finally:
        code = _report(call.conn, status)
        with contextlib.suppress(BaseException):
            standby.discard()  # the command did not use it (after the report: off its clock)
        os._exit(code)


def _detach_from_daemon(call: Call) -> None:
    """Start like a fresh ``pycni-run``: default signal handlers, no daemon state."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, as Python's
    # What the container and a detached monitor fork from here must not hold: the client's
    # connection (only this worker reports on it).
    os.register_at_fork(after_in_child=call.conn.close)


def _join(call: Call) -> None:
    try:
        for name in ("net", "uts", "ipc", "cgroup", "mnt"):
            nscalls.setns(call.ns_fd(name), _NS_FLAGS[name])
    finally:
        for fd in call.fds[3:]:
            os.close(fd)
    try:
        os.chdir(call.request.cwd)
    except OSError:
        os.chdir("/")  # the caller's cwd is gone or hidden from here


def _become_caller(call: Call) -> None:
    os.umask(call.request.umask)
    os.environ.clear()
    for entry in call.request.env:
        key, _, value = entry.partition(b"=")
        os.environb[key] = value
    if call.cgroup_text:
        cgroups.set_reference(call.cgroup_text)
    watchdog.not_needed()  # a killed client leaves this worker running: it finishes the run
    # Received descriptors are >= 3 (the daemon keeps 0-2 open), so dup2 cannot clobber them.
    for target, fd in enumerate(call.fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - lives until exit
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )


def _run_cli(argv: list[bytes]) -> int:
    from pycni.plugins.runner import IN_PROCESS
    from pycni_run import cli

    sys.argv = ["pycni-run", *(os.fsdecode(a) for a in argv)]
    try:
        # This worker is thrown away after the command: pycni's plugins run in it.
        return cli.main(sys.argv[1:], plugin_runner=IN_PROCESS)
    except SystemExit as done:  # what `sys.exit` in the entry would have made of it
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


def _report(conn: socket.socket, status: int) -> int:
    """Send the status to the client; the worker's own exit code says whether that worked."""
    try:
        conn.send(wire.encode_status(status))
    except OSError:
        return 1
    return 0
