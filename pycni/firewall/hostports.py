"""Host-port reservation: one owner per (host netns, host address, protocol, port).

The reference portmap lets the last writer win, silently stealing a port from another
container or from a host service (field failure #16). Here a mapping is reserved before any
rule is written, and a collision fails ADD naming the port and its owner.

On disk (tmpfs, like the rules it guards: both vanish at reboot), per host network namespace::

    <root>/ns-<netns cookie>/lock                          flock: check + reserve is atomic
    <root>/ns-<netns cookie>/attachments/<label>.json      what the attachment published
    <root>/ns-<netns cookie>/ports/<proto>-<port>/<name>   one file per reservation, holding
                                                           the owner's label; <name> is any,
                                                           any4, any6 or the host address

Checking one mapping lists one small directory, so reserving costs O(ports of this ADD)
whatever the number of containers. The attachment record is what DEL and GC go by: it lets
DEL remove exactly what was published even when the runtime passes no portMappings.

An owner whose container netns is gone (its path missing, or another namespace now) is
stale: its DEL was never run. Its reservation is reclaimed and returned to the caller, which
removes its rules. A host process listening on the port (``hostsockets``) is a conflict too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from pycni import atomicfile
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.handle import NetNS
from pycni.firewall import hostsockets
from pycni.firewall.hostsockets import Listener
from pycni.firewall.model import AttachmentKey
from pycni.firewall.model.portmap import PortMap, PortMapping
from pycni.lockfile import hold

__all__ = [
    "HOSTPORTS_ROOT",
    "HostPortConflict",
    "Record",
    "Registry",
    "netns_identity",
    "overlaps",
]

HOSTPORTS_ROOT: Final = "/run/pycni/hostports"
_SO_NETNS_COOKIE: Final = 71  # Linux >= 5.14
_FAMILIES: Final = {"any": {4, 6}, "any4": {4}, "any6": {6}}


class HostPortConflict(CNIError):
    """A mapping collides with another attachment's or a host socket (code 7)."""

    def __init__(self, details: str) -> None:
        super().__init__(ErrorCode.INVALID_NETWORK_CONFIG, "host port already in use", details)


