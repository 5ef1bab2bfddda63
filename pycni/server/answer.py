"""VERSION answered in the server process itself: no fork, no namespaces.

A VERSION call needs neither the caller's namespaces nor its environment beyond CNI_COMMAND,
so the server runs the very same ``skel.run`` on the caller's stdin bytes in its own process.
The loop must never block, so the caller's stdin is read as the selector reports it readable
(until EOF), and the answer is written to the caller's stdout when it is writable (it is far
below PIPE_BUF: one write, never partial). A stdin epoll refuses (a regular file) cannot block
and is read at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import selectors
import socket
import time
from dataclasses import dataclass, field

from pycni.cni import skel
from pycni.plugins import PLUGINS
from pycni.server.call import Call, report_failure
from pycni.warmfork.peer import send_status

__all__ = ["MAX_INPUT", "VersionAnswers", "VersionCall", "version_output"]

log = logging.getLogger("pycni.server")

MAX_INPUT = 1 << 20  # stdin beyond this is not read: the answer is made from what came


@dataclass(slots=True, eq=False)
class VersionCall:
    """One VERSION call in progress: reading stdin, then writing the answer."""

    sock: socket.socket
    peer: int
    name: str
    stdin: int
    stdout: int
    started: float
    deadline: float
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    output: bytes = b""
    status: int = 0

    @property
    def what(self) -> str:
        return f"{self.name} VERSION"

    def read_some(self) -> bool:
        """One read from the (readable) stdin; True once all of it is in (EOF or the cap)."""
        try:
            chunk = os.read(self.stdin, 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""  # skel's VERSION answers an unreadable stdin too
        self.chunks.append(chunk)
        self.size += len(chunk)
        return not chunk or self.size >= MAX_INPUT

    def read_all(self) -> None:
        """For a stdin that cannot block (a regular file)."""
        while not self.read_some():
            pass

    def answer(self) -> None:
        self.status, self.output = version_output(self.name, b"".join(self.chunks))

    def try_write(self) -> bool:
        """Write the answer if stdout is writable now; True when done (written or failed)."""
        try:
            poller = select.poll()  # not select(): the descriptor may be above FD_SETSIZE
            poller.register(self.stdout, select.POLLOUT)
            if not poller.poll(0):
                return False
            os.write(self.stdout, self.output)
        except OSError:
            self.status = 1  # the caller's stdout is gone: nobody can read an answer
        return True

    def close(self) -> None:
        for fd in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sock.close()


def version_output(name: str, stdin: bytes) -> tuple[int, bytes]:
    """(exit status, stdout) of ``skel.run`` for a VERSION call of plugin ``name``."""
    out = io.StringIO()
    status = skel.run(PLUGINS[name], env={"CNI_COMMAND": "VERSION"}, stdin=io.BytesIO(stdin),
                      stdout=out, stderr=io.StringIO())
    return status, out.getvalue().encode()


class VersionAnswers:
    """The VERSION calls in progress, driven by the server's selector."""

    def __init__(self, sel: selectors.BaseSelector, *, timeout: float) -> None:
        self._sel = sel
        self._timeout = timeout
        self._calls: set[VersionCall] = set()

    @property
    def busy(self) -> bool:
        return bool(self._calls)

    def deadlines(self) -> list[float]:
        return [v.deadline for v in self._calls]

    def start(self, sock: socket.socket, peer: int, call: Call) -> None:
        """Take over an ACKed VERSION call: its socket and descriptors are ours now."""
        for fd in (call.stderr, call.netns, call.mntns):
            os.close(fd)
        now = time.monotonic()
        version = VersionCall(sock=sock, peer=peer, name=call.request.name, stdin=call.stdin,
                              stdout=call.stdout, started=now, deadline=now + self._timeout)
        self._calls.add(version)
        try:
            self._sel.register(version.stdin, selectors.EVENT_READ,
                               lambda _: self._on_input(version))
        except OSError:  # epoll refuses regular files (EPERM): reading one cannot block
            version.read_all()
            self._write(version)

    def expire(self, now: float) -> None:
        for version in [v for v in self._calls if v.deadline <= now]:
            self._done(version, failed=f"timed out after {self._timeout:.1f}s")

    def close_in_child(self) -> None:
        for version in self._calls:
            version.close()

    def _on_input(self, version: VersionCall) -> None:
        if version.read_some():
            self._sel.unregister(version.stdin)
            self._write(version)

    def _write(self, version: VersionCall) -> None:
        version.answer()
        if version.try_write():
            self._done(version)
        else:
            self._sel.register(version.stdout, selectors.EVENT_WRITE,
                               lambda _: self._on_writable(version))

    def _on_writable(self, version: VersionCall) -> None:
        if version.try_write():
            self._sel.unregister(version.stdout)
            self._done(version)

    def _done(self, version: VersionCall, *, failed: str = "") -> None:
        self._calls.discard(version)
        status = version.status
        if failed:
            for fd in (version.stdin, version.stdout):
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(fd)
            log.error("%s (pid %d): %s", version.what, version.peer, failed)
            report_failure(version.stdout, f"pycni server call {version.what} failed", failed)
            status = 1
        elapsed = (time.monotonic() - version.started) * 1000
        log.debug("%s (pid %d): exit %d in %.1f ms, answered in the server", version.what,
                  version.peer, status, elapsed)
        send_status(version.sock, status, log)
        version.close()
