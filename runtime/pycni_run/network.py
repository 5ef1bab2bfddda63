"""Networking a container through CNI only (``pycni.cni.invoke``), as containerd or podman do.

The netns is pinned at ``<netns_dir>/<name>`` before ADD (CNI_NETNS must exist before any
plugin runs) and unpinned after DEL; the mode picks the conflist (bridge -> ``pycni``, none ->
``none``, host -> ``host``, container:NAME -> ``container``). Published ports travel as the
``portMappings`` capability, so they need a plugin in the network that declares it (portmap).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from typing import Any

from pycni.cni.conf import NetworkConfigList, find_conflist
from pycni.cni.errors import CNIError
from pycni.cni.invoke import Invoker, RuntimeConf
from pycni.net import netns
from pycni_run.config import RuntimeConfig
from pycni_run.errors import RunError
from pycni_run.spec import PortMapping

__all__ = [
    "IFNAME",
    "attach",
    "detach",
    "load_network",
    "pin_netns",
    "result_ips",
    "result_nameservers",
    "run_plugins_in_process",
    "unpin_netns",
]

IFNAME = "eth0"
PORT_CAPABILITY = "portMappings"


def load_network(
    cfg: RuntimeConfig, network: str, ports: Sequence[PortMapping]
) -> NetworkConfigList:
    """The conflist for ``network``; refuse ports when no plugin in it can publish them."""
    try:
        conflist = find_conflist(cfg.conf_dir, network)
    except CNIError as err:
        raise RunError(f"network {network!r}: {err} (run `pycni install`?)") from err
    if ports and not any(
        (p.get("capabilities") or {}).get(PORT_CAPABILITY) for p in conflist.plugins
    ):
        raise RunError(
            f"-p needs a plugin with the {PORT_CAPABILITY} capability in network {network!r} "
            f"({conflist.source}); the portmap plugin is not available yet"
        )
    return conflist


# Set by the runtime daemon's worker (a process thrown away after one command): pycni's own
# plugins then run in it, not in a fork per plugin (see pycni.cni.invoke).
_plugins_in_process: list[bool] = [False]


def run_plugins_in_process() -> None:
    _plugins_in_process[0] = True


def _invoker(cfg: RuntimeConfig) -> Invoker:
    return Invoker(
        path=cfg.cni_path, cache_dir=cfg.cni_cache_dir, in_process=_plugins_in_process[0]
    )


def _runtime_conf(
    container_id: str, netns_path: str, ports: Sequence[dict[str, Any]]
) -> RuntimeConf:
    caps = {PORT_CAPABILITY: list(ports)} if ports else {}
    return RuntimeConf(
        container_id=container_id, netns=netns_path, ifname=IFNAME, capability_args=caps
    )


def pin_netns(cfg: RuntimeConfig, name: str, netns_fd: int) -> str:
    """Bind-mount the netns behind ``netns_fd`` (the container init's, from its pidfd) at
    ``<netns_dir>/<name>`` (``ip netns`` sees it)."""
    target = os.path.join(cfg.netns_dir, name)
    try:
        netns.pin_fd(netns_fd, target)
    except FileExistsError:
        raise RunError(
            f"{target} already exists: another netns is pinned under that name"
        ) from None
    except OSError as err:
        raise RunError(f"cannot pin the container's netns at {target}: {err}") from err
    return target


def unpin_netns(path: str) -> None:
    try:
        netns.remove(path)
    except OSError as err:
        raise RunError(f"cannot unpin {path}: {err}") from err


def attach(
    cfg: RuntimeConfig,
    conflist: NetworkConfigList,
    *,
    container_id: str,
    netns_path: str,
    ports: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """CNI ADD of the whole chain; the result in the list's version (a failed ADD is undone)."""
    try:
        result = _invoker(cfg).add(conflist, _runtime_conf(container_id, netns_path, ports))
    except CNIError as err:
        raise RunError(f"network {conflist.name}: ADD failed: {err}") from err
    return result.to_dict(conflist.cni_version)


def detach(
    cfg: RuntimeConfig,
    network: str,
    *,
    container_id: str,
    netns_path: str,
    ports: Sequence[dict[str, Any]],
) -> None:
    """CNI DEL in reverse with the cached result; safe after a crash or a second time."""
    try:
        conflist = find_conflist(cfg.conf_dir, network)
        _invoker(cfg).delete(conflist, _runtime_conf(container_id, netns_path, ports))
    except CNIError as err:
        raise RunError(f"network {network}: DEL failed: {err}") from err


def result_ips(result: dict[str, Any] | None, *, sandbox_only: bool = True) -> list[str]:
    """Addresses (no prefix) of the container's interfaces in a CNI result."""
    if not result:
        return []
    interfaces = result.get("interfaces") or []
    found = []
    for ip in result.get("ips") or []:
        index = ip.get("interface")
        in_sandbox = (
            isinstance(index, int)
            and 0 <= index < len(interfaces)
            and bool(interfaces[index].get("sandbox"))
        )
        address = str(ip["address"]).split("/")[0]
        if (in_sandbox or not sandbox_only) and not ipaddress.ip_address(address).is_loopback:
            found.append(address)
    return found


def result_nameservers(result: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    dns = (result or {}).get("dns") or {}
    return list(dns.get("nameservers") or []), list(dns.get("search") or [])
