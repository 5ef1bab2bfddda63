"""cgroups behind one facade: v2 where the unified hierarchy is mounted at the root, else v1.

This VM is hybrid (``/sys/fs/cgroup`` is a tmpfs of v1 hierarchies, v2 at ``unified`` with
only hugetlb), which runc, crun and youki all treat as v1. A container gets one directory per
controller (v1: memory, cpu, pids, and devices where mounted, for the device allowlist) or one
directory (v2); a relative parent is placed under the runtime's own cgroup on v1 (so the
caller's accounting still covers its containers) and under the root on v2 (a v2 cgroup
holding processes cannot enable controllers for children).

Every write goes through ``os.open``/``os.write``/``os.close`` so the kernel's error surfaces
(a buffered ``open().write()`` loses it at garbage collection).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from pycni_run.devices import DeviceRule
from pycni_run.errors import RunError
from pycni_run.spec import CPU_PERIOD_US, Limits

__all__ = [
    "CGROUP_ROOT",
    "Cgroup",
    "adopt",
    "create",
    "detect_version",
    "enter",
    "kill_all",
    "place",
    "procs",
    "read_limits",
    "remove",
    "set_reference",
]

CGROUP_ROOT: Final = "/sys/fs/cgroup"
V1_CONTROLLERS: Final = ("memory", "cpu", "pids")
# Used where mounted: the device allowlist (``devices``). cgroup v2 has no device files; it
# would need an eBPF program (BPF_CGROUP_DEVICE), which this runtime does not attach.
V1_OPTIONAL_CONTROLLERS: Final = ("devices",)
V2_CONTROLLERS: Final = ("memory", "cpu", "pids")
_MKDIR_TRIES: Final = 3


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


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def detect_version(root: str = CGROUP_ROOT, mounts: str = "/proc/self/mounts") -> int:
    """2 when ``root`` itself is cgroup2 (unified); 1 for legacy and hybrid hosts."""
    with open(mounts) as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[1] == root and fields[2] == "cgroup2":
                return 2
    return 1


# The runtime daemon's worker runs a caller's command from the daemon's own cgroups: it sets
# the caller's /proc/PID/cgroup text here, so containers land where the caller's would.
_reference: list[str] = []


def set_reference(proc_cgroup_text: str) -> None:
    """Place relative cgroups under the cgroups described by this /proc/PID/cgroup text."""
    _reference[:] = [proc_cgroup_text]


def _own_cgroup(controller: str, proc_cgroup: str = "/proc/self/cgroup") -> str:
    """The caller's cgroup path in ``controller``'s hierarchy ("" = v2's ``0::`` line)."""
    if _reference:
        lines = _reference[0].splitlines()
    else:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if (controller == "" and ctrls == "") or controller in ctrls.split(","):
            return path
    return "/"


def _layout(hierarchy: str, own: str, parent: str, name: str) -> tuple[str, tuple[str, ...]]:
    """The container's directory and the parent directories we may create, innermost first.

    An absolute ``parent`` starts at the hierarchy's root, a relative one at ``own``.
    """
    own_parts = [] if parent.startswith("/") else [p for p in own.split("/") if p]
    base = own_parts + [p for p in parent.split("/") if p]
    made = [os.path.join(hierarchy, *base[:i]) for i in range(len(own_parts) + 1, len(base) + 1)]
    return os.path.join(hierarchy, *base, name), tuple(reversed(made))


class _Backend(Protocol):
    version: int

    def place(self, root: str, parent: str, name: str) -> Cgroup: ...
    def apply(self, cg: Cgroup, limits: Limits) -> None: ...
    def limits(self, cg: Cgroup) -> dict[str, str]: ...


class _V1:
    version = 1

    def place(self, root: str, parent: str, name: str) -> Cgroup:
        paths: dict[str, str] = {}
        parents: list[str] = []
        optional = [c for c in V1_OPTIONAL_CONTROLLERS if os.path.isdir(os.path.join(root, c))]
        for ctrl in (*V1_CONTROLLERS, *optional):
            hierarchy = os.path.join(root, ctrl)
            if not os.path.isdir(hierarchy):
                raise RunError(f"cgroup v1 controller {ctrl} is not mounted at {hierarchy}")
            own = "/" if parent.startswith("/") else _own_cgroup(ctrl)
            paths[ctrl], above = _layout(hierarchy, own, parent, name)
            parents.extend(above)
        return Cgroup(version=1, paths=paths, parents=tuple(parents))

    def apply(self, cg: Cgroup, limits: Limits) -> None:
        if limits.memory is not None:
            mem = cg.paths["memory"]
            write_file(os.path.join(mem, "memory.limit_in_bytes"), str(limits.memory))
            memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):  # no swap beyond the limit: over-allocation is killed
                write_file(memsw, str(limits.memory))
        if limits.cpu_quota_us is not None:
            cpu = cg.paths["cpu"]
            write_file(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            write_file(os.path.join(cpu, "cpu.cfs_quota_us"), str(limits.cpu_quota_us))
        if limits.pids is not None:
            write_file(os.path.join(cg.paths["pids"], "pids.max"), str(limits.pids))
        if limits.devices is not None and "devices" in cg.paths:
            _write_device_rules(cg.paths["devices"], limits.devices)

    def limits(self, cg: Cgroup) -> dict[str, str]:
        files = {
            "memory": ("memory", "memory.limit_in_bytes"),
            "cpu_quota_us": ("cpu", "cpu.cfs_quota_us"),
            "cpu_period_us": ("cpu", "cpu.cfs_period_us"),
            "pids": ("pids", "pids.max"),
            "devices": ("devices", "devices.list"),
        }
        return _read_files(cg, files)


def _write_device_rules(path: str, rules: Sequence[DeviceRule]) -> None:
    """In order, as runc does: a leading "deny a" empties the list, each allow adds one."""
    for rule in rules:
        name = "devices.allow" if rule.allow else "devices.deny"
        write_file(os.path.join(path, name), rule.line())


class _V2:
    """No device rules: cgroup v2 has no devices files (``limits.devices`` is not applied)."""

    version = 2

    def place(self, root: str, parent: str, name: str) -> Cgroup:
        path, parents = _layout(root, "/", "/" + parent.lstrip("/"), name)
        return Cgroup(version=2, paths={"unified": path}, parents=parents)

    def apply(self, cg: Cgroup, limits: Limits) -> None:
        path = cg.paths["unified"]
        if limits.memory is not None:
            write_file(os.path.join(path, "memory.max"), str(limits.memory))
            with contextlib.suppress(RunError):  # absent without swap accounting
                write_file(os.path.join(path, "memory.swap.max"), "0")
        if limits.cpu_quota_us is not None:
            write_file(os.path.join(path, "cpu.max"), f"{limits.cpu_quota_us} {CPU_PERIOD_US}")
        if limits.pids is not None:
            write_file(os.path.join(path, "pids.max"), str(limits.pids))

    def limits(self, cg: Cgroup) -> dict[str, str]:
        files = {
            "memory": ("unified", "memory.max"),
            "cpu": ("unified", "cpu.max"),
            "pids": ("unified", "pids.max"),
        }
        return _read_files(cg, files)


def _read_files(cg: Cgroup, files: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, (ctrl, filename) in files.items():
        with contextlib.suppress(OSError, KeyError):
            found[key] = _read(os.path.join(cg.paths[ctrl], filename))
    return found


def _backend(version: int) -> _Backend:
    return _V2() if version == 2 else _V1()


def _enable_v2_controllers(root: str, cg: Cgroup) -> None:
    """Each directory from the root down to the container's parent delegates the controllers."""
    available = set(_read(os.path.join(root, "cgroup.controllers")).split())
    missing = [c for c in V2_CONTROLLERS if c not in available]
    if missing:
        raise RunError(f"cgroup v2 controllers {missing} are not available at {root}")
    path = cg.paths["unified"]
    chain = [root, *reversed(cg.parents)]
    for directory in chain:
        if os.path.commonpath([directory, path]) == directory and directory != path:
            write_file(
                os.path.join(directory, "cgroup.subtree_control"),
                " ".join(f"+{c}" for c in V2_CONTROLLERS),
            )


def create(name: str, limits: Limits, *, parent: str, root: str = CGROUP_ROOT) -> Cgroup:
    """Make the container's cgroup directories and write its limits; undone on failure."""
    backend = _backend(detect_version(root))
    cg = backend.place(root, parent, name)
    try:
        for path in cg.paths.values():
            for attempt in range(_MKDIR_TRIES):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if backend.version == 2:
                    _enable_v2_controllers(root, cg)
                try:
                    os.mkdir(path)
                    break
                except FileNotFoundError:  # a removal took the (empty) parent away meanwhile
                    if attempt == _MKDIR_TRIES - 1:
                        raise
        backend.apply(cg, limits)
    except OSError as err:
        remove(cg)
        raise RunError(f"cannot create cgroup {name}: {err}") from err
    except BaseException:
        remove(cg)
        raise
    return cg


def place(name: str, *, parent: str, root: str = CGROUP_ROOT) -> Cgroup:
    """Where ``create`` would make the cgroup ``name`` (nothing is made)."""
    return _backend(detect_version(root)).place(root, parent, name)


def _same_directory(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def adopt(
    held: Cgroup, name: str, limits: Limits, *, parent: str, root: str = CGROUP_ROOT
) -> Cgroup | None:
    """``create`` by renaming ``held``'s directories, with whatever tasks they hold, to the
    container's; None (nothing changed) unless every one of them sits in the very directory
    the container's would be made in. v1 only: cgroup2 has no rename."""
    backend = _backend(detect_version(root))
    if backend.version != 1 or held.version != 1:
        return None
    cg = backend.place(root, parent, name)
    if set(cg.paths) != set(held.paths) or not all(
        _same_directory(os.path.dirname(held.paths[c]), os.path.dirname(cg.paths[c]))
        for c in cg.paths
    ):
        return None
    renamed: list[str] = []
    try:
        for ctrl, path in cg.paths.items():
            os.rename(held.paths[ctrl], path)  # EEXIST for a stale directory of that name
            renamed.append(ctrl)
        backend.apply(cg, limits)
    except (OSError, RunError) as err:
        for ctrl in renamed:  # back to the holder, which still owns them
            with contextlib.suppress(OSError):
                os.rename(cg.paths[ctrl], held.paths[ctrl])
        if isinstance(err, RunError):
            raise
        raise RunError(f"cannot create cgroup {name}: {err}") from err
    return cg


def enter(cg: Cgroup, pid: int = 0) -> None:
    """Move ``pid`` (0 = the caller) into every directory of the container's cgroup.

    The caller itself, single-threaded, on v1 (an ``exec``'s helper, a standby init): "0" to
    ``tasks``, its own thread. Moving a whole process (``cgroup.procs``, or any pid but the
    writer's own) write-locks the kernel's global ``cgroup_threadgroup_rwsem``, whose first
    writer after a quiet spell waits for an RCU grace period, holding ``cgroup_mutex``
    meanwhile (every other cgroup mkdir, rename, rmdir and move waits too): 5-9 ms for six
    controllers here. A thread moving itself is exempt (its thread group cannot change under
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
            found.update(int(p) for p in _read(os.path.join(path, "cgroup.procs")).split())
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


def _rmdir(path: str, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return
        except OSError as err:
            # v1 says EBUSY for a cgroup with child cgroups too (a parent shared with another
            # container, or with the daemon's parked standby): no wait empties that.
            if err.errno != errno.EBUSY or time.monotonic() > deadline or _holds_cgroups(path):
                raise
            time.sleep(0.01)  # the last task is still exiting
        else:
            return


def remove(cg: Cgroup) -> None:
    """Kill what is left, remove the directories, then any now-empty parents we made."""
    kill_all(cg)
    for path in cg.paths.values():
        _rmdir(path)
    for parent in cg.parents:  # innermost first
        # EBUSY for a moment after a child's rmdir is retried by _rmdir; a parent that still
        # holds another container's cgroup (and so every outer one) is left at once.
        try:
            _rmdir(parent, timeout=0.5)
        except OSError:
            break


def _holds_cgroups(path: str) -> bool:
    """A cgroup directory with child cgroups. On v1 its rmdir fails with EBUSY, not
    ENOTEMPTY, which ``_rmdir`` would otherwise retry for its whole timeout (the daemon's
    every command and every removal paid 0.5 s per controller while another container ran)."""
    try:
        with os.scandir(path) as entries:
            return any(e.is_dir(follow_symlinks=False) for e in entries)
    except OSError:
        return False


def read_limits(cg: Cgroup) -> dict[str, str]:
    return _backend(cg.version).limits(cg)
