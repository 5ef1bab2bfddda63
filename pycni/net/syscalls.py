"""The one ctypes seam for the Linux syscalls Python 3.11 lacks (setns, unshare, mount, ...).

Everything else in pycni and pycni_run calls these wrappers, never ctypes directly, so there is
one place to read errno handling and one place to fake in tests. The pidfd ioctls live here
too: with ``setns(pidfd, ...)`` (Linux 5.8) they are how a process's namespaces are reached
without turning its pid into a ``/proc`` path that may belong to another pid namespace.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Mapping
from typing import Final

__all__ = [
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
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
    "capget",
    "capset",
    "clear_ambient_capabilities",
    "clone_tree",
    "drop_bounding_capability",
    "fs_magic",
    "has_bounding_capability",
    "idmap_tree",
    "load_seccomp_filter",
    "mount",
    "overlay_tree",
    "pidfd_namespace",
    "pivot_root",
    "raise_ambient_capability",
    "readonly_tree",
    "set_child_subreaper",
    "set_no_new_privs",
    "set_parent_death_signal",
    "setns",
    "umount2",
    "unshare",
]

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWNET: Final = 0x40000000

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

_SYS_PIVOT_ROOT: Final = 155  # x86_64; glibc has no wrapper
# x86_64; glibc 2.36 has no wrappers for the new mount API
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

# statfs f_type of a pidfd on Linux >= 6.9 (pidfs): its inode then names the process.
PIDFS_MAGIC: Final = 0x50494446

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

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int = 0) -> None:
    """Move the calling thread into the namespace behind ``fd``."""
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    def enc(value: str | None) -> bytes | None:
        return value.encode() if value is not None else None

    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def _open_tree(dfd: int, path: str, flags: int) -> int:
    tree = int(_libc.syscall(_SYS_OPEN_TREE, dfd, path.encode(),
                             _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | flags))
    if tree < 0:
        _check(-1, f"open_tree {path}")
    return tree


def clone_tree(path: str, *, recursive: bool = False) -> int:
    """A detached copy of the mount at ``path`` (a bind mount not attached anywhere yet, with
    its submounts if ``recursive``): a descriptor the caller closes or attaches."""
    return _open_tree(_AT_FDCWD, path, _AT_RECURSIVE if recursive else 0)


def attach_tree(tree: int, target: str) -> None:
    """Attach a detached mount (``clone_tree``, ``overlay_tree``) at ``target``."""
    _check(
        _libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, target.encode(),
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
    _check(
        _libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
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
    fsfd = int(_libc.syscall(_SYS_FSOPEN, b"overlay", _FSOPEN_CLOEXEC))
    if fsfd < 0:
        _check(-1, "fsopen overlay")
    try:
        settings: list[tuple[int, bytes, bytes | None, int]] = [
            (_FSCONFIG_SET_FD, b"lowerdir+", None, fd) for fd in lower
        ]
        settings += [(_FSCONFIG_SET_STRING, b"upperdir", upper.encode(), 0),
                     (_FSCONFIG_SET_STRING, b"workdir", work.encode(), 0),
                     (_FSCONFIG_CMD_CREATE, b"", None, 0)]
        for command, key, value, aux in settings:
            if _libc.syscall(_SYS_FSCONFIG, fsfd, command, key or None, value, aux) != 0:
                err = ctypes.get_errno()
                said = _fs_context_message(fsfd)
                raise OSError(err, f"overlay {key.decode() or 'create'}: {os.strerror(err)}"
                              + (f" ({said})" if said else ""))
        tree = int(_libc.syscall(_SYS_FSMOUNT, fsfd, _FSMOUNT_CLOEXEC, 0))
        if tree < 0:
            _check(-1, "fsmount overlay")
        return tree
    finally:
        os.close(fsfd)


def fs_magic(fd: int) -> int:
    """``fstatfs(fd).f_type``: which filesystem the descriptor's file is on."""
    buf = ctypes.create_string_buffer(128)  # struct statfs is 120 bytes on x86_64
    _check(_libc.fstatfs(fd, buf), "fstatfs")
    return int.from_bytes(buf.raw[:8], "little", signed=True)


def pidfd_namespace(pidfd: int, kind: str) -> int:
    """An fd of the ``kind`` namespace (``net``, ``mnt``, ...) of the process behind ``pidfd``;
    OSError (ESRCH) once that process has exited. The caller closes it."""
    return int(fcntl.ioctl(pidfd, _PIDFD_GET_NAMESPACE[kind]))


def set_child_subreaper() -> None:
    """Orphaned descendants are re-parented to the caller (a runtime waits on its containers)."""
    _check(_libc.prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0), "prctl")


def set_parent_death_signal(signum: int) -> None:
    """``signum`` is sent to the caller when the thread that forked it exits."""
    _check(_libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0), "prctl")


# ---------------------------------------------------------------------- privileges (pycni_run)

_PR_CAPBSET_READ: Final = 23
_PR_CAPBSET_DROP: Final = 24
_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_RAISE: Final = 2
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
_CAP_VERSION_3: Final = 0x20080522  # 64-bit sets, as two 32-bit halves
_SYS_SECCOMP: Final = 317  # x86_64
_SECCOMP_SET_MODE_FILTER: Final = 1
_BPF_INSN_SIZE: Final = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _prctl(option: int, arg: int = 0, arg3: int = 0) -> int:
    ret = int(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), 0, 0))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return ret


def capget() -> tuple[int, int, int]:
    """The calling thread's (effective, permitted, inheritable) capability sets."""
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
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
    _check(_libc.capset(ctypes.byref(header), data), "capset")


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


def load_seccomp_filter(program: bytes) -> None:
    """Install a classic BPF seccomp filter (``struct sock_filter`` array) on the caller.

    Without no_new_privs the caller needs CAP_SYS_ADMIN, as with libseccomp's own load."""
    if not program or len(program) % _BPF_INSN_SIZE:
        raise ValueError(f"a BPF program is whole 8-byte instructions, not {len(program)} bytes")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // _BPF_INSN_SIZE, ctypes.cast(buf, ctypes.c_void_p))
    ret = _libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog))
    _check(ret, "seccomp")
