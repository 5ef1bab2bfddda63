"""The listening side the fork server and the runtime daemon share: a root-only
SEQPACKET socket, and dispatching one selector batch."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket

__all__ = ["SocketInUse", "bind", "close", "dispatch"]


class SocketInUse(Exception):
    """Another process is listening on the path."""


def bind(path: str, log: logging.Logger) -> socket.socket:
    """The listening socket: its directory 0700, itself 0600, a stale one replaced."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.stat(directory).st_mode & 0o077:
        log.warning("%s is accessible to others; the socket itself is 0600", directory)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _remove_stale(path: str) -> None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except FileNotFoundError:
        return
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.ENOTSOCK, errno.EPROTOTYPE):
            raise
        os.unlink(path)  # nobody listens there: a leftover of a process that died
        return
    finally:
        probe.close()
    raise SocketInUse(path)


def close(sel: selectors.BaseSelector, sock: socket.socket, path: str) -> None:
    """Stop listening: unregister, close, and remove the path."""
    sel.unregister(sock)
    sock.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def dispatch(sel: selectors.BaseSelector, timeout: float | None) -> None:
    """Wait up to ``timeout`` and call each ready key's handler (``key.data(fileobj)``)."""
    for key, _ in sel.select(timeout):
        # A handler earlier in this batch may have unregistered this one (a worker's exit
        # closes its report channel, a delivered status its caller's socket).
        if sel.get_map().get(key.fd) is key:
            key.data(key.fileobj)
