"""What the network manager reads and changes in the caller's network namespace (pyroute2):
the prefixes a new subnet must not shadow, the link names a bridge must not take, and the
removal of a network's bridge. Imported only by the commands that need the kernel."""

from __future__ import annotations

import ipaddress

from pycni.net import addrs, links
from pycni.net.ipr import open_ipr
from pycni.network.subnets import IPNetwork

__all__ = ["host_links", "host_prefixes", "remove_bridge"]


def host_prefixes() -> tuple[IPNetwork, ...]:
    """Every prefix the host routes (any table but local, no default route) or has an
    address in (``192.168.1.5/24`` counts as ``192.168.1.0/24``)."""
    with open_ipr() as ipr:
        cidrs = addrs.list_routed_prefixes(ipr) + addrs.list_all_addresses(ipr)
    found = {ipaddress.ip_interface(c).network for c in cidrs}
    return tuple(sorted(found, key=lambda n: (n.version, int(n.network_address), n.prefixlen)))


def host_links() -> frozenset[str]:
    with open_ipr() as ipr:
        return frozenset(links.list_link_names(ipr))


def remove_bridge(name: str) -> bool:
    """Delete the bridge; False if it was not there."""
    with open_ipr() as ipr:
        return links.delete_link(ipr, name)
