"""A relayed status: the worker reports to the server, the server to the caller at once.

For a service whose caller waits on its connection to the server for the status (the plugin
server: its launcher is a thin client). The worker sends its status on the channel that
carried the call as soon as the call is done, and the server passes it on at once, before
anything else the worker does: its exit (tearing down the process and noticing the exit took
~3.5 ms of every call), or going back to where it started and saying ``READY`` on the same
channel, for the next call. A worker that exits without reporting is still seen through its
pidfd (the service's ``unreported`` makes its status); a caller that hangs up has its worker
killed with its process group. The runtime daemon's workers report to their clients themselves: it
needs no relay.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from pycni.warmfork.loop import Running, WarmServer
from pycni.warmfork.peer import send_status
from pycni.warmfork.wire import ProtocolError, decode_status
from pycni.warmfork.workers import READY

__all__ = ["RelayServer", "Relayed"]

C = TypeVar("C")


@dataclass(slots=True, eq=False, kw_only=True)
class Relayed(Running):
    """A running worker whose status the server relays to its caller."""

    sock: socket.socket | None  # the caller's; None once it hung up or has its status
    report: socket.socket | None  # the worker's status channel; None once read
    delivered: bool = False  # the caller has its status
    returning: bool = False  # delivered, and the worker may say it can take another call


R = TypeVar("R", bound=Relayed)


class RelayServer(WarmServer[C, R]):
    """A warm server that relays each worker's status (``relay``) instead of letting the
    worker answer its caller. ``reuses_workers``: a worker whose call succeeded may then say
    ``READY`` on the same channel, and is an idle spare again (``back_to_spares``)."""

    reuses_workers: ClassVar[bool] = False

    def unreported(self, running: R, code: int) -> int:
        """The status for the caller of a worker that exited with ``code`` without a report
        (killed: ``running.killed``)."""
        return code

    def delivering(self, running: R) -> None:
        """Just before the status goes to the caller: let go of what served the call."""

    def relay(self, running: R) -> None:
        """Watch ``running``: its report, its exit, its caller hanging up."""
        assert running.report is not None
        assert running.sock is not None
        running.report.setblocking(False)
        self.run(running)
        self.watch(running.report, lambda: self._on_report(running))
        self.watch(running.sock, lambda: self._on_hangup(running))

    def finished(self, running: R, code: int) -> None:
        self._close_report(running)
        if not running.delivered:
            self._deliver(running, self.unreported(running, code), may_return=False)
        if running.returning:  # it exited instead
            running.returning = False
            self.spares.settle(None)
        self.refill()  # one call fewer runs: the service's policy may allow a spare now

    def close_in_child(self) -> None:
        for running in self._running.values():
            for sock in (running.sock, running.report):
                if sock is not None:
                    sock.close()
        super().close_in_child()

    def _on_hangup(self, running: R) -> None:
        assert running.sock is not None
        data = _read(running.sock)
        if data != b"":
            return  # nothing is expected after the request; ignore it
        self.unwatch(running.sock)
        running.sock.close()
        running.sock = None
        self.log.warning("%s (pid %d): caller hung up, killing the worker", running.what,
                         running.worker.pid)
        self.kill(running, "the caller hung up")

    def _on_report(self, running: R) -> None:
        """The worker's status (EOF: it died without one); after it, ``READY`` or EOF."""
        assert running.report is not None
        data = _read(running.report)
        if data is None:
            return
        if running.delivered:
            if data == READY and running.returning and not running.killed:
                running.returning = False
                self.unwatch(running.report)
                running.report = None  # the worker's channel: its own again, not closed
                self.back_to_spares(running)
            else:
                self._close_report(running)  # the exit (pidfd) settles it
            return
        if not data or running.killed:
            self._close_report(running)
            return  # the exit (pidfd) decides
        try:
            status = decode_status(data)
        except ProtocolError as err:
            self.log.warning("%s (pid %d): bad report: %s", running.what, running.worker.pid,
                             err)
            self._close_report(running)
            return
        self._deliver(running, status, may_return=self.reuses_workers)
        if not running.returning:
            self._close_report(running)

    def _close_report(self, running: R) -> None:
        if running.report is not None:
            self.unwatch(running.report)
            running.report.close()
            running.report = None

    def _deliver(self, running: R, status: int, *, may_return: bool) -> None:
        """Hand the caller its status; from here the call is done for everyone. A worker
        that succeeded, if ``may_return``, is expected back (no spare is forked for it)."""
        running.delivered = True
        if may_return and status == 0 and not running.killed:
            running.returning = True
            self.spares.expect()
        self.touch()
        self.delivering(running)
        elapsed = (time.monotonic() - running.started) * 1000
        self.log.debug("%s (pid %d): exit %d in %.1f ms", running.what, running.worker.pid,
                       status, elapsed)
        if running.sock is not None:
            self.unwatch(running.sock)
            send_status(running.sock, status, self.log)
            running.sock.close()
            running.sock = None
        # The caller has its status: a runtime's next plugin call is an interpreter start-up
        # away (~10 ms), time enough to fork the spare that will take it.
        self.refill()


def _read(sock: socket.socket) -> bytes | None:
    """One packet from a readable ``sock``; b"" at EOF or on an error; None: nothing yet."""
    try:
        return sock.recv(64)
    except BlockingIOError:
        return None
    except OSError:
        return b""
