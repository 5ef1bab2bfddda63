"""cgroupfs itself, under ``cgroups``' facade: its files read and written with the kernel's
error, a container's cgroup (``Cgroup``: its directories) and the processes in it (one moved
in, all listed, all killed).

Every write goes through ``os.open``/``os.write``/``os.close`` so the kernel's error surfaces
(a buffered ``open().write()`` loses it at garbage collection).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from pycni_run.errors import RunError

__all__ = ["Cgroup", "enter", "kill_all", "procs", "read_file", "write_file"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Cgroup:
    version: int
    paths: Mapping[str, str] = field(default_factory=dict)  # controller (v2: "unified") -> dir
    parents: tuple[str, ...] = ()  # directories we may have created above, innermost first

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "paths": dict(self.paths), "parents": list(self.parents)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> Cgroup:
        paths = doc.get("paths", {})
        parents = doc.get("parents", [])
        return cls(
            version=int(str(doc.get("version", 1))),
            paths=dict(paths) if isinstance(paths, dict) else {},
            parents=tuple(parents) if isinstance(parents, list) else (),
        )


def write_file(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as err:
        raise RunError(f"cannot write {value!r} to {path}: {err.strerror}") from err


def read_file(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def enter(cg: Cgroup, pid: int = 0) -> None:
    """Move ``pid`` (0 = the caller) into every directory of the container's cgroup.

    The caller itself, single-threaded, on v1 (an ``exec``'s helper, a standby init): "0" to
    ``tasks``, its own thread. Moving a whole process (``cgroup.procs``, or any pid but the
    writer's own) write-locks the kernel's global ``cgroup_threadgroup_rwsem``, whose first
    writer after a quiet spell waits for an RCU grace period, holding ``cgroup_mutex``
    meanwhile (every other cgroup mkdir, rename, rmdir and move waits too): 5-9 ms for six
    hierarchies here. A thread moving itself is exempt (its thread group cannot change under
    it): ~1 ms. That is the whole process only if it has no other thread, hence the check;
    a kernel without the exemption takes the lock, as before."""
    if pid == 0 and cg.version == 1 and _single_threaded():
        for path in cg.paths.values():
            write_file(os.path.join(path, "tasks"), "0")
        return
    for path in cg.paths.values():
        write_file(os.path.join(path, "cgroup.procs"), str(pid or os.getpid()))


def _single_threaded() -> bool:
    """Whether the calling process has one thread (no /proc: assume not)."""
    try:
        return len(os.listdir("/proc/thread-self/..")) == 1  # /proc/PID/task
    except OSError:
        return False


def procs(cg: Cgroup) -> list[int]:
    """Every pid in the container's cgroup; none in a cgroup that is gone or going (a
    detached container's monitor may be removing it at the same moment: its files then
    answer ENODEV before the directory disappears)."""
    found: set[int] = set()
    for path in cg.paths.values():
        try:
            found.update(int(p) for p in read_file(os.path.join(path, "cgroup.procs")).split())
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENODEV):
                raise
    return sorted(found)


def _kill_listed(pids: list[int], cg: Cgroup) -> None:
    """SIGKILL each of ``pids`` through a pidfd, if it is still listed in the cgroup once that
    pidfd is open: a listed process that exited and whose pid went to a process outside the
    cgroup before the pidfd was opened is not listed any more, and is never signalled."""
    held: dict[int, int] = {}
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                held[pid] = os.pidfd_open(pid)
        still = set(procs(cg))
        for pid, pidfd in held.items():
            if pid in still:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        for pidfd in held.values():
            os.close(pidfd)


def kill_all(cg: Cgroup, timeout: float = 5.0) -> None:
    """SIGKILL everything in the cgroup until it is empty (v1 has no cgroup.kill)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = procs(cg)
        if not pids:
            return
        kill_file = os.path.join(next(iter(cg.paths.values())), "cgroup.kill")
        if cg.version == 2 and os.path.exists(kill_file):
            write_file(kill_file, "1")
        _kill_listed(pids, cg)
        time.sleep(0.01)
    raise RunError(f"processes {procs(cg)} survived SIGKILL in {dict(cg.paths)}")
