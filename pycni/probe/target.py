"""TARGET -> a network namespace path plus what is known about it (CNI result, published ports).

Resolution order: anything with a ``/`` is a netns path; otherwise a pycni-run container
(``<state_dir>/containers/NAME/state.json``, read as a file: the probe does not import the
runtime), otherwise a netns name pinned under ``/run/netns``. For netns names and paths the
CNI result and port mappings come from the results cache (libcni layout) when an attachment
there names the same namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni import cache
from pycni.net.netns import NETNS_RUN_DIR, same
from pycni.probe.errors import ProbeError
from pycni.probe.spec import Destination

__all__ = [
    "DEFAULT_STATE_DIR",
    "Target",
    "published_destinations",
    "resolve_target",
    "result_addresses",
    "result_gateway",
]

DEFAULT_STATE_DIR: Final = "/run/pycni"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    name: str
    kind: str  # "container", "netns" or "path"
    netns_path: str
    result: Mapping[str, Any] | None = None
    ports: tuple[Mapping[str, Any], ...] = ()
    network: str = ""


def _read_state(state_dir: str, name: str) -> dict[str, Any] | None:
    path = os.path.join(state_dir, "containers", name, "state.json")
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ProbeError(f"container {name}: unreadable state {path}: {err}") from err
    return doc if isinstance(doc, dict) else None


def _state_netns(name: str, doc: Mapping[str, Any]) -> str:
    """The container's pinned netns. Never ``/proc/<its pid>/ns/net``: that pid is the
    runtime's pid namespace's, and the probe's /proc may be another's (or the pid reused)."""
    path = str(doc.get("netns_path") or "")
    if path:
        return path
    raise ProbeError(f"container {name} has no network namespace (is it running?)")


def _container(state_dir: str, name: str, doc: Mapping[str, Any]) -> Target:
    ports = [p for p in doc.get("ports") or [] if isinstance(p, dict)]
    result = doc.get("cni_result") if isinstance(doc.get("cni_result"), dict) else None
    mode = str(doc.get("net_mode") or "")
    if mode.startswith("container:") and not ports:
        # --net=container:OWNER: the owner's published ports are this container's too.
        owner = _read_state(state_dir, mode.partition(":")[2]) or {}
        ports = [p for p in owner.get("ports") or [] if isinstance(p, dict)]
    return Target(
        name=name,
        kind="container",
        netns_path=_state_netns(name, doc),
        result=result,
        ports=tuple(ports),
        network=str(doc.get("network") or ""),
    )


def _cached_attachments(cache_dir: str, netns_path: str) -> list[cache.CachedAttachment]:
    """Cached attachments (with a result) of the namespace at ``netns_path``, under any of
    its names: the one pinned at exactly this path first, then those with a gateway."""
    directory = os.path.join(cache_dir, "results")
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    found = []
    for name in names:
        entry = cache.read(os.path.join(directory, name))
        if entry is None or entry.result is None or not entry.netns:
            continue
        with contextlib.suppress(OSError):
            if same(entry.netns, netns_path):
                found.append(entry)
    return sorted(
        found,
        key=lambda e: (e.netns != netns_path, result_gateway(e.result) is None),
    )


def _namespace(name: str, kind: str, path: str, cache_dir: str) -> Target:
    if not os.path.exists(path):
        raise ProbeError(f"no such network namespace: {path}")
    entries = _cached_attachments(cache_dir, path)
    if not entries:
        return Target(name=name, kind=kind, netns_path=path)
    # Every attachment of this netns publishes ports into it (container:NAME shares them).
    ports: list[Mapping[str, Any]] = []
    for entry in entries:
        for mapping in entry.capability_args.get("portMappings") or []:
            if isinstance(mapping, dict) and mapping not in ports:
                ports.append(mapping)
    return Target(
        name=name,
        kind=kind,
        netns_path=path,
        result=entries[0].result,
        ports=tuple(ports),
        network=entries[0].network,
    )


def resolve_target(
    text: str,
    *,
    state_dir: str = DEFAULT_STATE_DIR,
    netns_dir: str = NETNS_RUN_DIR,
    cache_dir: str = cache.DEFAULT_CACHE_DIR,
) -> Target:
    """A container name, a netns name under ``netns_dir``, or a netns path."""
    if not text:
        raise ProbeError("empty target")
    if "/" in text:
        return _namespace(text, "path", text, cache_dir)
    doc = _read_state(state_dir, text)
    if doc is not None:
        return _container(state_dir, text, doc)
    pinned = os.path.join(netns_dir, text)
    if os.path.exists(pinned):
        return _namespace(text, "netns", pinned, cache_dir)
    raise ProbeError(f"no container or network namespace named {text!r}")


def _sandbox_ips(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    interfaces = result.get("interfaces") or []
    found = []
    for ip in result.get("ips") or []:
        index = ip.get("interface")
        in_range = isinstance(index, int) and 0 <= index < len(interfaces)
        if in_range and not interfaces[index].get("sandbox"):
            continue  # the host side of a veth, the bridge
        found.append(ip)
    return found


def result_addresses(result: Mapping[str, Any] | None) -> list[str]:
    """The container's own addresses (CIDR) in a CNI result, loopback left out."""
    out = []
    for ip in _sandbox_ips(result or {}):
        cidr = str(ip.get("address", ""))
        with contextlib.suppress(ValueError):
            if not ipaddress.ip_interface(cidr).is_loopback:
                out.append(cidr)
    return out


def result_gateway(result: Mapping[str, Any] | None, version: int = 4) -> str | None:
    """The first gateway of the given family the result assigns to a container interface."""
    for ip in _sandbox_ips(result or {}):
        gateway = ip.get("gateway")
        if gateway:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(str(gateway)).version == version:
                    return str(ipaddress.ip_address(str(gateway)))
    return None


def published_destinations(
    ports: Sequence[Mapping[str, Any]], gateway: str | None
) -> list[Destination]:
    """Each published port, probed the way the container itself reaches it: through the host
    (its ``hostIP`` when one was given, else the gateway), so DNAT and hairpin are exercised."""
    out = []
    for mapping in ports:
        host_ip = str(mapping.get("hostIP") or "")
        try:
            host_port = int(mapping["hostPort"])
        except (KeyError, TypeError, ValueError):
            continue
        proto = str(mapping.get("protocol") or "tcp").lower()
        try:
            wildcard = not host_ip or ipaddress.ip_address(host_ip).is_unspecified
        except ValueError:
            continue
        address = gateway if wildcard else host_ip
        if address is None or proto not in ("tcp", "udp"):
            continue
        if ipaddress.ip_address(address).is_loopback:
            continue  # the host's loopback is not the container's
        origin = f"published {host_port}->{mapping.get('containerPort', '?')}/{proto}"
        out.append(Destination(address=address, port=host_port, proto=proto, origin=origin))
    return out
