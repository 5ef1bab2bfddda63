"""The forked worker: become the caller (``pycni.warmfork.caller``), run skel, exit.

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
import socket
import sys
import time
import traceback
from typing import NoReturn

from pycni.cni import skel
from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.nftables import engine as nft_engine
from pycni.linux import nscalls
from pycni.plugins import PLUGINS
from pycni.server.call import Call
from pycni.warmfork.caller import JoinError, become_caller
from pycni.warmfork.warmup import learn_after_call
from pycni.warmfork.wire import encode_status

__all__ = ["TEST_LINGER_ENV", "TEST_SLEEP_ENV", "run_worker"]

# Test-only failpoint: a worker whose caller's environment sets it sleeps that many seconds
# before running the plugin (to test the call timeout and a worker killed mid-call).
TEST_SLEEP_ENV = b"PYCNI_TEST_SLEEP"
# Test-only: seconds a worker lingers after reporting its status (its exit must not hold up
# the caller's status nor its stdout's EOF).
TEST_LINGER_ENV = b"PYCNI_TEST_LINGER"


def run_worker(call: Call, report: socket.socket) -> NoReturn:
    """In the worker, the server's descriptors closed. Never returns: reports the plugin's
    status on ``report`` and exits with it."""
    status = 1
    try:
        _become(call)
        sleep = os.environ.get(TEST_SLEEP_ENV.decode())
        if sleep:
            time.sleep(float(sleep))
        nft_engine.hold_contexts()  # their release waits for the kernel: at our exit, not here
        status = skel.run(PLUGINS[call.request.name], env=os.environ, stdin=sys.stdin.buffer,
                          stdout=sys.stdout, stderr=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException as err:
        _report(err)
    finally:
        _finish(report, status)
        with contextlib.suppress(BaseException):
            learn_after_call()  # the caller has its status: off its clock
        os._exit(status)


def _become(call: Call) -> None:
    try:
        become_caller(
            stdio=(call.stdin, call.stdout, call.stderr),
            namespaces=((call.netns, nscalls.CLONE_NEWNET), (call.mntns, nscalls.CLONE_NEWNS)),
            cwd=call.request.cwd,
            env=call.request.env,
            server_log=logging.getLogger("pycni.server"),
        )
    except JoinError as err:
        raise CNIError(ErrorCode.INTERNAL, "pycni server cannot join the caller's namespaces",
                       str(err.__cause__ or err)) from err


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
        report.send(encode_status(status))
    linger = os.environ.get(TEST_LINGER_ENV.decode())
    if linger:
        time.sleep(float(linger))


def _report(err: BaseException) -> None:
    try:
        traceback.print_exception(err, file=sys.stderr)
        if not isinstance(err, CNIError):
            err = CNIError(ErrorCode.INTERNAL, "pycni server worker failed",
                           f"{type(err).__name__}: {err}")
        os.write(1, (err.to_json() + "\n").encode())
    except BaseException:  # noqa: S110 - nowhere left to report to
        pass
