"""Configure a container's interface from a CNI result: sysctls, addresses, link up, routes.

Called with a netlink handle bound to the container netns; sysctls under /proc/sys/net are
per-netns and are written from inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from pycni.cni.errors import CNIError
from pycni.cni.types import IPConfig, Route
from pycni.net import addrs, links, netns, sysctl
from pycni.net.ipr import IPR
from pycni.net.netns import NetNSRef

__all__ = ["configure_interface", "set_interface_sysctls"]


def _try_sysctl(key: str, value: str) -> None:
    # IPv6 may be disabled on the machine (no /proc/sys/net/ipv6): that is not our error.
    with contextlib.suppress(CNIError):
        sysctl.ensure(key, value)


def set_interface_sysctls(ifname: str, *, has_ipv6: bool, enable_dad: bool) -> None:
    """Run inside the container netns. DAD off by default: the bridge segment is private, and
    DAD would leave fresh IPv6 addresses tentative for 1-3 s (plugins#680)."""
    sysctl.ensure(sysctl.conf_key("ipv4", ifname, "arp_notify"), "1")
    if not has_ipv6:
        return
    for name in ("lo", ifname):
        _try_sysctl(sysctl.conf_key("ipv6", name, "disable_ipv6"), "0")
    _try_sysctl(sysctl.conf_key("ipv6", ifname, "keep_addr_on_down"), "1")
    if enable_dad:
        _try_sysctl(sysctl.conf_key("ipv6", ifname, "enhanced_dad"), "1")
        _try_sysctl(sysctl.conf_key("ipv6", ifname, "accept_dad"), "1")
    else:
        _try_sysctl(sysctl.conf_key("ipv6", ifname, "accept_dad"), "0")


def configure_interface(
    ipr: IPR,
    *,
    container_netns: NetNSRef,
    link: links.LinkInfo,
    ips: Sequence[IPConfig],
    routes: Sequence[Route],
    enable_dad: bool = False,
) -> None:
    """Give ``link`` its addresses, bring it up and add ``routes`` (gw defaulting per family)."""
    has_ipv6 = any(ip.family == 6 for ip in ips)
    with netns.enter(container_netns):
        set_interface_sysctls(link.name, has_ipv6=has_ipv6, enable_dad=enable_dad)
    for ip in ips:
        addrs.add_address(ipr, link.index, ip.address, nodad=not enable_dad)
    links.set_up(ipr, link.index)
    if has_ipv6 and enable_dad:
        addrs.wait_addresses_settled(ipr, link.index)
    gateways = {ip.family: ip.gateway for ip in ips if ip.gateway}
    for route in routes:
        family = 6 if ":" in route.dst else 4
        addrs.add_route(
            ipr,
            dst=route.dst,
            gateway=route.gw or gateways.get(family),
            index=link.index,
            mtu=route.mtu,
            advmss=route.advmss,
            priority=route.priority,
            table=route.table,
            scope=route.scope,
        )
