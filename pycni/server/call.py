"""One plugin call as the server holds it: the decoded request and the caller's five
descriptors, read before any fork (``receive_call``), and the 999 error a failed call leaves
on the caller's stdout (``report_failure``)."""

from __future__ import annotations

import logging
import os
import select
import socket
from dataclasses import dataclass

from pycni.cni.errors import CNIError, ErrorCode
from pycni.server import protocol
from pycni.warmfork.peer import close_quietly, receive_packet

__all__ = ["Call", "receive_call", "report_failure"]

log = logging.getLogger("pycni.server")


@dataclass(slots=True, kw_only=True)
class Call:
    """A decoded request and the caller's descriptors, owned by the server until closed."""

    request: protocol.Request
    stdin: int
    stdout: int
    stderr: int
    netns: int
    mntns: int

    def fds(self) -> tuple[int, ...]:
        return (self.stdin, self.stdout, self.stderr, self.netns, self.mntns)

    def env_value(self, key: bytes) -> str:
        for k, v in self.request.env:
            if k == key:
                return v.decode(errors="replace")
        return ""

    def encode(self) -> bytes:
        """The request packet again, for the spare that gets the call (with ``fds``)."""
        request = self.request
        return protocol.encode_request(request.name, request.cwd, dict(request.env))

    def close(self) -> None:
        for fd in self.fds():
            close_quietly(fd)


def receive_call(conn: socket.socket) -> Call:
    """Read the one plugin request packet (the socket is readable)."""
    request, fds = receive_packet(conn, protocol.MAX_REQUEST, protocol.FDS,
                                  protocol.decode_request)
    return Call(request=request, stdin=fds[0], stdout=fds[1], stderr=fds[2], netns=fds[3],
                mntns=fds[4])


def report_failure(stdout: int, msg: str, details: str) -> None:
    """Write the 999 error JSON on the caller's stdout, unless writing would block the loop."""
    data = (CNIError(ErrorCode.INTERNAL, msg, details).to_json() + "\n").encode()
    try:
        poller = select.poll()  # not select(): the descriptor may be above FD_SETSIZE
        poller.register(stdout, select.POLLOUT)
        if poller.poll(0):
            os.write(stdout, data)  # smaller than PIPE_BUF: atomic, never partial
        else:
            log.warning("caller's stdout is full; could not report: %s", msg)
    except OSError as err:
        log.warning("cannot report to the caller's stdout: %s", err)
