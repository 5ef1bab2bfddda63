"""Which namespaces a container gets, and joining a running container's namespaces (exec).

A container always gets new mnt, uts, ipc, pid and cgroup namespaces; the network namespace
is new for bridge and none, the caller's for host, and another container's for
container:NAME (youki's ``unshare_or_setns``). ``exec`` opens every ``/proc/PID/ns/*`` first,
then joins them with mnt last: after joining the mount namespace, ``/proc`` paths would name
the container's view, not the host's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Final

from pycni.net import syscalls
from pycni_run.errors import RunError
from pycni_run.spec import NetMode

__all__ = [
    "CLONE_FLAGS",
    "JOIN_ORDER",
    "join",
    "ns_links",
    "open_namespaces",
    "unshare_flags",
]

CLONE_FLAGS: Final[Mapping[str, int]] = {
    "ipc": syscalls.CLONE_NEWIPC,
    "uts": syscalls.CLONE_NEWUTS,
    "net": syscalls.CLONE_NEWNET,
    "pid": syscalls.CLONE_NEWPID,
    "cgroup": syscalls.CLONE_NEWCGROUP,
    "mnt": syscalls.CLONE_NEWNS,
}
# nsenter's and youki's order; mnt last (see the module docstring).
JOIN_ORDER: Final = ("cgroup", "ipc", "uts", "net", "pid", "mnt")
SHOWN: Final = ("cgroup", "ipc", "mnt", "net", "pid", "uts", "user", "time")


def unshare_flags(net: NetMode) -> int:
    """The flags for one ``unshare`` call: everything but net unless the mode makes a new one."""
    flags = 0
    for kind, flag in CLONE_FLAGS.items():
        if kind != "net" or net.new_netns:
            flags |= flag
    return flags


def ns_links(pid: int) -> dict[str, str]:
    """``/proc/PID/ns/*`` link targets (``net:[4026532181]``) for the namespaces we show."""
    links: dict[str, str] = {}
    for kind in SHOWN:
        with contextlib.suppress(OSError):
            links[kind] = os.readlink(f"/proc/{pid}/ns/{kind}")
    return links


@contextlib.contextmanager
def open_namespaces(pid: int) -> Iterator[dict[str, int]]:
    """Open every namespace of ``pid`` we join, before joining any of them."""
    fds: dict[str, int] = {}
    try:
        for kind in JOIN_ORDER:
            try:
                fds[kind] = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as err:
                raise RunError(f"cannot open /proc/{pid}/ns/{kind}: {err.strerror}") from err
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def join(fds: Mapping[str, int]) -> None:
    """setns into each namespace in ``JOIN_ORDER``; the caller must be single-threaded."""
    for kind in JOIN_ORDER:
        if kind in fds:
            syscalls.setns(fds[kind], CLONE_FLAGS[kind])
