"""Making and undoing one attachment: CNI ADD and DEL of a network's conflist through an
``Invoker``, exactly as any runtime runs them. `pycni-run --network`, `network connect` and
`disconnect` call these; `network rm --force` DELs through them.

What a runtime passes per attachment: ``CNI_ARGS`` ``K8S_POD_NAME`` (the container's name, as
podman passes it), and the capabilities ``ips`` (static addresses), ``mac``, ``aliases``
(podman's shape, ``{"NETWORK": [alias, ...]}``, for a name-resolution plugin) and whatever the
caller adds (``portMappings``...). A plugin receives only those its conflist declares.

Only one attachment of a container holds the default route (Docker's one gateway; podman's CNI
backend added one per network, racing for the container's traffic). An attachment without it
runs ``chain_for(conflist, default_route=False)``: the same chain with ``isDefaultGateway``
false on a ``bridge`` plugin and the default routes left out of every ``ipam.routes``, so
neither our plugins nor the reference ones (or host-local's routes) add a second one. The
cached config is that chain, so a later DEL or GC runs what the ADD ran.

``check_request`` finds what the ADD would refuse about the request before anything is made:
an address outside the network (or its IPAM ranges), one another container holds, a
capability no plugin of the network takes.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pycni.cni.conf import NetworkConfigList, conflist_from_doc
from pycni.cni.errors import CNIError
from pycni.cni.invoke import Invoker, RuntimeConf
from pycni.cni.types import Result
from pycni.network.attachments import POD_NAME_ARG, Attachment
from pycni.network.names import invalid
from pycni.network.store import StoredNetwork

__all__ = [
    "AttachRequest",
    "attach",
    "chain_for",
    "check_request",
    "detach",
    "detach_request",
    "runtime_conf",
]

_DEFAULT_ROUTES: Final = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachRequest:
    """One container on one network: what `pycni-run --network` and `connect` ask for."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    name: str = ""  # passed as K8S_POD_NAME, as podman does, so `inspect` can name it
    ips: tuple[str, ...] = ()  # static addresses (the ``ips`` capability)
    mac: str = ""
    aliases: tuple[str, ...] = ()  # the ``aliases`` capability, for this network
    default_route: bool = True  # False: this attachment adds no default route
    capability_args: Mapping[str, Any] = field(default_factory=dict)  # portMappings, ...


def runtime_conf(network: str, req: AttachRequest) -> RuntimeConf:
    """The CNI arguments of ``req`` on ``network``: the same for its ADD and its DEL."""
    caps = dict(req.capability_args)
    if req.ips:
        caps["ips"] = list(req.ips)
    if req.mac:
        caps["mac"] = req.mac
    if req.aliases:
        caps["aliases"] = {network: list(req.aliases)}
    args = (("IgnoreUnknown", "1"), (POD_NAME_ARG, req.name)) if req.name else ()
    return RuntimeConf(container_id=req.container_id, netns=req.netns, ifname=req.ifname,
                       cni_args=args, capability_args=caps)


# ------------------------------------------------------------------------- default route


def _is_default(route: Any) -> bool:
    try:
        return isinstance(route, Mapping) and ipaddress.ip_network(str(route.get("dst"))) \
            in _DEFAULT_ROUTES
    except ValueError:
        return False


