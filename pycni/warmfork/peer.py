"""A server's side of one connection before any fork: who is calling, and what they sent.

Every failure here is a ``PeerError``: the loop logs it and drops the connection, and the
caller, which has no ACK yet, runs its call itself.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import TypeVar

from pycni.linux import nscalls
from pycni.warmfork.wire import ProtocolError, encode_status, received_fds

__all__ = [
    "PeerError",
    "close_quietly",
    "ns_id",
    "peer_pidfd",
    "peer_uid",
    "pidfd_ns_id",
    "receive_packet",
    "received_fds",
    "send_status",
]

_UCRED = struct.Struct("iII")  # pid, uid, gid
_SO_PEERPIDFD = 77  # Linux >= 6.5; Python 3.11's socket module has no name for it
_FD_BYTES = array.array("i").itemsize

T = TypeVar("T")


class PeerError(Exception):
    """The connection is refused or its request unusable."""


def close_quietly(fd: int) -> None:
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


def ns_id(path: str) -> tuple[int, int] | None:
    """(device, inode) naming the namespace file at ``path``; None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pidfd_ns_id(pidfd: int, kind: str) -> tuple[int, int]:
    """(device, inode) naming the ``kind`` namespace of the process behind ``pidfd``."""
    fd = nscalls.pidfd_namespace(pidfd, kind)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return st.st_dev, st.st_ino


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
        except ProtocolError as err:
            raise PeerError(str(err)) from err
    except BaseException:
        for fd in fds:
            close_quietly(fd)
        raise


def send_status(sock: socket.socket, status: int, log: logging.Logger) -> None:
    """The call's status to its caller (best effort: it may have gone)."""
    try:
        sock.send(encode_status(status))
    except OSError as err:
        log.warning("cannot send status %d: %s", status, err)

