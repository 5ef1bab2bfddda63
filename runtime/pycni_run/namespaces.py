"""Which namespaces a container gets, and joining a running container's namespaces (exec).

A container always gets new mnt, uts, ipc, pid and cgroup namespaces; the network namespace
is new for bridge and none, the caller's for host, and another container's for
container:NAME (youki's ``unshare_or_setns``). ``exec`` joins them all at once through a pidfd
of the container's init (``setns(pidfd, flags)``, Linux >= 5.8): no ``/proc/PID/ns/*`` path,
which names another process when ``/proc`` is another pid namespace's or the pid was reused,
and a pidfd whose process has exited joins nothing (ESRCH).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from typing import Final

from pycni.linux import nscalls
from pycni_run import pidfds
from pycni_run.errors import RunError
from pycni_run.spec import NetMode

__all__ = [
    "CLONE_FLAGS",
    "JOIN_ORDER",
    "join",
    "ns_links",
    "unshare_flags",
]

CLONE_FLAGS: Final[Mapping[str, int]] = {
    "ipc": nscalls.CLONE_NEWIPC,
    "uts": nscalls.CLONE_NEWUTS,
    "net": nscalls.CLONE_NEWNET,
    "pid": nscalls.CLONE_NEWPID,
    "cgroup": nscalls.CLONE_NEWCGROUP,
    "mnt": nscalls.CLONE_NEWNS,
}
# What exec joins (nsenter's and youki's set); one setns takes them all, the kernel orders them.
JOIN_ORDER: Final = ("cgroup", "ipc", "uts", "net", "pid", "mnt")
_JOIN_FLAGS: Final = functools.reduce(operator.or_, (CLONE_FLAGS[k] for k in JOIN_ORDER))
SHOWN: Final = ("cgroup", "ipc", "mnt", "net", "pid", "uts", "user", "time")


def unshare_flags(net: NetMode) -> int:
    """The flags for one ``unshare`` call: everything but net unless the mode makes a new one."""
    flags = 0
    for kind, flag in CLONE_FLAGS.items():
        if kind != "net" or net.new_netns:
            flags |= flag
    return flags


def ns_links(pidfd: int) -> dict[str, str]:
    """Namespace links (``net:[4026532181]``, as ``/proc/PID/ns/*`` shows them) of the
    pidfd's process, for the namespaces we show; empty once it has exited."""
    links: dict[str, str] = {}
    for kind in SHOWN:
        try:
            links[kind] = pidfds.namespace_link(pidfd, kind)
        except RunError:
            return {}
    return links


def join(pidfd: int, *, user: bool = False) -> None:
    """setns into every namespace in ``JOIN_ORDER`` of the pidfd's process, at once, and its
    user namespace too if ``user`` (the kernel joins that one first: the others, owned by it,
    are then joined with the capabilities it gives); the caller must be single-threaded (mnt).
    OSError (ESRCH) if that process has exited."""
    nscalls.setns(pidfd, _JOIN_FLAGS | (nscalls.CLONE_NEWUSER if user else 0))