def _without_default_route(plugin: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(plugin)
    if out.get("type") == "bridge":
        out["isDefaultGateway"] = False  # ours defaults it to isGateway; the reference's, off
    ipam = out.get("ipam")
    if isinstance(ipam, Mapping) and isinstance(ipam.get("routes"), list):
        out["ipam"] = {**ipam, "routes": [r for r in ipam["routes"] if not _is_default(r)]}
    return out


def chain_for(conflist: NetworkConfigList, *, default_route: bool) -> NetworkConfigList:
    """``conflist`` as run for an attachment with or without the default route."""
    if default_route:
        return conflist
    doc = json.loads(conflist.raw)
    if "plugins" not in doc:  # a single-plugin .conf, upconverted as conf.py does
        doc = {"cniVersion": doc.get("cniVersion", ""), "name": doc.get("name", ""),
               "plugins": [doc]}
    doc["plugins"] = [_without_default_route(p) for p in conflist.plugins]
    return conflist_from_doc(doc, json.dumps(doc).encode(), conflist.source)


# ------------------------------------------------------------------- checks before an ADD


def _declares(conflist: NetworkConfigList, capability: str) -> bool:
    return any((p.get("capabilities") or {}).get(capability) for p in conflist.plugins)


def _check_capabilities(network: StoredNetwork, req: AttachRequest) -> None:
    for wanted, capability, what in ((req.ips, "ips", "static addresses"),
                                     (req.mac, "mac", "a MAC address")):
        if wanted and not _declares(network.conflist, capability):
            raise invalid(f"network {network.name} does not take {what}",
                          f"no plugin of {network.conflist.source or network.name} declares "
                          f"the {capability!r} capability")


def _check_in_subnets(network: StoredNetwork, ips: Sequence[str]) -> None:
    subnets = network.view.networks()
    for text in ips:
        try:
            ip = ipaddress.ip_interface(text).ip
        except ValueError as err:
            raise invalid(f"invalid IP address {text!r}") from err
        if not any(ip in s for s in subnets):
            raise invalid(f"{ip} is outside network {network.name}",
                          f"subnets: {', '.join(map(str, subnets)) or 'none'}")


def _host_local_ipam(network: StoredNetwork) -> Mapping[str, Any] | None:
    for plugin in network.conflist.plugins:
        ipam = plugin.get("ipam")
        if isinstance(ipam, Mapping) and ipam.get("type") == "host-local":
            return ipam
    return None


def _check_host_local(network: StoredNetwork, req: AttachRequest) -> None:
    """What host-local would refuse: an address outside its ranges (or a gateway), or one
    reserved by another attachment (its reservation file, ``<dataDir>/<network>/<ip>``)."""
    from pycni.ipam.allocator import place_requested
    from pycni.ipam.config import parse_ipam_config
    from pycni.ipam.store import network_dir, owned_by, parse_owner

    ipam = _host_local_ipam(network)
    if ipam is None:
        return
    config = parse_ipam_config(ipam, cni_version=network.conflist.cni_version)
    wanted = [ipaddress.ip_interface(text).ip for text in req.ips]
    try:
        place_requested(config.range_sets, wanted)
    except CNIError as err:
        raise invalid(f"network {network.name}: {err.msg}", err.details) from err
    directory = network_dir(config.data_dir, network.name)
    for ip in wanted:
        try:
            with open(os.path.join(directory, str(ip)), newline="") as f:
                owner = f.read()
        except FileNotFoundError:
            continue
        except OSError as err:
            raise invalid(f"cannot tell whether {ip} is free in network {network.name}",
                          str(err)) from err
        if not owned_by(owner, req.container_id, req.ifname):
            holder = parse_owner(owner)
            raise invalid(f"{ip} is already in use in network {network.name}",
                          f"held by container {holder[0][:12]}" if holder else "reserved")


def check_request(network: StoredNetwork, req: AttachRequest) -> None:
    """Refuse (``CNIError``) what the ADD would refuse about ``req``, before anything is made."""
    _check_capabilities(network, req)
    if req.ips:
        _check_in_subnets(network, req.ips)
        _check_host_local(network, req)


# ----------------------------------------------------------------------------- ADD, DEL


def attach(invoker: Invoker, network: StoredNetwork, req: AttachRequest) -> Result:
    """CNI ADD of the network's chain for one container (rolled back if any plugin fails)."""
    check_request(network, req)
    conflist = chain_for(network.conflist, default_route=req.default_route)
    return invoker.add(conflist, runtime_conf(network.name, req))


def detach_request(invoker: Invoker, conflist: NetworkConfigList, req: AttachRequest) -> None:
    """CNI DEL of what ``attach`` made for ``req`` (the same chain, the same arguments)."""
    chain = chain_for(conflist, default_route=req.default_route)
    invoker.delete(chain, runtime_conf(conflist.name, req))


def detach(invoker: Invoker, network: StoredNetwork, attachment: Attachment) -> None:
    """CNI DEL with what the ADD was given (its cached arguments and, when the cache has it,
    its chain); best effort, as DEL is."""
    entry = attachment.entry
    rt = RuntimeConf(container_id=entry.container_id, netns=entry.netns, ifname=entry.ifname,
                     cni_args=entry.cni_args, capability_args=entry.capability_args)
    invoker.delete(_cached_chain(network.conflist, entry.config), rt)


def _cached_chain(conflist: NetworkConfigList, config: bytes) -> NetworkConfigList:
    """The chain an attachment was made with (its cached config) when it is this network's,
    else the network's own."""
    if not config:
        return conflist
    try:
        cached = conflist_from_doc(json.loads(config), config, conflist.source)
    except (ValueError, CNIError):
        return conflist
    return cached if cached.name == conflist.name else conflist
