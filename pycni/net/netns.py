"""Network namespaces: open, enter (as a context manager), create, pin and remove.

Netlink sockets stay bound to the namespace they were opened in, so the pattern everywhere is:
enter the namespace, open the socket, leave. Nothing here ever creates a namespace implicitly:
a DEL for a vanished container must not conjure a new one.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode, NetNSNotFound
from pycni.net import syscalls

__all__ = [
    "NETNS_RUN_DIR",
    "create",
    "enter",
    "enter_fd",
    "exists",
    "is_current",
    "open_netns",
    "pin",
    "remove",
    "same",
]

NETNS_RUN_DIR: Final = "/run/netns"

# statfs f_type of a namespace file: nsfs (pinned bind mounts) or proc (/proc/PID/ns/net).
_NSFS_MAGIC: Final = 0x6E736673
_PROC_MAGIC: Final = 0x9FA0


def _fs_magic(fd: int) -> int:
    import ctypes

    buf = ctypes.create_string_buffer(128)  # struct statfs is 120 bytes on x86_64
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fstatfs(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int.from_bytes(buf.raw[:8], "little", signed=True)


def open_netns(path: str) -> int:
    """Open a namespace file read-only; ``NetNSNotFound`` if it is missing or not a netns."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise NetNSNotFound(path, err.strerror or "") from err
    try:
        if _fs_magic(fd) not in (_NSFS_MAGIC, _PROC_MAGIC):
            raise NetNSNotFound(path, "not a namespace file (is it still bind-mounted?)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def exists(path: str) -> bool:
    try:
        os.close(open_netns(path))
    except NetNSNotFound:
        return False
    return True


def same(path_a: str, path_b: str) -> bool:
    """True if both paths name the same namespace (device and inode equality)."""
    a, b = os.stat(path_a), os.stat(path_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def is_current(path: str) -> bool:
    """True if ``path`` is the network namespace the calling thread is in."""
    return same(path, "/proc/thread-self/ns/net")


@contextlib.contextmanager
def enter(path: str) -> Iterator[None]:
    """Run the body inside the network namespace at ``path``; always come back."""
    target = open_netns(path)
    try:
        with enter_fd(target, what=path):
            yield
    finally:
        os.close(target)


@contextlib.contextmanager
def enter_fd(target: int, *, what: str = "") -> Iterator[None]:
    """Run the body inside the network namespace ``target`` (an open fd); always come back."""
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            syscalls.setns(target, syscalls.CLONE_NEWNET)
        except OSError as err:
            raise CNIError(ErrorCode.INVALID_NETNS, f"cannot enter netns {what or target}",
                           str(err)) from err
        try:
            yield
        finally:
            syscalls.setns(origin, syscalls.CLONE_NEWNET)
    finally:
        os.close(origin)


def pin(source: str, target: str) -> None:
    """Bind-mount a namespace file (e.g. ``/proc/PID/ns/net``) at ``target`` to keep it alive."""
    os.makedirs(os.path.dirname(target) or ".", mode=0o755, exist_ok=True)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    try:
        syscalls.mount(source, target, None, syscalls.MS_BIND)
    except BaseException:
        os.unlink(target)
        raise


def create(target: str) -> str:
    """Create a new network namespace pinned at ``target`` (like ``ip netns add``)."""
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.unshare(syscalls.CLONE_NEWNET)
        try:
            pin("/proc/thread-self/ns/net", target)
        finally:
            syscalls.setns(origin, syscalls.CLONE_NEWNET)
    finally:
        os.close(origin)
    return target


def remove(target: str) -> None:
    """Unpin and delete a namespace file; a missing one is already removed."""
    try:
        syscalls.umount2(target, syscalls.MNT_DETACH)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
