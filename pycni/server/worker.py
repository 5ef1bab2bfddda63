"""The forked worker: become the caller (namespaces, cwd, stdio, environment), run skel, exit.

It runs the very same ``pycni.cni.skel.run`` as the in-process path, so a plugin sees exactly
what it would have seen had its executable run it: the caller's network namespace, its mount
namespace (hence its ``/run/netns`` view), its cwd, stdin, stdout, stderr and environment.

Once the plugin is done the worker lets go of the caller's stdio (a runtime reads stdout to
EOF) and reports its status on its report channel before it exits: tearing down the
process (~30 MB of copied heap) and the server noticing the exit took ~3.5 ms of every call.
A worker that dies without reporting is still seen through its pidfd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import NoReturn

from pycni.cni import skel
from pycni.cni.errors import CNIError, ErrorCode
from pycni.linux import nscalls
from pycni.plugins import PLUGINS
from pycni.server import protocol
from pycni.server.peer import Call

__all__ = ["TEST_LINGER_ENV", "TEST_SLEEP_ENV", "run_worker"]

# Test-only failpoint: a worker whose caller's environment sets it sleeps that many seconds
# before running the plugin (to test the call timeout and a worker killed mid-call).
TEST_SLEEP_ENV = b"PYCNI_TEST_SLEEP"
# Test-only: seconds a worker lingers after reporting its status (its exit must not hold up
# the caller's status nor its stdout's EOF).
TEST_LINGER_ENV = b"PYCNI_TEST_LINGER"


def run_worker(
    call: Call, *, close_inherited: Callable[[], None], report: socket.socket
) -> NoReturn:
    """In the child right after fork. Never returns: reports the plugin's status on ``report``
    and exits with it."""
    status = 1
    try:
        close_inherited()  # the server's sockets and other calls' descriptors
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        _reset_logging()
        _install_stdio(call)
        status = _run(call)
    except BaseException as err:
        _report(err)
    finally:
        _finish(report, status)
        os._exit(status)


def _finish(report: socket.socket, status: int) -> None:
    """Release the caller's stdio, then tell the server the status. Best effort: if either
    fails, the server still learns the status from the exit."""
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        report.send(protocol.encode_status(status))
    linger = os.environ.get(TEST_LINGER_ENV.decode())
    if linger:
        time.sleep(float(linger))


def _reset_logging() -> None:
    """Plugin code logs as it would in a fresh interpreter: not through the server's handler."""
    server_log = logging.getLogger("pycni.server")
    for handler in list(server_log.handlers):
        server_log.removeHandler(handler)
    server_log.propagate = True


def _install_stdio(call: Call) -> None:
    # Received descriptors are >= 3 (the server keeps 0-2 open), so dup2 cannot clobber them.
    for target, fd in enumerate((call.stdin, call.stdout, call.stderr)):
        os.dup2(fd, target)
    for fd in (call.stdin, call.stdout, call.stderr):
        os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - lives until exit
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )


def _join(call: Call) -> None:
    """Enter the caller's namespaces (mnt resets cwd and root, so chdir afterwards)."""
    try:
        nscalls.setns(call.netns, nscalls.CLONE_NEWNET)
        nscalls.setns(call.mntns, nscalls.CLONE_NEWNS)
    except OSError as err:
        raise CNIError(ErrorCode.INTERNAL, "pycni server cannot join the caller's namespaces",
                       str(err)) from err
    finally:
        os.close(call.netns)
        os.close(call.mntns)
    try:
        os.chdir(call.request.cwd)
    except OSError:
        os.chdir("/")  # the caller's cwd is gone or hidden: what a plugin would get in "/"


def _run(call: Call) -> int:
    _join(call)
    os.environ.clear()
    os.environ.update((os.fsdecode(k), os.fsdecode(v)) for k, v in call.request.env)
    sleep = os.environ.get(TEST_SLEEP_ENV.decode())
    if sleep:
        time.sleep(float(sleep))
    status = skel.run(PLUGINS[call.request.name], env=os.environ, stdin=sys.stdin.buffer,
                      stdout=sys.stdout, stderr=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    return status


def _report(err: BaseException) -> None:
    try:
        traceback.print_exception(err, file=sys.stderr)
        if not isinstance(err, CNIError):
            err = CNIError(ErrorCode.INTERNAL, "pycni server worker failed",
                           f"{type(err).__name__}: {err}")
        os.write(1, (err.to_json() + "\n").encode())
    except BaseException:  # noqa: S110 - nowhere left to report to
        pass
