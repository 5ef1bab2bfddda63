"""Processes as descriptors: the runtime holds a pidfd of what it forked, never a pid path.

A pid names a process in one pid namespace only, and only until it is reaped: turned into a
``/proc/PID`` path it can name another process (a ``/proc`` mounted for another pid namespace,
say an ancestor's; a pid reused). So:

- what the runtime forks it holds by a pidfd opened right after the fork (its child cannot be
  reaped before this process waits for it: the pid is still that child's);
- it reaches a process's namespaces through the pidfd: ``setns(pidfd, flags)`` to join them,
  ``PIDFD_GET_*_NAMESPACE`` for a namespace's descriptor (Linux >= 6.11);
- it records a process as its pid *and* its pidfs inode (``identity``): the inode of a pidfd
  is unique for the boot (Linux >= 6.9), so a later command opening a pidfd for the recorded
  pid and finding another inode knows the pid went to someone else, and joins nothing;
- ``/proc`` is read (and a user namespace's maps written) only through ``read_proc`` and
  ``write_proc``: the pid of the pidfd's process as that very ``/proc`` numbers it (the
  pidfd's fdinfo), and a re-check that the process still runs after the open (so the number
  was still its own, and the open file is that process's).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
from collections.abc import Iterator

from pycni.linux import mountcalls, nscalls
from pycni_run.errors import RunError

__all__ = [
    "exited",
    "identity",
    "namespace",
    "namespace_link",
    "open_verified",
    "proc_is_own",
    "read_proc",
    "write_proc",
]


def identity(pidfd: int) -> int:
    """The pidfs inode of ``pidfd``: names its process for the boot (never reused)."""
    if mountcalls.fs_magic(pidfd) != mountcalls.PIDFS_MAGIC:
        raise RunError("this kernel has no pidfs (Linux >= 6.9): processes cannot be identified")
    return os.fstat(pidfd).st_ino


def exited(pidfd: int) -> bool:
    """True once the process has exited (a zombie included): its pidfd is readable."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def open_verified(pid: int, ino: int) -> int | None:
    """A pidfd of the running process ``pid`` of this pid namespace if its pidfs inode is
    ``ino``; None if it is gone or the pid now belongs to another process."""
    if pid <= 0 or ino <= 0:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # ESRCH: no such process (here)
        return None
    try:
        if identity(pidfd) == ino and not exited(pidfd):
            return pidfd
    except BaseException:
        os.close(pidfd)
        raise
    os.close(pidfd)
    return None


@contextlib.contextmanager
def namespace(pidfd: int, kind: str) -> Iterator[int]:
    """A descriptor of the ``kind`` namespace (``net``, ``mnt``, ...) of the pidfd's process,
    closed after the body; RunError once that process has exited."""
    try:
        fd = nscalls.pidfd_namespace(pidfd, kind)
    except OSError as err:
        if err.errno == errno.ESRCH:
            raise RunError("the container's init has exited") from err
        raise RunError(f"cannot get the {kind} namespace of a process: {err}") from err
    try:
        yield fd
    finally:
        os.close(fd)


def namespace_link(pidfd: int, kind: str) -> str:
    """``net:[4026532181]``: what ``readlink /proc/PID/ns/net`` shows, from the pidfd."""
    with namespace(pidfd, kind) as fd:
        return f"{kind}:[{os.fstat(fd).st_ino}]"


def _proc_pid(pidfd: int) -> int:
    """The pid of the pidfd's process as this ``/proc`` numbers it (its fdinfo says so, in
    the pid namespace of the ``/proc`` it is read from); 0 when that ``/proc`` cannot see it."""
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Pid":
                return max(int(value), 0)  # -1 once it has exited
    raise RunError("this kernel shows no Pid in a pidfd's fdinfo")


def _open_proc(pidfd: int, name: str, flags: int) -> int:
    """``/proc/PID/<name>`` of the pidfd's process opened with ``flags``; the process still
    ran after the open, so the number was its own and the file is that process's."""
    pid = _proc_pid(pidfd)
    if not pid:
        raise RunError(f"the process is gone, or not visible in this /proc (opening {name})")
    try:
        fd = os.open(f"/proc/{pid}/{name}", flags | os.O_CLOEXEC)
    except OSError as err:
        raise RunError(f"cannot open /proc/{pid}/{name}: {err.strerror}") from err
    if exited(pidfd):  # it may have died before the open, and its number gone to another
        os.close(fd)
        raise RunError(f"the process exited while its /proc/{pid}/{name} was opened")
    return fd


def read_proc(pidfd: int, name: str) -> str:
    """``/proc/PID/<name>`` of the pidfd's process, whatever pid namespace ``/proc`` is for."""
    with open(_open_proc(pidfd, name, os.O_RDONLY)) as f:
        return f.read()


def write_proc(pidfd: int, name: str, text: str) -> None:
    """Write ``text`` to ``/proc/PID/<name>`` of the pidfd's process in one write (a
    ``uid_map`` takes exactly one)."""
    fd = _open_proc(pidfd, name, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    except OSError as err:
        raise RunError(f"cannot write {name} of the container's process: {err.strerror}") from err
    finally:
        os.close(fd)


def proc_is_own() -> bool:
    """True if ``/proc`` is this process's own pid namespace's: its NSpid line (our pid in
    each pid namespace from ``/proc``'s down to ours) then holds one pid, ours."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return line.split()[1:] == [str(os.getpid())]
    return False
