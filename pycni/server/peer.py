"""The server's side of one connection before any fork: who is calling, and what they ask.

Every failure here is a ``PeerError``: the loop logs it and drops the connection, and the
launcher, which has no ACK yet, runs the call in-process.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pycni.cni.errors import CNIError, ErrorCode
from pycni.server import protocol

__all__ = [
    "Call",
    "PeerError",
    "peer_pidfd",
    "peer_uid",
    "receive_call",
    "receive_packet",
    "received_fds",
    "report_failure",
    "send_status",
]

_UCRED = struct.Struct("iII")  # pid, uid, gid
_SO_PEERPIDFD = 77  # Linux >= 6.5; Python 3.11's socket module has no name for it
_FD_BYTES = array.array("i").itemsize

T = TypeVar("T")

log = logging.getLogger("pycni.server")


class PeerError(Exception):
    """The connection is refused or its request unusable."""


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

    def close(self) -> None:
        for fd in self.fds():
            _close_quietly(fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def peer_uid(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, from SO_PEERCRED."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _gid = _UCRED.unpack(raw)
    return pid, uid


def peer_pidfd(conn: socket.socket) -> int:
    """A pidfd of the process at the other end (SO_PEERPIDFD): its namespaces and its /proc
    entry are reached through it, never through its pid (which names it only in our pid
    namespace, and only while it lives). PeerError if it is gone already."""
    try:
        return conn.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
    except OSError as err:
        raise PeerError(f"no pidfd of the peer: {err}") from err


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in a ``recvmsg`` ancillary data list (SCM_RIGHTS), in order."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _FD_BYTES
            fds.frombytes(data[:usable])
    return list(fds)


def receive_packet(
    conn: socket.socket, max_size: int, fd_count: int, decode: Callable[[bytes], T]
) -> tuple[T, list[int]]:
    """Read one request packet (the socket is readable) carrying exactly ``fd_count``
    descriptors and decode it; PeerError, with the descriptors closed, on anything wrong."""
    try:
        data, ancdata, flags, _ = conn.recvmsg(
            max_size + 1,
            socket.CMSG_SPACE(fd_count * _FD_BYTES),
            socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT,
        )
    except OSError as err:
        raise PeerError(f"receive failed: {err}") from err
    fds = received_fds(ancdata)
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise PeerError("request truncated (too large or too many descriptors)")
        if not data:
            raise PeerError("peer closed without a request")
        if len(fds) != fd_count:
            raise PeerError(f"expected {fd_count} descriptors, got {len(fds)}")
        try:
            return decode(data), fds
        except protocol.ProtocolError as err:
            raise PeerError(str(err)) from err
    except BaseException:
        for fd in fds:
            _close_quietly(fd)
        raise


def receive_call(conn: socket.socket) -> Call:
    """Read the one plugin request packet (the socket is readable)."""
    request, fds = receive_packet(conn, protocol.MAX_REQUEST, protocol.FDS,
                                  protocol.decode_request)
    return Call(request=request, stdin=fds[0], stdout=fds[1], stderr=fds[2], netns=fds[3],
                mntns=fds[4])


def send_status(sock: socket.socket, status: int) -> None:
    try:
        sock.send(protocol.encode_status(status))
    except OSError as err:
        log.warning("cannot send status %d: %s", status, err)


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
