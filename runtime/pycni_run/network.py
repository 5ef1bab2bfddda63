"""Networking a container through CNI only (``pycni.network.attach`` over ``pycni.cni.invoke``),
as containerd or podman do.

The netns is pinned at ``<netns_dir>/<name>`` before the first ADD (CNI_NETNS must exist
before any plugin runs) and unpinned after the last DEL. A container has one attachment per
network: ``eth0`` for the first, ``eth1``, ``eth2``... for the next ones (and for `network
connect`, the first name free in its netns); only one holds the default route. The modes pick
their network (bridge -> ``pycni``, none -> ``none``, host -> ``host``, container:NAME ->
``container``). Published ports travel as the ``portMappings`` capability of the first
network, so it needs a plugin that declares it (portmap).

Where ``pycni install`` never ran: a built-in network missing from the conf dir is read from
the package's own ``conf/``, and plugins missing from the CNI path are run from executables
rendered for this interpreter under ``<state_dir>/plugins`` (podman's built-in default network,
the same idea), appended to the path so that installed plugins come first.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Collection, Sequence
from typing import Any, Final

from pycni.cni.conf import NetworkConfigList
from pycni.cni.errors import CNIError
from pycni.cni.invoke import Invoker
from pycni.net import netns
from pycni.network.attach import AttachRequest, check_request
from pycni.network.store import StoredNetwork, load_named
from pycni_run.config import RuntimeConfig
from pycni_run.errors import RunError
from pycni_run.spec import NetworkRequest
from pycni_run.state import ContainerState, NetAttachment

__all__ = [
    "attach",
    "check_attachment",
    "check_networks",
    "detach",
    "ifname_of",
    "links_in",
    "load_network",
    "next_ifname",
    "pin_netns",
    "plugin_path",
    "result_gateway",
    "result_ips",
    "result_nameservers",
    "unpin_netns",
]

PORT_CAPABILITY: Final = "portMappings"
_BUNDLED_PLUGINS: Final = "plugins"  # under the state dir


def ifname_of(index: int) -> str:
    return f"eth{index}"


def plugin_path(cfg: RuntimeConfig) -> tuple[str, ...]:
    """The CNI path, with the package's own plugins after it when it lacks any of them."""
    from pycni.plugins import PLUGINS

    def found(kind: str) -> bool:
        return any(os.access(os.path.join(d, kind), os.X_OK) for d in cfg.cni_path)

    if all(found(kind) for kind in PLUGINS):
        return cfg.cni_path
    from pycni.install import ensure_executables

    bundled = os.path.join(cfg.state_dir, _BUNDLED_PLUGINS)
    try:
        ensure_executables(bundled)
    except OSError as err:
        raise RunError(f"cannot provide the package's CNI plugins in {bundled}: {err}") from err
    return (*cfg.cni_path, bundled)


def load_network(cfg: RuntimeConfig, name: str) -> StoredNetwork:
    """The network called ``name`` in the conf dir, or a built-in one from the package."""
    found = load_named(cfg.conf_dir, name)
    if found is None:
        from pycni.install import CONF_SOURCE
        from pycni.network.names import BUILTIN_NETWORKS

        if name in BUILTIN_NETWORKS:
            found = load_named(str(CONF_SOURCE), name)
    if found is None:
        raise RunError(f"no such network: {name} (looked in {cfg.conf_dir}; "
                       "`pycni-run network ls` lists them)")
    return found


def _request(st: ContainerState, att: NetAttachment) -> AttachRequest:
    caps = {PORT_CAPABILITY: list(st.ports)} if att.publishes and st.ports else {}
    return AttachRequest(container_id=st.id, netns=st.netns_path, ifname=att.ifname,
                         name=st.name, ips=att.ips, mac=att.mac, aliases=att.aliases,
                         default_route=att.default_route, capability_args=caps)


def check_networks(
    cfg: RuntimeConfig, container_id: str, requests: Sequence[NetworkRequest], *, ports: bool
) -> list[StoredNetwork]:
    """Every requested network loaded and its request checked (addresses in the network and
    free, capabilities present), before anything is made."""
    networks = [load_network(cfg, r.name) for r in requests]
    first = networks[0]
    if ports and not any((p.get("capabilities") or {}).get(PORT_CAPABILITY)
                         for p in first.conflist.plugins):
        raise RunError(
            f"-p needs a plugin with the {PORT_CAPABILITY} capability in network {first.name} "
            f"({first.path}); the portmap plugin is not available yet"
        )
    for index, (network, request) in enumerate(zip(networks, requests, strict=True)):
        check_attachment(network, container_id, ifname_of(index), request)
    return networks


