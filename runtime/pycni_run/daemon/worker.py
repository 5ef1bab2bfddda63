"""The daemon's worker: become the caller, run the very same ``cli.main``, report the status.

A worker is a fork of the warm daemon. It becomes the caller (``pycni.warmfork.caller``: its
stdio, its net, uts, ipc, cgroup and mnt namespaces, its cwd, umask and environment; the pid
namespace was joined before the fork, so its pids are the caller's too), places containers
under the caller's cgroups, and runs ``cli.main(argv)`` exactly as the in-process ``pycni-run``
would, with pycni's plugins in-process (it is thrown away after the command). It sends the exit
status to the client itself, then exits 0; any other exit tells the daemon to report a
failure (125).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import Final, NoReturn

from pycni.firewall.nftables import engine as nft_engine
from pycni.linux import nscalls
from pycni.warmfork.caller import become_caller
from pycni.warmfork.warmup import learn_after_call
from pycni_run import cgroups, cli, standby, watchdog, wire
from pycni_run.errors import EXIT_RUNTIME

__all__ = ["Call", "run_call"]

# Joined in this order: after mnt, paths and /proc are the caller's.
_JOINED: Final = (
    ("net", nscalls.CLONE_NEWNET),
    ("uts", nscalls.CLONE_NEWUTS),
    ("ipc", nscalls.CLONE_NEWIPC),
    ("cgroup", nscalls.CLONE_NEWCGROUP),
    ("mnt", nscalls.CLONE_NEWNS),
)


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


def run_call(call: Call, chan: socket.socket) -> NoReturn:
    """In the worker, the daemon's descriptors closed. Never returns: the status goes to the
    client, then the worker exits."""
    chan.close()  # the client hears from this worker directly
    status = EXIT_RUNTIME
    try:
        _become(call)
        nft_engine.hold_contexts()  # see pycni.firewall.nftables.engine
        status = _run_cli(call.request.argv)
    except BaseException as err:
        with contextlib.suppress(BaseException):
            print(f"pycni-run: runtime daemon worker failed: {err!r}", file=sys.stderr)
            traceback.print_exception(err, file=sys.stderr)
    finally:
        code = _report(call.conn, status)
        with contextlib.suppress(BaseException):
            standby.discard()  # the command did not use it (after the report: off its clock)
        with contextlib.suppress(BaseException):
            learn_after_call()  # what the command wrote, for the next spares (off its clock)
        with contextlib.suppress(BaseException):
            nft_engine.release_held_contexts()  # the kernel's wait, off its clock too
        os._exit(code)


def _become(call: Call) -> None:
    # What the container and a detached monitor fork from here must not hold: the client's
    # connection (only this worker reports on it).
    os.register_at_fork(after_in_child=call.conn.close)
    os.close(call.ns_fd("pid"))  # joined before the fork, for its children
    become_caller(
        stdio=call.fds[:3],
        namespaces=[(call.ns_fd(name), nstype) for name, nstype in _JOINED],
        cwd=call.request.cwd,
        env=(_split(entry) for entry in call.request.env),
        umask=call.request.umask,
        server_log=logging.getLogger("pycni_run.daemon"),
    )
    if call.cgroup_text:
        cgroups.set_reference(call.cgroup_text)
    watchdog.not_needed()  # a killed client leaves this worker running: it finishes the run


def _split(entry: bytes) -> tuple[bytes, bytes]:
    key, _, value = entry.partition(b"=")
    return key, value


def _run_cli(argv: list[bytes]) -> int:
    from pycni.plugins.runner import IN_PROCESS

    sys.argv = ["pycni-run", *(os.fsdecode(a) for a in argv)]
    try:
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
