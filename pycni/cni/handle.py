"""A network namespace as a handle: the descriptor opened once where the path enters the program.

``skel`` opens ``CNI_NETNS`` into a ``NetNS`` before the verb runs and closes it after; every
layer under the plugin (``open_ipr``, veth creation, sysctls, firewall steps) acts on its
descriptor, so one ADD resolves the path once, and a path re-pointed meanwhile (a pin removed,
a pid recycled behind ``/proc/PID/ns/net``) cannot switch the namespace halfway. The path stays
beside the descriptor for what the protocol reports (``sandbox``) and for messages.

Protocol-side and pure: nothing here imports ``pycni.net``.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from typing import Final

from pycni.cni.errors import NetNSNotFound

__all__ = ["NetNS", "open_netns_handle"]

_NS_GET_NSTYPE: Final = 0xB703  # <linux/nsfs.h> _IO(0xb7, 0x3): the CLONE_NEW* of an nsfs file
_CLONE_NEWNET: Final = 0x40000000


@dataclass(frozen=True, slots=True)
class NetNS:
    """An open network namespace (``fd``) and the path it was opened from (``path``).

    Whoever opened it closes it (``close``); code handed one only uses it."""

    fd: int
    path: str

    def __str__(self) -> str:
        return self.path

    def close(self) -> None:
        os.close(self.fd)


def open_netns_handle(path: str) -> NetNS:
    """Open ``path`` read-only; ``NetNSNotFound`` unless it is a network namespace file (a
    pinned bind mount or a ``/proc/PID/ns/net``): an unmounted pin is an empty file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, ValueError) as err:  # ValueError: an embedded NUL
        raise NetNSNotFound(path, getattr(err, "strerror", None) or str(err)) from err
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        kind = -1  # ENOTTY: not a namespace file at all
    if kind != _CLONE_NEWNET:
        os.close(fd)
        raise NetNSNotFound(path, "not a network namespace file (is it still bind-mounted?)")
    return NetNS(fd=fd, path=path)
