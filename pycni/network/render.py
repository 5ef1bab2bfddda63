"""A ``NetworkSpec`` as a conflist any CNI runtime runs unchanged, and the way back.

The chain is the default network's (``conf/10-pycni.conflist``): ``bridge`` (``host-local``
IPAM) -> ``portmap`` -> ``bandwidth`` -> ``firewall`` -> [extra plugins] -> ``loopback``,
declaring the ``mac``, ``ips``, ``portMappings`` and ``bandwidth`` capabilities a runtime fills
in. ``cniVersion`` 1.0.0 with 1.1.0 listed in ``cniVersions``: libcni 1.1 (podman 4.x,
containerd 1.6) decodes results up to 1.0.0 only, newer runtimes read the list.

An ``--internal`` network: the gateway address stays on the bridge (the host, and a resolver
listening there, stay reachable) but there is no default route, no masquerade, and the
`firewall` plugin's ``internal`` drops whatever is forwarded into or out of the network.

Labels and options ride in the conflist's top-level ``args``, as ``podman_labels`` and
``podman_options`` (where podman's CNI backend writes and reads them, so `podman network
inspect` shows them); ``args.pycni`` marks a network `pycni network create` made. libcni
passes only each plugin's own object to a plugin: top-level keys reach no plugin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni.conf import NetworkConfigList
from pycni.network.spec import NetworkSpec, SubnetSpec
from pycni.network.subnets import IPNetwork

__all__ = [
    "CNI_VERSION",
    "CNI_VERSIONS",
    "MANAGED_MARK",
    "NetworkView",
    "SubnetView",
    "render_conflist",
    "view_of",
]

CNI_VERSION: Final = "1.0.0"
CNI_VERSIONS: Final = ("0.4.0", "1.0.0", "1.1.0")
MANAGED_MARK: Final = {"createdBy": "pycni network create", "version": 1}
_DEFAULT_BRIDGE: Final = "pycni0"  # what the `bridge` plugin here uses without a `bridge` key


def _range(s: SubnetSpec) -> dict[str, str]:
    item = {"subnet": str(s.subnet), "gateway": str(s.gateway)}
    if s.ip_range is not None:
        # host-local's rangeEnd excludes the IPv4 broadcast, as its default does.
        last = s.subnet.broadcast_address - (1 if s.subnet.version == 4 else 0)
        item["rangeStart"] = str(max(s.ip_range.network_address, s.subnet.network_address + 1))
        item["rangeEnd"] = str(min(s.ip_range.broadcast_address, last))
    return item


def _bridge_plugin(spec: NetworkSpec, *, ipam_data_dir: str, backend: str | None
                   ) -> dict[str, Any]:
    ipam: dict[str, Any] = {"type": "host-local", "ranges": [[_range(s)] for s in spec.subnets]}
    if ipam_data_dir:
        ipam["dataDir"] = ipam_data_dir
    plugin: dict[str, Any] = {
        "type": "bridge",
        "bridge": spec.bridge,
        "isGateway": True,
        "isDefaultGateway": not spec.internal,
        "ipMasq": spec.ip_masq,
        "hairpinMode": True,
    }
    if spec.mtu is not None:
        plugin["mtu"] = spec.mtu
    if not spec.icc:
        plugin["portIsolation"] = True
    if backend and spec.ip_masq:
        plugin["ipMasqBackend"] = backend
    plugin["capabilities"] = {"mac": True, "ips": True}
    plugin["ipam"] = ipam
    return plugin


def _firewall_plugin(spec: NetworkSpec, *, backend: str | None) -> dict[str, Any]:
    plugin: dict[str, Any] = {"type": "firewall"}
    if backend:
        plugin["backend"] = backend
    plugin["ingressPolicy"] = "same-bridge" if spec.isolate else "open"
    if spec.internal:
        plugin["internal"] = True
    return plugin


def render_conflist(spec: NetworkSpec, *, ipam_data_dir: str = "",
                    firewall_backend: str | None = None) -> dict[str, Any]:
    plugins = [
        _bridge_plugin(spec, ipam_data_dir=ipam_data_dir, backend=firewall_backend),
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        _firewall_plugin(spec, backend=firewall_backend),
        *(dict(p) for p in spec.extra_plugins),
        {"type": "loopback"},
    ]
    args: dict[str, Any] = {"pycni": dict(MANAGED_MARK)}
    if spec.labels:
        args["podman_labels"] = dict(spec.labels)
    if spec.options:
        args["podman_options"] = dict(spec.options)
    return {"cniVersion": CNI_VERSION, "cniVersions": list(CNI_VERSIONS), "name": spec.name,
            "args": args, "plugins": plugins}


# ------------------------------------------------------------------------ the way back


@dataclass(frozen=True, slots=True, kw_only=True)
class SubnetView:
    subnet: str
    gateway: str = ""
    ip_range: str = ""  # "start-end" when the range is narrower than the subnet


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkView:
    """What `ls` and `inspect` show of any conflist, ours or not."""

    name: str
    driver: str
    bridge: str = ""
    subnets: tuple[SubnetView, ...] = ()
    ipam_driver: str = ""
    ipam_data_dir: str = ""
    internal: bool = False
    managed: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    options: tuple[tuple[str, str], ...] = ()

    @property
    def ipv6(self) -> bool:
        return any(":" in s.subnet for s in self.subnets)

    def networks(self) -> list[IPNetwork]:
        return [ipaddress.ip_network(s.subnet, strict=False) for s in self.subnets]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(doc: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(doc, Mapping):
        return ()
    return tuple((str(k), v) for k, v in doc.items() if isinstance(v, str))


def _subnet_views(ipam: Mapping[str, Any]) -> tuple[SubnetView, ...]:
    """host-local's ``ranges`` (and its legacy top-level ``subnet``), unparsable ones skipped."""
    sets = ipam.get("ranges")
    items = [r for s in sets if isinstance(s, list) for r in s if isinstance(r, Mapping)] \
        if isinstance(sets, list) else []
    if isinstance(ipam.get("subnet"), str):
        items.insert(0, ipam)
    views = []
    for item in items:
        try:
            subnet = ipaddress.ip_network(str(item.get("subnet")), strict=False)
        except ValueError:
            continue
        start, end = item.get("rangeStart"), item.get("rangeEnd")
        views.append(SubnetView(
            subnet=str(subnet),
            gateway=str(item.get("gateway") or ""),
            ip_range=f"{start or ''}-{end or ''}" if start or end else "",
        ))
    return tuple(views)


