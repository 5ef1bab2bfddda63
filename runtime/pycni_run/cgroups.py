"""cgroups behind one facade: v2 where the unified hierarchy is mounted at the root, else v1.

This VM is hybrid (``/sys/fs/cgroup`` is a tmpfs of v1 hierarchies, v2 at ``unified`` with
only hugetlb), which runc, crun and youki all treat as v1. A container gets one directory per
controller (v1: memory, cpu, pids, and devices where mounted, for the device allowlist) or one
directory (v2); a relative parent is placed under the runtime's own cgroup on v1 (so the
caller's accounting still covers its containers) and under the root on v2 (a v2 cgroup
holding processes cannot enable controllers for children). Reading and writing its files,
and the processes in a cgroup (``enter``, ``procs``, ``kill_all``): ``cgroupfs``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from pycni_run.cgroupfs import Cgroup, enter, kill_all, procs, read_file, write_file
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
            found[key] = read_file(os.path.join(cg.paths[ctrl], filename))
    return found


def _backend(version: int) -> _Backend:
    return _V2() if version == 2 else _V1()


def _enable_v2_controllers(root: str, cg: Cgroup) -> None:
    """Each directory from the root down to the container's parent delegates the controllers."""
    available = set(read_file(os.path.join(root, "cgroup.controllers")).split())
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
