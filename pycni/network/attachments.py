"""A network's attachments, from the results cache (libcni's layout, so podman's, CRI's and
containerd's attachments count as much as pycni-run's).

Reading: ``count_attachments`` counts every network's entries from file names alone (one
directory listing, however many entries: what `network ls` needs); a file name that could
belong to two networks (``app-db-<id>-eth0`` when ``app`` and ``app-db`` both exist) is
settled by the entry's own ``networkName``. ``list_attachments`` reads the entries of one
network (what `inspect` and `rm` need). A container's name comes from ``K8S_POD_NAME`` in the
cached ``CNI_ARGS`` (podman, CRI) or from pycni-run's state (``<state_dir>/containers/
<name>/state.json`` holds its id, read as a file: the library does not import the runtime).
Making and undoing attachments is ``pycni.network.attach``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

from pycni.cni import cache

__all__ = [
    "POD_NAME_ARG",
    "Attachment",
    "container_names",
    "count_attachments",
    "list_attachments",
]

POD_NAME_ARG: Final = "K8S_POD_NAME"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    entry: cache.CachedAttachment
    name: str = ""  # the container's name where known
    ips: tuple[str, ...] = ()  # CIDRs
    mac: str = ""
    dns_names: tuple[str, ...] = ()  # what the network's resolver holds for it (`inspect`)

    @property
    def container_id(self) -> str:
        return self.entry.container_id

    @property
    def ifname(self) -> str:
        return self.entry.ifname

    @property
    def in_progress(self) -> bool:
        """An ADD that has not finished (or crashed): no result cached yet."""
        return self.entry.result is None

    @property
    def label(self) -> str:
        return self.name or self.container_id[:12]


def _results_dir(cache_dir: str) -> str:
    return os.path.join(cache_dir, "results")


def _owners(filename: str, networks: Collection[str]) -> list[str]:
    """Networks ``filename`` (``<network>-<container id>-<ifname>``) may belong to: each
    prefix ending before a '-' that names one."""
    found = []
    dash = filename.find("-")
    while dash > 0:
        if filename[:dash] in networks:
            found.append(filename[:dash])
        dash = filename.find("-", dash + 1)
    return found


def count_attachments(cache_dir: str, networks: Collection[str]) -> dict[str, int]:
    counts = dict.fromkeys(networks, 0)
    directory = _results_dir(cache_dir)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return counts
    for filename in names:
        owners = [] if filename.startswith(".tmp-") else _owners(filename, counts)
        if len(owners) > 1:
            entry = cache.read(os.path.join(directory, filename))
            owners = [entry.network] if entry is not None and entry.network in counts else []
        if owners:
            counts[owners[0]] += 1
    return counts


def container_names(state_dir: str) -> dict[str, str]:
    """pycni-run's containers: id -> name (unreadable states are skipped)."""
    directory = os.path.join(state_dir, "containers")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    for name in names:
        try:
            with open(os.path.join(directory, name, "state.json"), "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("id"), str):
            found[doc["id"]] = str(doc.get("name") or name)
    return found


def _addressing(entry: cache.CachedAttachment) -> tuple[tuple[str, ...], str]:
    """The CIDRs and the container-side MAC in a cached result (any result version)."""
    result = entry.result or {}
    ips = tuple(str(ip["address"]) for ip in result.get("ips") or []
                if isinstance(ip, Mapping) and "address" in ip)
    mac = next((str(i.get("mac") or "") for i in result.get("interfaces") or []
                if isinstance(i, Mapping) and i.get("name") == entry.ifname and i.get("sandbox")),
               "")
    return ips, mac


def list_attachments(cache_dir: str, network: str, *, names: Mapping[str, str] | None = None
                     ) -> list[Attachment]:
    """Every cached attachment of ``network`` (corrupt entries are left to GC), with container
    names from ``names`` (id -> name, see ``container_names``) or ``K8S_POD_NAME``."""
    found = []
    for _, entry in cache.list_network(cache_dir, network):
        if entry is None:
            continue
        ips, mac = _addressing(entry)
        name = dict(entry.cni_args).get(POD_NAME_ARG) or (names or {}).get(entry.container_id, "")
        found.append(Attachment(entry=entry, name=name, ips=ips, mac=mac))
    return sorted(found, key=lambda a: (a.label, a.ifname))