def _internal(first: Mapping[str, Any], firewall: Mapping[str, Any]) -> bool:
    """Ours says so in the firewall; podman's CNI backend marks it with no gateway."""
    no_gateway = first.get("type") == "bridge" and first.get("isGateway") is False
    return firewall.get("internal") is True or no_gateway


def _managed(mark: Any) -> bool:
    return isinstance(mark, Mapping) and mark.get("createdBy") == MANAGED_MARK["createdBy"]


def view_of(conflist: NetworkConfigList, args: Any) -> NetworkView:
    """What a loadable conflist says (``args``: its top-level ``args``, where labels live)."""
    plugins = conflist.plugins
    first = plugins[0]
    ipam = _mapping(first.get("ipam"))
    firewall = next((p for p in plugins if p.get("type") == "firewall"), {})
    args = _mapping(args)
    is_bridge = first.get("type") == "bridge"
    return NetworkView(
        name=conflist.name,
        driver=str(first.get("type", "")),
        bridge=str(first.get("bridge") or _DEFAULT_BRIDGE) if is_bridge else "",
        subnets=_subnet_views(ipam),
        ipam_driver=str(ipam.get("type", "")),
        ipam_data_dir=str(ipam.get("dataDir") or ""),
        internal=_internal(first, firewall),
        managed=_managed(args.get("pycni")),
        labels=_strings(args.get("podman_labels")),
        options=_strings(args.get("podman_options")),
    )
