"""Terminals: the container's pty is made *inside* it (its own devpts), the master sent out.

runc's console-socket shape: the process that will exec opens ``/dev/ptmx`` in the
container's ``/dev/pts`` instance, makes the slave its controlling terminal and stdio, and
passes the master over the runtime's socket; the runtime relays the master to its own
terminal (raw mode, window size) or, detached, into the log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import termios
import tty
from collections.abc import Iterator
from typing import Any

__all__ = ["open_console", "raw_terminal", "relay"]


def open_console(sock: socket.socket) -> None:
    """In the container: a new pty; the slave becomes stdio + ctty, the master goes out."""
    master, slave = os.openpty()
    socket.send_fds(sock, [b'{"tty": true}'], [master])
    os.close(master)
    os.login_tty(slave)


def _copy_winsize(src: int, dst: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on ``fd`` if it is a terminal, restored afterwards."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def relay(master: int, *, stdin_fd: int | None, stdout_fd: int) -> None:
    """Copy master -> stdout (and stdin -> master) until the container side closes."""
    if stdin_fd is not None and os.isatty(stdin_fd):
        _copy_winsize(stdin_fd, master)

        def on_winch(_sig: int, _frame: Any) -> None:
            _copy_winsize(stdin_fd, master)

        signal.signal(signal.SIGWINCH, on_winch)
    sources = [master] + ([stdin_fd] if stdin_fd is not None else [])
    while True:
        readable, _, _ = select.select(sources, [], [])
        if master in readable:
            try:
                data = os.read(master, 65536)
            except OSError as err:
                if err.errno == errno.EIO:  # every slave fd closed: the container is done
                    return
                raise
            if not data:
                return
            _write_all(stdout_fd, data)
        if stdin_fd is not None and stdin_fd in readable:
            data = os.read(stdin_fd, 65536)
            if data:
                _write_all(master, data)
            else:
                sources.remove(stdin_fd)  # EOF on our stdin: keep relaying output
                _write_all(master, b"\x04")
