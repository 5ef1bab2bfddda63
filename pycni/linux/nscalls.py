"""Namespaces and process relations: setns, unshare, a pidfd's namespaces, prctl's
parent-death signal and child subreaper.

The pidfd ioctls live here: with ``setns(pidfd, ...)`` (Linux 5.8) they are how a process's
namespaces are reached without turning its pid into a ``/proc`` path that may belong to
another pid namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
from collections.abc import Mapping
from typing import Final

from pycni.linux._libc import check, libc

__all__ = [
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "pidfd_namespace",
    "set_child_subreaper",
    "set_parent_death_signal",
    "setns",
    "unshare",
]

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWNET: Final = 0x40000000

# <linux/pidfd.h>: _IO(PIDFS_IOCTL_MAGIC 0xFF, n) -> an fd of that namespace (Linux >= 6.11).
_PIDFD_GET_NAMESPACE: Final[Mapping[str, int]] = {
    "cgroup": 0xFF01,
    "ipc": 0xFF02,
    "mnt": 0xFF03,
    "net": 0xFF04,
    "pid": 0xFF05,
    "pid_for_children": 0xFF06,
    "time": 0xFF07,
    "time_for_children": 0xFF08,
    "user": 0xFF09,
    "uts": 0xFF0A,
}
_PR_SET_CHILD_SUBREAPER: Final = 36
_PR_SET_PDEATHSIG: Final = 1


def setns(fd: int, nstype: int = 0) -> None:
    """Move the calling thread into the namespace behind ``fd``."""
    check(libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    check(libc.unshare(flags), "unshare")


def pidfd_namespace(pidfd: int, kind: str) -> int:
    """An fd of the ``kind`` namespace (``net``, ``mnt``, ...) of the process behind ``pidfd``;
    OSError (ESRCH) once that process has exited. The caller closes it."""
    return int(fcntl.ioctl(pidfd, _PIDFD_GET_NAMESPACE[kind]))


def set_child_subreaper() -> None:
    """Orphaned descendants are re-parented to the caller (a runtime waits on its containers)."""
    check(libc.prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0), "prctl")


def set_parent_death_signal(signum: int) -> None:
    """``signum`` is sent to the caller when the thread that forked it exits."""
    check(libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0), "prctl")
