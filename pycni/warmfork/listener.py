"""The listening side the fork server and the runtime daemon share: a root-only
SEQPACKET socket, dispatching one selector batch, and the idle exit of a server started on
demand.

The socket's directory must be ours alone (owned by this user, root, and writable by nobody
else): callers hand their stdio and namespaces to whatever listens there, and check the same
on their side (``wire.connect``). A path that exists and is not a socket (a symlink,
dangling or not) is refused, never followed or replaced."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import selectors
import socket
import stat
import time

__all__ = ["IdleExit", "ListenError", "SocketInUse", "bind", "close", "dispatch"]


class ListenError(Exception):
    """The socket cannot be set up at this path; the message says why."""


class SocketInUse(ListenError):
    """Another process is listening on the path."""


def bind(path: str, log: logging.Logger) -> socket.socket:
    """The listening socket: its directory 0700, itself 0600, a stale one replaced."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _check_directory(directory, log)
        _remove_stale(path)
        return _listen(path)
    except OSError as err:
        raise ListenError(f"cannot listen on {path}: {err}") from err


def _listen(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _check_directory(directory: str, log: logging.Logger) -> None:
    st = os.stat(directory)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ListenError(
            f"{directory} is not this user's alone (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):04o}): whoever else can write there could put a "
            "socket of theirs in the callers' way; use a directory only root can write"
        )
    if st.st_mode & 0o055:
        log.warning("%s is readable by others; the socket itself is 0600", directory)


def _remove_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a socket"
        raise ListenError(f"{path} exists and is {what}: remove it, or choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except FileNotFoundError:
        return
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.EPROTOTYPE):
            raise
        os.unlink(path)  # nobody listens there: a leftover of a process that died
        return
    finally:
        probe.close()
    raise SocketInUse(path)


def close(sel: selectors.BaseSelector, sock: socket.socket, path: str) -> None:
    """Stop listening: remove the path, then close. In that order: once the path is gone a
    new server may bind it (its stale check would take a closed socket's path for its own
    to replace), and nothing of ours may remove that one's path afterwards."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sel.unregister(sock)
    sock.close()


def dispatch(sel: selectors.BaseSelector, timeout: float | None) -> None:
    """Wait up to ``timeout`` and call each ready key's handler (``key.data(fileobj)``)."""
    for key, _ in sel.select(timeout):
        # A handler earlier in this batch may have unregistered this one (a worker's exit
        # closes its report channel, a delivered status its caller's socket).
        if sel.get_map().get(key.fd) is key:
            key.data(key.fileobj)


class IdleExit:
    """When a server started on demand leaves: ``timeout`` seconds after its last call
    (``touch``) with none since, none running and nobody queued at its socket (None: never).

    The server decides and stops listening (``close``) in one step of its single thread, so no
    call is accepted in between; one that was queued in that instant has its connection
    closed before the ACK, and its caller runs it in-process. Then the server drains what runs.
    """

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._last = time.monotonic()

    def touch(self) -> None:
        self._last = time.monotonic()

    def deadline(self, busy: bool) -> float | None:
        return None if self.timeout is None or busy else self._last + self.timeout

    def due(self, now: float, busy: bool, sock: socket.socket | None) -> bool:
        deadline = self.deadline(busy)
        if deadline is None or now < deadline or sock is None:
            return False
        if select.select([sock], [], [], 0)[0]:
            self.touch()  # a caller is queued: serve it, and wait a full idle time again
            return False
        return True
