"""What a caller may do, read before anything is done for it through a socket.

The fork server and the runtime daemon run with their own privileges; a call they take is
done with those. So a call is taken only from a caller who could have done it itself: one in
the server's own user namespace (capabilities mean something only there), holding at least
the server's capabilities in every set (effective, permitted, bounding, inheritable, ambient),
without ``no_new_privs`` or a seccomp filter the server does not have. Anyone else (a root
process whose capabilities were dropped, ``setpriv --bounding-set=-all``, a systemd unit with
an empty ``CapabilityBoundingSet=``) is refused before the ACK, and the launcher or client
runs the call in-process, where the kernel refuses it exactly as it would have anyway.

The caller is identified by the socket, never by a pid turned into a path: SO_PEERPIDFD
(Linux >= 6.5, ``peer.peer_pidfd``) gives a pidfd of the process that connected. Its
``/proc`` directory is found through that pidfd's fdinfo (the pid as this ``/proc`` numbers
it), must be the pid SO_PEERCRED reports in the server's own pid namespace (so this
``/proc`` is that namespace's), and is opened before the pidfd is checked to be still alive:
the directory read is the caller's own, not a process that took its pid afterwards. Not
compared: LSM labels (AppArmor, SELinux) and resource limits.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from pycni.warmfork.peer import PeerError, peer_pidfd, peer_uid

__all__ = [
    "Caller",
    "Privileges",
    "UnknownCaller",
    "identify",
    "myself",
    "myself_or_none",
    "refusal",
    "refuse_caller",
]

_SETS: Final = (
    ("CapEff", "effective"),
    ("CapPrm", "permitted"),
    ("CapBnd", "bounding"),
    ("CapInh", "inheritable"),
    ("CapAmb", "ambient"),
)

_STATUS_KEYS: Final = (*(key.encode() for key, _ in _SETS), b"NoNewPrivs", b"Seccomp")


class UnknownCaller(Exception):
    """The caller's privileges cannot be read (it is gone, or not visible from here)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Privileges:
    """A process's capability sets (bit masks by ``capabilities(7)`` number) and the rest of
    what bounds it: its user namespace, ``no_new_privs`` and seccomp mode."""

    effective: int
    permitted: int
    bounding: int
    inheritable: int
    ambient: int
    no_new_privs: bool
    seccomp: int  # 0 none, 1 strict, 2 filter
    user_ns: tuple[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    pid: int  # in the server's pid namespace (SO_PEERCRED)
    uid: int
    pid_ns: tuple[int, int]
    privileges: Privileges


def myself() -> Caller:
    """This process, as ``identify`` describes a caller; ``UnknownCaller`` if this ``/proc``
    is not its pid namespace's (then no caller can be read through it either)."""
    pidfd = os.pidfd_open(os.getpid())
    try:
        seen = _pid_in_proc(pidfd)
    finally:
        os.close(pidfd)
    if seen != os.getpid():
        raise UnknownCaller(f"/proc is not this pid namespace's (pid {os.getpid()} is {seen})")
    with _opened_dir("/proc/thread-self") as fd:
        return Caller(pid=os.getpid(), uid=os.geteuid(), pid_ns=_ns_id(fd, "pid"),
                      privileges=_read(fd))


def identify(conn: socket.socket) -> Caller:
    """Who is at the other end of ``conn`` and what it may do; ``UnknownCaller`` if that
    cannot be established from here."""
    pid, uid = peer_uid(conn)
    if pid <= 0:
        raise UnknownCaller("the caller is not in this pid namespace")
    try:
        pidfd = peer_pidfd(conn)
    except PeerError as err:
        raise UnknownCaller(str(err)) from err
    try:
        seen = _pid_in_proc(pidfd)
        if seen != pid:
            raise UnknownCaller(f"/proc is not this pid namespace's (pid {pid} is {seen} there)")
        with _opened_dir(f"/proc/{pid}") as fd:
            if _exited(pidfd):
                raise UnknownCaller(f"pid {pid} exited")
            pid_ns = _ns_id(fd, "pid")
            return Caller(pid=pid, uid=uid, pid_ns=pid_ns, privileges=_read(fd))
    finally:
        os.close(pidfd)


def myself_or_none() -> Caller | None:
    """``myself``, or None when this /proc cannot tell (a server then serves nobody)."""
    try:
        return myself()
    except UnknownCaller:
        return None


def refuse_caller(conn: socket.socket, server: Caller | None, *, same_pid_ns: bool) -> str:
    """Why the caller at the other end of ``conn`` may not be served by ``server`` (root,
    holding every privilege ``server`` has and, if ``same_pid_ns``, in its pid namespace);
    "" if it may. The one peer check of the fork server and the runtime daemon."""
    pid, uid = peer_uid(conn)
    if uid != 0 or pid <= 0:
        return f"pid {pid}: uid {uid} is not root (or not visible)"
    if server is None:
        return f"pid {pid}: the server cannot read its own privileges in this /proc"
    try:
        caller = identify(conn)
    except UnknownCaller as err:
        return f"pid {pid}: {err}"
    if same_pid_ns and caller.pid_ns != server.pid_ns:
        return f"pid {pid}: it is in another pid namespace"
    why = refusal(caller.privileges, server.privileges)
    return f"pid {pid}: {why}" if why else ""


def refusal(caller: Privileges, server: Privileges) -> str:
    """Why a call of ``caller`` would exceed what it may do itself ("" if it would not)."""
    if caller.user_ns != server.user_ns:
        return "it is in another user namespace"
    for _, name in _SETS:
        missing = getattr(server, name) & ~getattr(caller, name)
        if missing:
            return f"its {name} capabilities lack {_names(missing)}"
    if caller.no_new_privs and not server.no_new_privs:
        return "it has no_new_privs set"
    if caller.seccomp and caller.seccomp != server.seccomp:
        return "it runs under a seccomp filter"
    return ""


def _names(mask: int) -> str:
    bits = [bit for bit in range(mask.bit_length()) if mask >> bit & 1]
    shown = ", ".join(_CAP_NAMES.get(bit, f"cap {bit}") for bit in bits[:4])
    return shown + (f" and {len(bits) - 4} more" if len(bits) > 4 else "")


def _pid_in_proc(pidfd: int) -> int:
    """The pid of ``pidfd``'s process as this ``/proc`` numbers it (0: not visible here)."""
    try:
        fields = _fields(_read_file(f"/proc/thread-self/fdinfo/{pidfd}"), (b"Pid",))
        return int(fields[b"Pid"])
    except (OSError, KeyError, ValueError) as err:
        raise UnknownCaller(f"cannot read the caller's pidfd: {err!r}") from err


def _read_file(path: str, dir_fd: int | None = None) -> bytes:
    """A small /proc file in one read (no text layer: this runs on every call)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _fields(text: bytes, keys: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """``Key:\tvalue`` lines of a /proc file, for ``keys`` only."""
    found = {}
    for line in text.split(b"\n"):
        key, _, value = line.partition(b":")
        if key in keys:
            found[key] = value.strip()
    return found


def _exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


@contextlib.contextmanager
def _opened_dir(path: str) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise UnknownCaller(f"cannot open {path}: {err}") from err
    try:
        yield fd
    finally:
        os.close(fd)


def _ns_id(proc_dir: int, name: str) -> tuple[int, int]:
    try:
        st = os.stat(f"ns/{name}", dir_fd=proc_dir)
    except OSError as err:
        raise UnknownCaller(f"cannot read its {name} namespace: {err}") from err
    return st.st_dev, st.st_ino


def _read(proc_dir: int) -> Privileges:
    """Parse ``status`` of the /proc directory ``proc_dir``."""
    try:
        values = _fields(_read_file("status", proc_dir), _STATUS_KEYS)
        return Privileges(
            **{name: int(values[key.encode()], 16) for key, name in _SETS},
            no_new_privs=values[b"NoNewPrivs"] == b"1",
            seccomp=int(values[b"Seccomp"] or 0),
            user_ns=_ns_id(proc_dir, "user"),
        )
    except (OSError, KeyError, ValueError) as err:
        raise UnknownCaller(f"cannot read its status: {err!r}") from err


_CAP_NAMES: Final = dict(enumerate((
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)))