def check_attachment(
    network: StoredNetwork, container_id: str, ifname: str, request: NetworkRequest
) -> None:
    """What the ADD would refuse about ``request`` (``pycni.network.attach.check_request``)."""
    attachment = AttachRequest(container_id=container_id, netns="", ifname=ifname,
                               ips=request.ips, mac=request.mac)
    try:
        check_request(network, attachment)
    except CNIError as err:  # its messages name the network
        raise RunError(str(err)) from err


def _invoker(cfg: RuntimeConfig) -> Invoker:
    """libcni's invoker with the runtime's runner: pycni's own plugins forked (in-process in
    the daemon's worker: ``cfg.plugin_runner``), any other exec'd."""
    from pycni.plugins.runner import FORKED

    return Invoker(path=plugin_path(cfg), cache_dir=cfg.cni_cache_dir,
                   runner=cfg.plugin_runner or FORKED)


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
    cfg: RuntimeConfig, network: StoredNetwork, st: ContainerState, att: NetAttachment
) -> dict[str, Any]:
    """CNI ADD of the network's chain for ``att``; the result in the network's version (a
    failed ADD is undone)."""
    from pycni.network.attach import attach as cni_attach

    try:
        result = cni_attach(_invoker(cfg), network, _request(st, att))
    except CNIError as err:
        raise RunError(f"network {network.name}: ADD failed: {err}") from err
    return result.to_dict(network.conflist.cni_version)


def detach(cfg: RuntimeConfig, st: ContainerState, att: NetAttachment) -> None:
    """CNI DEL in reverse with the cached result; safe after a crash or a second time. A
    network whose conflist is gone is DEL'd with the chain its cache entry keeps; with
    neither left there is nothing of it to undo."""
    from pycni.network.attach import detach_request

    try:
        conflist = _conflist_for_del(cfg, st, att)
        if conflist is not None:
            detach_request(_invoker(cfg), conflist, _request(st, att))
    except CNIError as err:
        raise RunError(f"network {att.network}: DEL failed: {err}") from err


def _conflist_for_del(
    cfg: RuntimeConfig, st: ContainerState, att: NetAttachment
) -> NetworkConfigList | None:
    from pycni.cni import cache
    from pycni.cni.conf import parse_conflist

    try:
        return load_network(cfg, att.network).conflist
    except RunError:
        pass
    entry = cache.read(cache.entry_path(cfg.cni_cache_dir, att.network, st.id, att.ifname))
    return parse_conflist(entry.config) if entry is not None and entry.config else None


def links_in(netns_path: str) -> set[str]:
    """The link names in the pinned netns at ``netns_path``."""
    from pycni.net import links
    from pycni.net.ipr import open_ipr

    try:
        with open_ipr(netns_path) as ipr:
            return set(links.list_link_names(ipr))
    except CNIError as err:
        raise RunError(f"cannot list the links of {netns_path}: {err}") from err


def next_ifname(taken: Collection[str]) -> str:
    """``eth<N>`` with the lowest N not in ``taken``."""
    index = 0
    while ifname_of(index) in taken:
        index += 1
    return ifname_of(index)


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


def result_gateway(result: dict[str, Any] | None) -> str:
    """The first gateway of a CNI result's addresses ("" when it has none)."""
    return next((str(ip["gateway"]) for ip in (result or {}).get("ips") or []
                 if ip.get("gateway")), "")


def result_nameservers(results: Sequence[dict[str, Any] | None]) -> tuple[list[str], list[str]]:
    """The nameservers and search domains of every network's result, in network order, each
    once: a container on two networks with name resolution gets the resolver (127.0.0.11)
    once, and the names of both networks are asked there."""
    servers: dict[str, None] = {}
    search: dict[str, None] = {}
    for result in results:
        dns = (result or {}).get("dns") or {}
        servers |= dict.fromkeys(str(s) for s in dns.get("nameservers") or [])
        search |= dict.fromkeys(str(d) for d in dns.get("search") or [])
    return list(servers), list(search)
