"""The forked worker: become the caller (``pycni.warmfork.caller``), run skel, report; then
go back to the server's state (``pycni.warmfork.reuse``) and take the next call, or exit.

It runs the very same ``pycni.cni.skel.run`` as the in-process path, so a plugin sees exactly
what it would have seen had its executable run it: the caller's network namespace, its mount
namespace (hence its ``/run/netns`` view), its cwd, stdin, stdout, stderr and environment.

Once the plugin is done the worker lets go of the caller's stdio (a runtime reads stdout to
EOF) and reports its status on its report channel before anything else: tearing down the
process (~30 MB of copied heap) and the server noticing the exit took ~3.5 ms of every call.
A worker that dies without reporting is still seen through its pidfd. A worker whose call
failed, or that cannot go back, exits as every worker once did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import sys
import time
import traceback
from typing import Final, NoReturn

from pycni.cni import skel
from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.nftables import engine as nft_engine
from pycni.linux import nscalls
from pycni.plugins import PLUGINS
from pycni.server.call import Call, receive_call
from pycni.warmfork.caller import JoinError, become_caller
from pycni.warmfork.peer import PeerError
from pycni.warmfork.reuse import Baseline
from pycni.warmfork.warmup import learn_after_call
from pycni.warmfork.wire import encode_status
from pycni.warmfork.workers import READY

__all__ = ["MAX_CALLS", "TEST_LINGER_ENV", "TEST_SLEEP_ENV", "run_worker"]

# A worker serves at most this many calls, then exits (whatever a call leaks stays bounded).
MAX_CALLS: Final = 256

# Test-only failpoint: a worker whose caller's environment sets it sleeps that many seconds
# before running the plugin (to test the call timeout and a worker killed mid-call).
TEST_SLEEP_ENV = b"PYCNI_TEST_SLEEP"
# Test-only: seconds a worker lingers after reporting its status (its exit must not hold up
# the caller's status nor its stdout's EOF).
TEST_LINGER_ENV = b"PYCNI_TEST_LINGER"


def run_worker(call: Call, chan: socket.socket) -> NoReturn:
    """In the worker, the server's descriptors closed. Never returns: runs ``call``, reports
    its status on ``chan`` and, if the call succeeded and left the worker as it found it
    (``pycni.warmfork.reuse``), says so (``READY``) and serves the next call the server
    hands it there; otherwise (or at EOF) exits."""
    try:
        baseline: Baseline | None = Baseline.capture(not_ours=call.fds())
    except OSError:
        baseline = None  # serves this call, then exits
    served = 0
    while True:
        status = _serve(call, chan)
        served += 1
        if served == 1:
            with contextlib.suppress(BaseException):
                learn_after_call()  # the caller has its status: off its clock
        if status != 0 or baseline is None or served >= MAX_CALLS:
            os._exit(status)
        with contextlib.suppress(BaseException):
            nft_engine.release_held_contexts()  # may wait for a grace period: off the clock
        try:
            back = baseline.restore() is None
        except Exception:  # whatever it is, this worker is not reused
            back = False
        if not back:
            os._exit(status)
        next_call = _next_call(chan)
        if next_call is None:
            os._exit(0)
        call = next_call


def _serve(call: Call, report: socket.socket) -> int:
    """Run ``call`` as its caller; its status, reported on ``report`` with the caller's stdio
    let go of."""
    status = 1
    try:
        _become(call)
        sleep = os.environ.get(TEST_SLEEP_ENV.decode())
        if sleep:
            time.sleep(float(sleep))
        nft_engine.hold_contexts()  # their release waits for the kernel: after the report
        status = skel.run(PLUGINS[call.request.name], env=os.environ, stdin=sys.stdin.buffer,
                          stdout=sys.stdout, stderr=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException as err:
        _report(err)
        status = status or 1
    finally:
        _finish(report, status)
    return status


def _next_call(chan: socket.socket) -> Call | None:
    """Tell the server this worker can take another call, and wait for it (None: EOF, or
    anything unusable; the server keeps only so many idle workers)."""
    try:
        chan.send(READY)
        poller = select.poll()  # not select(): the descriptor may be above FD_SETSIZE
        poller.register(chan, select.POLLIN)
        poller.poll()
        return receive_call(chan)
    except (OSError, PeerError):
        return None


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
