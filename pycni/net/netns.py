"""Network namespaces: open, enter (as a context manager), create, pin and remove.

Netlink sockets stay bound to the namespace they were opened in, so the pattern everywhere is:
enter the namespace, open the socket, leave. Nothing here ever creates a namespace implicitly:
a DEL for a vanished container must not conjure a new one.

A namespace is named by a ``NetNSRef``: a ``NetNS`` handle (what ``skel`` opened from
CNI_NETNS), an open descriptor, or a path. Plugins pass handles, so a path is resolved once per
call; a path here is opened for the duration of the one call (tools and tests).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Final, TypeAlias

from pycni.cni.errors import CNIError, ErrorCode, NetNSNotFound
from pycni.cni.handle import NetNS, open_netns_handle
from pycni.linux import nscalls

__all__ = [
    "NETNS_RUN_DIR",
    "NetNSRef",
    "create",
    "enter",
    "exists",
    "held",
    "is_current",
    "open_netns",
    "pin",
    "pin_fd",
    "remove",
    "same",
]

NETNS_RUN_DIR: Final = "/run/netns"

NetNSRef: TypeAlias = NetNS | int | str


def open_netns(path: str) -> int:
    """Open a namespace file read-only; ``NetNSNotFound`` if it is missing or not a netns."""
    return open_netns_handle(path).fd


@contextlib.contextmanager
def held(target: NetNSRef) -> Iterator[int]:
    """The descriptor of ``target``: a handle's or an fd as they are, a path opened (and
    closed again) for the body."""
    if isinstance(target, NetNS):
        yield target.fd
    elif isinstance(target, int):
        yield target
    else:
        fd = open_netns(target)
        try:
            yield fd
        finally:
            os.close(fd)


def exists(path: str) -> bool:
    try:
        os.close(open_netns(path))
    except NetNSNotFound:
        return False
    return True


def _identity(target: NetNSRef) -> tuple[int, int]:
    if isinstance(target, NetNS):
        st = os.fstat(target.fd)
    elif isinstance(target, int):
        st = os.fstat(target)
    else:
        st = os.stat(target)
    return st.st_dev, st.st_ino


def same(a: NetNSRef, b: NetNSRef) -> bool:
    """True if both name the same namespace (device and inode equality)."""
    return _identity(a) == _identity(b)


def is_current(target: NetNSRef) -> bool:
    """True if ``target`` is the network namespace the calling thread is in."""
    return same(target, "/proc/thread-self/ns/net")


@contextlib.contextmanager
def enter(target: NetNSRef, *, what: str = "") -> Iterator[None]:
    """Run the body inside the network namespace ``target``; always come back."""
    with held(target) as fd:
        origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                nscalls.setns(fd, nscalls.CLONE_NEWNET)
            except OSError as err:
                raise CNIError(ErrorCode.INVALID_NETNS,
                               f"cannot enter netns {what or target}", str(err)) from err
            try:
                yield
            finally:
                nscalls.setns(origin, nscalls.CLONE_NEWNET)
        finally:
            os.close(origin)


def pin_fd(fd: int, target: str) -> None:
    """Bind-mount the namespace behind ``fd`` at ``target`` to keep it alive (``ip netns``
    sees it). From the descriptor itself: no path is resolved to find the namespace."""
    os.makedirs(os.path.dirname(target) or ".", mode=0o755, exist_ok=True)
    made = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(made)
    from pycni.linux import mountcalls  # pinning is the runtime's and the tools', not a plugin's

    try:
        mountcalls.bind_mount_fd(fd, target)
    except BaseException:
        os.unlink(target)
        raise


def pin(source: str, target: str) -> None:
    """``pin_fd`` of the namespace file at ``source``."""
    with held(source) as fd:
        pin_fd(fd, target)


def create(target: str) -> str:
    """Create a new network namespace pinned at ``target`` (like ``ip netns add``)."""
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        nscalls.unshare(nscalls.CLONE_NEWNET)
        try:
            pin("/proc/thread-self/ns/net", target)
        finally:
            nscalls.setns(origin, nscalls.CLONE_NEWNET)
    finally:
        os.close(origin)
    return target


def remove(target: str) -> None:
    """Unpin and delete a namespace file; a missing one is already removed."""
    from pycni.linux import mountcalls

    try:
        mountcalls.umount2(target, mountcalls.MNT_DETACH)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
