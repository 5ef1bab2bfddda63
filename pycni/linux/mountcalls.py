"""Mounts: mount, umount2, pivot_root, the mount-tree API (open_tree, move_mount,
mount_setattr, fsopen/fsconfig/fsmount: detached, idmapped and overlay trees) and fstatfs.

The runtime builds a container's root with these; pinning a network namespace (a bind mount
of its nsfs file) is the only use outside it. glibc 2.36 has no wrappers for the new mount
API: raw syscalls (x86_64 numbers).
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

from pycni.linux._libc import check, libc, new_fd

__all__ = [
    "MNT_DETACH",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "MS_SHARED",
    "MS_SLAVE",
    "PIDFS_MAGIC",
    "attach_tree",
    "bind_mount_fd",
    "clone_tree",
    "fs_magic",
    "idmap_tree",
    "mount",
    "overlay_tree",
    "pivot_root",
    "readonly_tree",
    "umount2",
]

MS_RDONLY: Final = 1
MS_NOSUID: Final = 2
MS_NODEV: Final = 4
MS_NOEXEC: Final = 8
MS_REMOUNT: Final = 32
MS_BIND: Final = 4096
MS_REC: Final = 16384
MS_PRIVATE: Final = 1 << 18
MS_SLAVE: Final = 1 << 19
MS_SHARED: Final = 1 << 20
MNT_DETACH: Final = 2

# statfs f_type of a pidfd on Linux >= 6.9 (pidfs): its inode then names the process.
PIDFS_MAGIC: Final = 0x50494446

_SYS_PIVOT_ROOT: Final = 155  # x86_64; glibc has no wrapper
_SYS_OPEN_TREE: Final = 428
_SYS_MOVE_MOUNT: Final = 429
_SYS_FSOPEN: Final = 430
_SYS_FSCONFIG: Final = 431
_SYS_FSMOUNT: Final = 432
_SYS_MOUNT_SETATTR: Final = 442
_OPEN_TREE_CLONE: Final = 1
_OPEN_TREE_CLOEXEC: Final = os.O_CLOEXEC
_AT_EMPTY_PATH: Final = 0x1000
_AT_RECURSIVE: Final = 0x8000
_AT_FDCWD: Final = -100
_MOVE_MOUNT_F_EMPTY_PATH: Final = 0x4
_FSOPEN_CLOEXEC: Final = 1
_FSMOUNT_CLOEXEC: Final = 1
_FSCONFIG_SET_STRING: Final = 1
_FSCONFIG_SET_FD: Final = 5
_FSCONFIG_CMD_CREATE: Final = 6
_MOUNT_ATTR_RDONLY: Final = 0x1
_MOUNT_ATTR_IDMAP: Final = 0x00100000
_MOUNT_ATTR_SIZE_VER0: Final = 32


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    def enc(value: str | None) -> bytes | None:
        return value.encode() if value is not None else None

    check(
        libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def umount2(target: str, flags: int = 0) -> None:
    check(libc.umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    check(libc.syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def _open_tree(dfd: int, path: str, flags: int) -> int:
    return new_fd(libc.syscall(_SYS_OPEN_TREE, dfd, path.encode(),
                               _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | flags),
                  f"open_tree {path}")


def clone_tree(path: str, *, recursive: bool = False) -> int:
    """A detached copy of the mount at ``path`` (a bind mount not attached anywhere yet, with
    its submounts if ``recursive``): a descriptor the caller closes or attaches."""
    return _open_tree(_AT_FDCWD, path, _AT_RECURSIVE if recursive else 0)


def attach_tree(tree: int, target: str) -> None:
    """Attach a detached mount (``clone_tree``, ``overlay_tree``) at ``target``."""
    check(
        libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, target.encode(),
                     _MOVE_MOUNT_F_EMPTY_PATH),
        f"move_mount {target}",
    )


def bind_mount_fd(fd: int, target: str) -> None:
    """Bind-mount what ``fd`` is (a namespace file, say) on ``target``: ``open_tree`` clones
    it as a detached mount and ``move_mount`` attaches that; no path names the source."""
    tree = _open_tree(fd, "", _AT_EMPTY_PATH)
    try:
        attach_tree(tree, target)
    finally:
        os.close(tree)


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def _mount_setattr(tree: int, attr: _MountAttr, what: str) -> None:
    check(
        libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                     _MOUNT_ATTR_SIZE_VER0),
        f"mount_setattr ({what})",
    )


def idmap_tree(tree: int, userns_fd: int) -> None:
    """Make a detached mount idmapped (Linux >= 5.12) by the mappings of the user namespace
    behind ``userns_fd``: a file whose on-disk owner is N reads as owned by the host id that
    N maps to (0 -> 100000 for ``0 100000 65536``), and the reverse when one is written."""
    _mount_setattr(tree, _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns_fd), "idmap")


def readonly_tree(tree: int) -> None:
    """Make the top mount of a detached tree read-only (its submounts keep their flags)."""
    _mount_setattr(tree, _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0), "read-only")


def _fs_context_message(fsfd: int) -> str:
    """The kernel's own words on a failed ``fsconfig`` (the fs context's log), if any."""
    try:
        return os.read(fsfd, 512).decode(errors="replace").strip()
    except OSError:
        return ""


def overlay_tree(lower: list[int], *, upper: str, work: str) -> int:
    """A detached overlay mount (``fsopen``/``fsconfig``/``fsmount``) whose lower layers are
    the mounts behind the ``lower`` descriptors, top first (``lowerdir+`` by descriptor,
    Linux >= 6.13): idmapped layers need no path. The caller closes or attaches it."""
    fsfd = new_fd(libc.syscall(_SYS_FSOPEN, b"overlay", _FSOPEN_CLOEXEC), "fsopen overlay")
    try:
        settings: list[tuple[int, bytes, bytes | None, int]] = [
            (_FSCONFIG_SET_FD, b"lowerdir+", None, fd) for fd in lower
        ]
        settings += [(_FSCONFIG_SET_STRING, b"upperdir", upper.encode(), 0),
                     (_FSCONFIG_SET_STRING, b"workdir", work.encode(), 0),
                     (_FSCONFIG_CMD_CREATE, b"", None, 0)]
        for command, key, value, aux in settings:
            if libc.syscall(_SYS_FSCONFIG, fsfd, command, key or None, value, aux) != 0:
                err = ctypes.get_errno()
                said = _fs_context_message(fsfd)
                raise OSError(err, f"overlay {key.decode() or 'create'}: {os.strerror(err)}"
                              + (f" ({said})" if said else ""))
        return new_fd(libc.syscall(_SYS_FSMOUNT, fsfd, _FSMOUNT_CLOEXEC, 0), "fsmount overlay")
    finally:
        os.close(fsfd)


def fs_magic(fd: int) -> int:
    """``fstatfs(fd).f_type``: which filesystem the descriptor's file is on."""
    buf = ctypes.create_string_buffer(128)  # struct statfs is 120 bytes on x86_64
    check(libc.fstatfs(fd, buf), "fstatfs")
    return int.from_bytes(buf.raw[:8], "little", signed=True)
