"""Capability sets (capget/capset), the bounding and ambient sets and no_new_privs (prctl):
what the runtime confines a container's process with."""

from __future__ import annotations

import ctypes
import errno
from typing import Final

from pycni.linux._libc import check, libc

__all__ = [
    "capget",
    "capset",
    "clear_ambient_capabilities",
    "drop_bounding_capability",
    "has_bounding_capability",
    "raise_ambient_capability",
    "set_no_new_privs",
]

_PR_CAPBSET_READ: Final = 23
_PR_CAPBSET_DROP: Final = 24
_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_RAISE: Final = 2
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
_CAP_VERSION_3: Final = 0x20080522  # 64-bit sets, as two 32-bit halves


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _prctl(option: int, arg: int = 0, arg3: int = 0) -> int:
    ret = int(libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), 0, 0))
    if ret < 0:  # PR_CAPBSET_READ answers 0 or 1: only a negative return is a failure
        check(ret, f"prctl({option})")
    return ret


def capget() -> tuple[int, int, int]:
    """The calling thread's (effective, permitted, inheritable) capability sets."""
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    check(libc.capget(ctypes.byref(header), data), "capget")
    low, high = data[0], data[1]
    return (
        low.effective | high.effective << 32,
        low.permitted | high.permitted << 32,
        low.inheritable | high.inheritable << 32,
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    for half in (0, 1):
        shift = 32 * half
        data[half].effective = effective >> shift & 0xFFFFFFFF
        data[half].permitted = permitted >> shift & 0xFFFFFFFF
        data[half].inheritable = inheritable >> shift & 0xFFFFFFFF
    check(libc.capset(ctypes.byref(header), data), "capset")


def has_bounding_capability(cap: int) -> bool | None:
    """Whether ``cap`` is in the bounding set; None when the kernel does not know it."""
    try:
        return _prctl(_PR_CAPBSET_READ, cap) == 1
    except OSError as err:
        if err.errno == errno.EINVAL:
            return None
        raise


def drop_bounding_capability(cap: int) -> None:
    _prctl(_PR_CAPBSET_DROP, cap)


def clear_ambient_capabilities() -> None:
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)


def raise_ambient_capability(cap: int) -> None:
    """``cap`` must be in both the permitted and the inheritable set."""
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, cap)


def set_no_new_privs() -> None:
    """execve can no longer grant privileges (setuid bits, file capabilities); irreversible."""
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
