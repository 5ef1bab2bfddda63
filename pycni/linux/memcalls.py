"""Prefaulting memory: ``madvise(MADV_POPULATE_WRITE)`` (a warm spare copies its pages before
a call instead of on each first write during it)."""

from __future__ import annotations

import ctypes
import errno
from typing import Final

from pycni.linux._libc import libc

__all__ = ["populate_write"]

_MADV_POPULATE_WRITE: Final = 23  # Linux 5.14+; older kernels say EINVAL
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.madvise.restype = ctypes.c_int


def populate_write(start: int, size: int) -> bool:
    """Fault in ``size`` bytes at ``start`` writable (copying private pages now). Best effort:
    False only when the kernel has no MADV_POPULATE_WRITE (nothing will be populated then)."""
    failed = libc.madvise(start, size, _MADV_POPULATE_WRITE) != 0
    return not (failed and ctypes.get_errno() == errno.EINVAL)
