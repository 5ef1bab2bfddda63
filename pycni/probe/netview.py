"""The namespace as the probe needs it, read over netlink from inside it (the caller has
entered the netns): interfaces, the default gateway, and the kernel's route to an address.

The kernel's route lookup (RTM_GETROUTE) decides the interface, source address and next hop,
so scapy's own route and interface caches (filled in whatever namespace scapy was imported)
are never consulted.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net import addrs, links
from pycni.net.ipr import IPR, translate_netlink_error
from pycni.probe.report import InterfaceView

__all__ = ["Hop", "default_gateway", "netns_id", "read_interfaces", "route_to"]

_RTN_LOCAL = 2
_NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL, errno.EACCES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    """How the kernel would send to ``address``: out of ``iface`` from ``source`` via
    ``next_hop`` (the address itself when on-link); ``local`` when it is our own address."""

    address: str
    iface: str
    index: int
    source: str
    next_hop: str
    mac: str
    mtu: int
    local: bool = False


def netns_id(path: str) -> str:
    """``net:[inode]``: two paths to one namespace give the same id."""
    return f"net:[{os.stat(path).st_ino}]"


def read_interfaces(ipr: IPR) -> tuple[InterfaceView, ...]:
    with translate_netlink_error("list links"):
        indexes = sorted(int(msg["index"]) for msg in ipr.get_links())
    views = []
    for index in indexes:
        link = links.get_link_by_index(ipr, index)
        if link is None:
            continue
        views.append(
            InterfaceView(
                name=link.name,
                index=index,
                mac=link.mac,
                mtu=link.mtu,
                up=link.up,
                addresses=tuple(addrs.list_addresses(ipr, index, all_scopes=link.name == "lo")),
            )
        )
    return tuple(views)


def default_gateway(ipr: IPR, version: int = 4) -> str | None:
    """The gateway of the main table's default route, if there is one."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with translate_netlink_error("list routes"):
        msgs = list(ipr.route("dump", family=family, table=254))
    for msg in msgs:
        gateway = msg.get_attr("RTA_GATEWAY")
        if msg["dst_len"] == 0 and gateway:
            return str(gateway)
    return None


def route_to(ipr: IPR, address: str) -> Hop | None:
    """The kernel's route to ``address``; None when there is none (ENETUNREACH...)."""
    try:
        msg = ipr.route("get", dst=address)[0]
    except NetlinkError as err:
        if err.code in _NO_ROUTE:
            return None
        raise
    index = int(msg.get_attr("RTA_OIF") or 0)
    link = links.get_link_by_index(ipr, index) if index else None
    if link is None:
        return None
    local = msg["type"] == _RTN_LOCAL
    source = str(msg.get_attr("RTA_PREFSRC") or (address if local else ""))
    if not source:
        v = ipaddress.ip_address(address).version
        family = socket.AF_INET if v == 4 else socket.AF_INET6
        found = addrs.list_addresses(ipr, index, family=family)
        source = found[0].split("/")[0] if found else ""
    return Hop(
        address=address,
        iface=link.name,
        index=index,
        source=source,
        next_hop=str(msg.get_attr("RTA_GATEWAY") or address),
        mac=link.mac,
        mtu=link.mtu,
        local=local,
    )