def netns_identity(target: str | NetNS) -> str:
    """``dev:inode`` of a namespace file (a path, or a handle already open); empty if it
    cannot be read."""
    try:
        st = os.fstat(target.fd) if isinstance(target, NetNS) else os.stat(target)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def _current_netns_id() -> str:
    """Names the calling thread's netns for this boot: the netns cookie (never reused), else
    its inode (which a later namespace may reuse)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8)
        return f"c{struct.unpack('<Q', raw)[0]}"
    except OSError:
        return "i" + netns_identity("/proc/thread-self/ns/net").replace(":", "-")


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One attachment's publication: what DEL, CHECK and GC need without the runtime's input."""

    portmap: PortMap
    netns: str = ""
    netns_id: str = ""
    backend: str = ""

    @property
    def label(self) -> str:
        return self.portmap.key.label

    def is_stale(self) -> bool:
        """True if the container's netns is gone: nothing can use these ports any more."""
        if not self.netns or not self.netns_id:
            return False
        return netns_identity(self.netns) != self.netns_id

    def describe(self) -> str:
        k = self.portmap.key
        return f"container {k.container_id} (network {k.network}, ifname {k.ifname})"

    def to_json(self) -> str:
        pm = self.portmap
        return json.dumps({
            "network": pm.key.network, "containerID": pm.key.container_id,
            "ifname": pm.key.ifname, "netns": self.netns, "netnsID": self.netns_id,
            "backend": self.backend,
            "portMappings": [{"hostIP": m.host_ip, "hostPort": m.host_port,
                              "containerPort": m.container_port, "protocol": m.protocol}
                             for m in pm.mappings],
            "ipv4": pm.container_ipv4, "ipv6": pm.container_ipv6, "subnets": list(pm.subnets),
            "snat": pm.snat, "masqAll": pm.masq_all,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Record:
        doc: dict[str, Any] = json.loads(text)
        key = AttachmentKey(doc["network"], doc["containerID"], doc["ifname"])
        mappings = tuple(PortMapping(m["hostIP"], m["hostPort"], m["containerPort"],
                                     m["protocol"]) for m in doc["portMappings"])
        pm = PortMap(key=key, mappings=mappings, container_ipv4=doc["ipv4"],
                     container_ipv6=doc["ipv6"], subnets=tuple(doc["subnets"]),
                     snat=doc["snat"], masq_all=doc["masqAll"])
        return cls(portmap=pm, netns=doc["netns"], netns_id=doc["netnsID"],
                   backend=doc.get("backend", ""))


def overlaps(a: str, b: str) -> bool:
    """Whether two reservation names (any, any4, any6 or an address) claim a common address."""
    fam_a = _FAMILIES.get(a, {6 if ":" in a else 4})
    fam_b = _FAMILIES.get(b, {6 if ":" in b else 4})
    if not fam_a & fam_b:
        return False
    return a in _FAMILIES or b in _FAMILIES or a == b


def _listener_hits(m: PortMapping, found: Iterable[Listener]) -> list[Listener]:
    return [s for s in found if s.protocol == m.protocol and s.port == m.host_port
            and overlaps(m.reservation, s.reservation)]


class Registry:
    """The reservations of the network namespace the calling thread is in."""

    def __init__(self, root: str = HOSTPORTS_ROOT, *, check_host_sockets: bool = True) -> None:
        self.dir = os.path.join(root, f"ns-{_current_netns_id()}")
        self._check_sockets = check_host_sockets

    # ------------------------------------------------------------------ paths and I/O

    def _record_path(self, label: str) -> str:
        return os.path.join(self.dir, "attachments", f"{label}.json")

    def _port_dir(self, m: PortMapping) -> str:
        return os.path.join(self.dir, "ports", f"{m.protocol}-{m.host_port}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            os.makedirs(os.path.join(self.dir, "attachments"), mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(self.dir, "ports"), mode=0o700, exist_ok=True)
        except OSError as err:
            raise CNIError(ErrorCode.IO_FAILURE, f"cannot create {self.dir}", str(err)) from err
        with hold(os.path.join(self.dir, "lock")):
            yield

    def load(self, label: str) -> Record | None:
        try:
            with open(self._record_path(label), encoding="utf-8") as f:
                return Record.from_json(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, CNIError) as err:
            raise CNIError(ErrorCode.IO_FAILURE, f"unreadable host-port record {label}",
                           str(err)) from err

    def _holders(self, m: PortMapping) -> list[tuple[str, str]]:
        """(reservation name, owner label) of every reservation overlapping ``m``."""
        directory = self._port_dir(m)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if not atomicfile.is_temp(name) and overlaps(m.reservation, name):
                try:
                    with open(os.path.join(directory, name), encoding="utf-8") as f:
                        out.append((name, f.read().strip()))
                except FileNotFoundError:
                    continue
        return out

    def _unlink_ports(self, rec: Record) -> None:
        for m in rec.portmap.published():
            path = os.path.join(self._port_dir(m), m.reservation)
            try:
                with open(path, encoding="utf-8") as f:
                    owner = f.read().strip()
                # Empty: a writer of an older pycni killed between create and write (they
                # are written atomically now); under the lock nobody is writing it.
                if owner not in (rec.label, ""):
                    continue  # someone else's now
                os.unlink(path)
            except FileNotFoundError:
                continue
            with contextlib.suppress(OSError):
                atomicfile.remove_leftovers(self._port_dir(m))
            with contextlib.suppress(OSError):
                os.rmdir(self._port_dir(m))  # only when empty

    def _remove(self, rec: Record) -> None:
        self._unlink_ports(rec)  # ports first: a port file always has its record
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record_path(rec.label))

    # -------------------------------------------------------------------- operations

    def _conflicts(self, rec: Record) -> tuple[list[str], list[Record], list[str]]:
        """(conflict messages, stale owners to reclaim, orphan files) for ``rec``."""
        problems: list[str] = []
        stale: dict[str, Record] = {}
        orphans: list[str] = []
        for m in rec.portmap.published():
            for name, owner_label in self._holders(m):
                if owner_label == rec.label:
                    continue
                owner = self.load(owner_label)
                if owner is None:
                    orphans.append(os.path.join(self._port_dir(m), name))
                elif owner.is_stale():
                    stale[owner.label] = owner
                else:
                    problems.append(f"host port {m.describe()} is already published by "
                                    f"{owner.describe()}")
        return problems, list(stale.values()), orphans

    def _socket_conflicts(self, rec: Record) -> list[str]:
        if not self._check_sockets:
            return []
        found = hostsockets.listeners({m.protocol for m in rec.portmap.published()})
        problems = []
        for m in rec.portmap.published():
            for s in _listener_hits(m, found):
                problems.append(f"host port {m.describe()}: a host process listens on "
                                f"{s.describe()} ({hostsockets.socket_owner(s.inode)})")
        return problems

    def reserve(self, rec: Record) -> list[Record]:
        """Reserve every published mapping of ``rec`` or nothing (``HostPortConflict``).

        Returns the stale owners whose reservations were reclaimed: the caller removes their
        rules. A retried ADD of the same attachment keeps its own reservations.
        """
        with self._locked():
            problems, stale, orphans = self._conflicts(rec)
            problems += self._socket_conflicts(rec)
            if problems:
                raise HostPortConflict("; ".join(problems))
            for old in stale:
                self._remove(old)
            for path in orphans:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            previous = self.load(rec.label)
            if previous is not None:
                self._unlink_ports(previous)  # a retried ADD may publish other ports
            self._write(rec)
        return stale

    def _write(self, rec: Record) -> None:
        try:
            atomicfile.write(self._record_path(rec.label), rec.to_json().encode())
            for m in rec.portmap.published():
                os.makedirs(self._port_dir(m), mode=0o700, exist_ok=True)
                atomicfile.write(os.path.join(self._port_dir(m), m.reservation),
                                 rec.label.encode())
        except OSError as err:
            self._remove(rec)
            raise CNIError(ErrorCode.IO_FAILURE, "cannot record host-port reservation",
                           str(err)) from err

    def release(self, label: str) -> Record | None:
        """Drop the reservations and record of ``label``; the record it had, if any."""
        if not os.path.isdir(self.dir):
            return None
        with self._locked():
            rec = self.load(label)
            if rec is not None:
                self._remove(rec)
            return rec

    def records(self, network_tag: str | None = None) -> list[Record]:
        """Every attachment record (of one network, by its tag)."""
        directory = os.path.join(self.dir, "attachments")
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        prefix = f"{network_tag}-" if network_tag else ""
        out = []
        for name in names:
            if name.endswith(".json") and name.startswith(prefix):
                rec = self.load(name[: -len(".json")])
                if rec is not None:
                    out.append(rec)
        return out

    def holds(self, rec: Record) -> list[str]:
        """CHECK: what of ``rec``'s reservations is missing or held by someone else."""
        problems = []
        for m in rec.portmap.published():
            holders = dict(self._holders(m))
            if holders.get(m.reservation) != rec.label:
                problems.append(f"host port {m.describe()} is not reserved for this attachment")
        if self.load(rec.label) is None:
            problems.append("no host-port record for this attachment")
        return problems
