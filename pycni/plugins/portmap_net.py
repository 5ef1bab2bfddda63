"""Kernel side of `portmap` that is not firewall rules: conntrack flushes and route_localnet.

Both act in the calling thread's network namespace (the host's, where the plugin runs).
pyroute2 is untyped; ``Any`` stays in here.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection
from typing import Any, Final

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net import bridge_ports, links, sysctl
from pycni.net.ipr import open_ipr, translate_netlink_error

__all__ = ["enable_hairpin", "enable_route_localnet", "flush_udp_conntrack"]

_FAMILIES: Final = (socket.AF_INET, socket.AF_INET6)


def enable_route_localnet(container_ip: str) -> str:
    """Let 127.0.0.1-sourced packets DNATed to ``container_ip`` leave through the host
    interface that routes to it (the bridge); its name. Not undone: other attachments of the
    same network rely on it, as in the reference."""
    with open_ipr() as ipr, translate_netlink_error(f"route lookup for {container_ip}"):
        routes: Any = ipr.route("get", dst=container_ip)
        oif = routes[0].get_attr("RTA_OIF")
        name = str(ipr.get_links(oif)[0].get_attr("IFLA_IFNAME"))
    sysctl.ensure(sysctl.conf_key("ipv4", name, "route_localnet"), "1")
    return name


def enable_hairpin(host_ifnames: Collection[str]) -> str | None:
    """Turn hairpin mode on for the first of ``host_ifnames`` that is a bridge port (the
    container's host veth); its name. Needed for a container to reach its own published
    port: with br_netfilter the DNATed frame goes back out the port it came in on, which a
    bridge refuses otherwise (Docker does the same when its proxy is off). Isolation is kept.
    """
    with open_ipr() as ipr:
        for name in host_ifnames:
            link = links.get_link(ipr, name)
            if link is None or link.master is None:
                continue
            port = bridge_ports.get_bridge_port(ipr, link.index)
            if port is None:
                continue
            if not port.hairpin:
                bridge_ports.set_bridge_port(ipr, link.index, hairpin=True, isolated=port.isolated)
            return name
    return None


def _stale(entry: Any, ports: Collection[int], ips: Collection[str]) -> bool:
    return bool(entry.tuple_orig.dport in ports or entry.tuple_reply.saddr in ips)


def flush_udp_conntrack(host_ports: Collection[int], container_ips: Collection[str] = ()) -> int:
    """Delete UDP conntrack entries whose original destination port is one of ``host_ports``
    (so the next datagram is DNATed afresh, not sent to a dead container: field failure #7),
    and those whose reply comes from one of ``container_ips``. One filtered dump per family.
    Returns how many entries were deleted; ``CNIError`` if conntrack cannot be reached."""
    if not host_ports and not container_ips:
        return 0
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    deleted = 0
    with translate_netlink_error("conntrack flush"):
        ct: Any = Conntrack()
        try:
            for family in _FAMILIES:
                match = NFCTAttrTuple(family=family, proto=socket.IPPROTO_UDP)
                stale = [e for e in ct.dump_entries(tuple_orig=match)
                         if _stale(e, host_ports, container_ips)]
                for entry in stale:
                    try:
                        ct.delete(entry)
                    except NetlinkError as err:
                        if err.code != errno.ENOENT:  # else it expired meanwhile
                            raise
                    else:
                        deleted += 1
        finally:
            ct.close()
    return deleted
