"""Any conflist read back as a ``NetworkView``: what `ls` and `inspect` show of it.

Our own conflists (``pycni.network.render``) and other tools' alike: the first plugin's type
is the driver, its ``bridge`` and host-local ``ranges`` give the bridge and subnets, the
top-level ``args`` the labels and options (``podman_labels``, ``podman_options``) and the
mark of a network `pycni network create` made (``args.pycni``). Names resolve on a network whose
chain has a `pycni-dns` (or containers/dnsname's `dnsname`) plugin: its ``domainName`` and
``runDir`` (where its records are) are part of the view.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pycni.cni.conf import NetworkConfigList

if TYPE_CHECKING:  # a type only: `ls` imports no subnet picker
    from pycni.network.subnets import IPNetwork

__all__ = ["DNS_PLUGIN_TYPES", "MANAGED_MARK", "DnsView", "NetworkView", "SubnetView", "view_of"]

MANAGED_MARK: Final = {"createdBy": "pycni network create", "version": 1}
# The name-resolution plugin's types, and the domain each uses without a domainName
# (``pycni.plugins.dns_conf``'s; a unit test holds them equal: `ls` imports no plugin code).
DNS_PLUGIN_TYPES: Final = {"pycni-dns": "", "dnsname": "dns.podman"}
_DEFAULT_BRIDGE: Final = "pycni0"  # what the `bridge` plugin here uses without a `bridge` key


@dataclass(frozen=True, slots=True, kw_only=True)
class SubnetView:
    subnet: str
    gateway: str = ""
    ip_range: str = ""  # "start-end" when the range is narrower than the subnet


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsView:
    """The chain's name-resolution plugin."""

    domain: str = ""
    run_dir: str = ""  # "" = the plugin's default


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
    dns: DnsView | None = None  # None: names do not resolve on this network

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


def _dns_view(plugins: Any) -> DnsView | None:
    plugin = next((p for p in plugins if p.get("type") in DNS_PLUGIN_TYPES), None)
    if plugin is None:
        return None
    domain, run_dir = plugin.get("domainName"), plugin.get("runDir")
    return DnsView(
        domain=domain if isinstance(domain, str) and domain else DNS_PLUGIN_TYPES[plugin["type"]],
        run_dir=run_dir if isinstance(run_dir, str) else "",
    )


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
        dns=_dns_view(plugins),
    )
