"""The resolver's records on disk: one file per attachment, written by the plugin.

    <run dir>/records/<label>.json     label = "<network tag>-<attachment tag>" (firewall.model)

Each holds what the resolver needs to serve the attachment after its own restart: the network,
the names, the addresses from prevResult, the domain, and the container's netns path with the
identity (``dev:inode``) it had at ADD, so a restarted resolver re-opens the path only when it
still names the same namespace. Files are replaced atomically; the directory is 0700 and on
tmpfs by default (``/run``), so records vanish at reboot with the containers they describe.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Final

from pycni import atomicfile
from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.model import AttachmentKey, network_tag

__all__ = ["DEFAULT_RUN_DIR", "RecordStore", "Registration", "netns_identity"]

DEFAULT_RUN_DIR: Final = "/run/pycni/dns"


def netns_identity(fd: int) -> str:
    """``dev:inode`` of an open namespace file: what a namespace is, whatever its path."""
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """One attachment's names and addresses on one network."""

    network: str
    container_id: str
    ifname: str
    names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    domain: str = ""
    netns: str = ""
    netns_id: str = ""
    # The attachment's label, hashed once: it keys every table of the resolver.
    label: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", self.key.label)

    @property
    def key(self) -> AttachmentKey:
        return AttachmentKey(self.network, self.container_id, self.ifname)

    def describe(self) -> str:
        return f"container {self.container_id} ({self.ifname} on network {self.network})"

    def to_json(self) -> str:
        return json.dumps({
            "network": self.network, "containerID": self.container_id, "ifname": self.ifname,
            "names": list(self.names), "ips": list(self.ips), "domain": self.domain,
            "netns": self.netns, "netnsID": self.netns_id,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Registration:
        doc: dict[str, Any] = json.loads(text)
        return cls(
            network=str(doc["network"]), container_id=str(doc["containerID"]),
            ifname=str(doc["ifname"]), names=tuple(str(n) for n in doc["names"]),
            ips=tuple(str(i) for i in doc["ips"]), domain=str(doc.get("domain", "")),
            netns=str(doc.get("netns", "")), netns_id=str(doc.get("netnsID", "")),
        )


class RecordStore:
    """The records under one run dir."""

    def __init__(self, run_dir: str = DEFAULT_RUN_DIR) -> None:
        self.run_dir = run_dir
        self.dir = os.path.join(run_dir, "records")

    def _path(self, label: str) -> str:
        return os.path.join(self.dir, f"{label}.json")

    def write(self, reg: Registration) -> None:
        path, data = self._path(reg.label), reg.to_json().encode()
        try:
            try:
                atomicfile.write(path, data)
            except FileNotFoundError:  # the first record: make both levels 0700 (makedirs
                os.makedirs(self.run_dir, mode=0o700, exist_ok=True)  # would give the upper
                os.makedirs(self.dir, mode=0o700, exist_ok=True)  # one 0755)
                atomicfile.write(path, data)
        except OSError as err:
            raise CNIError(ErrorCode.IO_FAILURE, f"cannot write the DNS record of "
                           f"{reg.describe()}", str(err)) from err

    def remove(self, label: str) -> bool:
        """Drop a record; False if there was none (already gone is fine)."""
        try:
            os.unlink(self._path(label))
        except FileNotFoundError:
            return False
        except OSError as err:
            raise CNIError(ErrorCode.IO_FAILURE, f"cannot remove DNS record {label}",
                           str(err)) from err
        return True

    def load(self, label: str) -> Registration | None:
        try:
            with open(self._path(label), encoding="utf-8") as f:
                return Registration.from_json(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CNIError(ErrorCode.IO_FAILURE, f"unreadable DNS record {label}",
                           str(err)) from err

    def labels(self, network: str | None = None) -> list[str]:
        """Labels of the records present (of one network's, by its tag prefix)."""
        prefix = f"{network_tag(network)}-" if network is not None else ""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and n.startswith(prefix))
