"""The C library handle every seam in ``pycni.linux`` calls through, and its errno check."""

from __future__ import annotations

import ctypes
import os

__all__ = ["check", "libc", "new_fd"]

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def check(ret: int, what: str) -> None:
    """OSError with the call's errno unless ``ret`` is 0."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def new_fd(ret: int, what: str) -> int:
    """A syscall's returned descriptor, or OSError with its errno when it failed (< 0)."""
    fd = int(ret)
    if fd < 0:
        check(-1, what)
    return fd
