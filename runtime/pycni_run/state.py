"""Per-container state in ``<state_dir>/containers/<name>/state.json``, written atomically.

Every resource is recorded before or as it is created (cgroup, netns pin, network attachment),
so ``rm -f`` can undo all of it after the runtime that created it was killed. A process is
identified by its pid *and* the pidfs inode of a pidfd of it (``pidfds``), so a recycled pid
is never mistaken for it, and every signal goes through a pidfd checked that way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import select
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from pycni import atomicfile
from pycni_run import pidfds
from pycni_run.errors import RunError

__all__ = [
    "ContainerState",
    "NetAttachment",
    "ProcRef",
    "claim",
    "container_dir",
    "list_states",
    "load",
    "locked",
    "proc_ref",
    "release",
    "save",
]

STATE_FILE: Final = "state.json"


@dataclass(frozen=True, slots=True)
class ProcRef:
    """A process as its pid (in the runtime's pid namespace) and its pidfs inode."""

    pid: int = 0
    ino: int = 0

    @classmethod
    def of(cls, pid: int, pidfd: int) -> ProcRef:
        return cls(pid, pidfds.identity(pidfd))

    def open(self) -> int | None:
        """A pidfd of this very process while it runs; None once it is gone (or the pid is
        another process's now). The caller closes it."""
        return pidfds.open_verified(self.pid, self.ino)

    @contextlib.contextmanager
    def opened(self, what: str) -> Iterator[int]:
        """``open`` for the body; RunError "``what`` is not running" without one."""
        pidfd = self.open()
        if pidfd is None:
            raise RunError(f"{what} is not running")
        try:
            yield pidfd
        finally:
            os.close(pidfd)

    def alive(self) -> bool:
        pidfd = self.open()
        if pidfd is None:
            return False
        os.close(pidfd)
        return True

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if this process still runs; False if it did not."""
        pidfd = self.open()
        if pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return False
        finally:
            os.close(pidfd)
        return True

    def wait_gone(self, timeout: float) -> bool:
        """True once this process has exited (at once if it is not running), False if it
        still runs after ``timeout`` seconds."""
        pidfd = self.open()
        if pidfd is None:
            return True
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            return bool(poller.poll(timeout * 1000))
        finally:
            os.close(pidfd)


def proc_ref(pid: int) -> ProcRef:
    """``pid`` (of this pid namespace) as a ProcRef; only for a process that cannot be reaped
    meanwhile: this process itself, or a child it has not waited for."""
    pidfd = os.pidfd_open(pid)
    try:
        return ProcRef.of(pid, pidfd)
    finally:
        os.close(pidfd)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetAttachment:
    """One CNI network of a container: recorded before its ADD (``result`` None until the ADD
    is done), so a crash in between is undone by the teardown's DEL."""

    network: str
    ifname: str
    default_route: bool = True  # the one attachment that holds the container's default route
    publishes: bool = False  # carries the container's published ports (the run's first network)
    ips: tuple[str, ...] = ()  # requested static addresses
    mac: str = ""
    aliases: tuple[str, ...] = ()
    result: dict[str, Any] | None = None  # the CNI result, in the network's version

    def to_doc(self) -> dict[str, Any]:
        return {"network": self.network, "ifname": self.ifname,
                "default_route": self.default_route, "publishes": self.publishes,
                "ips": list(self.ips), "mac": self.mac, "aliases": list(self.aliases),
                "result": self.result}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> NetAttachment:
        return cls(network=str(doc["network"]), ifname=str(doc["ifname"]),
                   default_route=bool(doc.get("default_route", True)),
                   publishes=bool(doc.get("publishes", False)),
                   ips=tuple(doc.get("ips") or ()), mac=str(doc.get("mac") or ""),
                   aliases=tuple(doc.get("aliases") or ()),
                   result=doc.get("result") if isinstance(doc.get("result"), dict) else None)


def _legacy_attachment(doc: dict[str, Any]) -> list[NetAttachment]:
    """A state written before containers had several networks: one ``network`` on eth0."""
    if not doc.get("network"):
        return []
    result = doc.get("cni_result")
    return [NetAttachment(network=str(doc["network"]), ifname="eth0", publishes=True,
                          result=result if isinstance(result, dict) else None)]


@dataclass(slots=True, kw_only=True)
class ContainerState:
    name: str
    id: str
    image: str
    command: list[str]
    created: float = field(default_factory=time.time)
    status: str = "created"  # created -> running -> exited
    pid: ProcRef = field(default_factory=ProcRef)
    monitor: ProcRef = field(default_factory=ProcRef)
    exit_code: int | None = None
    started: float | None = None
    finished: float | None = None
    error: str = ""
    net_mode: str = "bridge"
    # The CNI networks attached, in the order made (eth0 first); DEL'd in reverse.
    networks: list[NetAttachment] = field(default_factory=list)
    netns_path: str = ""  # our pin under netns_dir; "" when not pinned
    links: list[str] = field(default_factory=list)  # extra `netns link` pins
    ports: list[dict[str, Any]] = field(default_factory=list)
    dns: dict[str, Any] = field(default_factory=dict)  # --dns*, --add-host as given
    hostname: str = ""
    env: list[list[str]] = field(default_factory=list)
    workdir: str = "/"
    cgroup: dict[str, Any] | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    security: dict[str, Any] = field(default_factory=dict)  # security.to_doc: what it got
    userns: dict[str, Any] = field(default_factory=dict)  # idmaps.Mappings.to_doc; {} = host's
    storage: str = ""
    rootfs: dict[str, str] = field(default_factory=dict)
    log_path: str = ""
    auto_remove: bool = False
    detached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types. Not ``dataclasses.asdict``, whose deep copy of every value
        cost ~0.3 ms a save (7 saves a run): the values are only serialised, never kept."""
        doc = {f.name: getattr(self, f.name) for f in _FIELDS}
        for key in ("pid", "monitor"):
            ref = doc[key]
            doc[key] = {"pid": ref.pid, "ino": ref.ino}
        doc["networks"] = [a.to_doc() for a in self.networks]
        # The primary attachment under the keys readers of this file know (`pycni probe`).
        primary = self.primary
        doc["network"] = primary.network if primary else ""
        doc["cni_result"] = primary.result if primary else None
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ContainerState:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        for key in ("pid", "monitor"):
            ref = values.get(key) or {}
            # No "ino" (a state written before pids were pinned by pidfs inode): not running.
            values[key] = ProcRef(int(ref.get("pid", 0)), int(ref.get("ino", 0)))
        if "networks" in doc:
            values["networks"] = [NetAttachment.from_doc(a) for a in doc["networks"] or []]
        else:
            values["networks"] = _legacy_attachment(doc)
        return cls(**values)

    @property
    def primary(self) -> NetAttachment | None:
        """The attachment with the default route, else the first one."""
        return next((a for a in self.networks if a.default_route), None) or \
            next(iter(self.networks), None)

    def attachment(self, network: str) -> NetAttachment | None:
        return next((a for a in self.networks if a.network == network), None)

    @property
    def running(self) -> bool:
        return self.status == "running" and self.pid.alive()

    def live_status(self) -> str:
        """The recorded status, corrected when its runtime died without recording the end."""
        if self.status in ("running", "created") and not self.pid.alive():
            return "dead" if not self.monitor.alive() else self.status
        return self.status


_FIELDS: Final = dataclasses.fields(ContainerState)


def container_dir(containers_dir: str, name: str) -> str:
    return os.path.join(containers_dir, name)


def claim(containers_dir: str, name: str) -> str:
    """Reserve ``name`` (mkdir is the atomic test-and-set); RunError if it is taken."""
    os.makedirs(containers_dir, mode=0o700, exist_ok=True)
    path = container_dir(containers_dir, name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        raise RunError(f"the container name {name!r} is already in use") from None
    return path


def release(containers_dir: str, name: str) -> None:
    shutil.rmtree(container_dir(containers_dir, name), ignore_errors=True)


def save(containers_dir: str, state: ContainerState) -> None:
    # No indent (the C encoder) and no fsync: the state lives in /run, describing processes
    # and mounts that do not outlive the machine; temp + rename keeps it whole for what
    # matters, a runtime killed midway.
    path = os.path.join(container_dir(containers_dir, state.name), STATE_FILE)
    atomicfile.write(path, json.dumps(state.to_dict()).encode())


def load(containers_dir: str, name: str) -> ContainerState:
    path = os.path.join(container_dir(containers_dir, name), STATE_FILE)
    try:
        with open(path) as f:
            return ContainerState.from_dict(json.load(f))
    except FileNotFoundError:
        raise RunError(f"no such container: {name}") from None
    except (OSError, ValueError, TypeError) as err:
        raise RunError(f"unreadable state for {name}: {err}") from err


def list_states(containers_dir: str) -> list[ContainerState]:
    try:
        names = sorted(os.listdir(containers_dir))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        with contextlib.suppress(RunError):
            found.append(load(containers_dir, name))
    return sorted(found, key=lambda s: s.created)


@contextlib.contextmanager
def locked(containers_dir: str, name: str) -> Iterator[None]:
    """Serialize teardown/removal of one container between its monitor, stop and rm."""
    try:
        fd = os.open(container_dir(containers_dir, name), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise RunError(f"no such container: {name}") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
