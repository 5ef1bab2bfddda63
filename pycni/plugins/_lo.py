"""Loopback handling shared by the `loopback` and `none` plugins."""

from __future__ import annotations

import ipaddress
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.handle import NetNS
from pycni.cni.types import Interface, IPConfig, Result
from pycni.net import addrs, links
from pycni.net.ipr import open_ipr

__all__ = ["LO", "loopback_result", "set_lo", "validate_lo_up"]

LO = "lo"
# The kernel makes every network namespace's loopback device first, as ifindex 1
# (LOOPBACK_IFINDEX, include/net/net_namespace.h): no lookup by name, whose decoded link
# message was ~1.3 ms of every loopback and none ADD.
LO_INDEX: Final = 1


def set_lo(netns: NetNS, *, up: bool) -> list[str]:
    """Set lo up or down inside the netns; return its addresses (CIDR)."""
    with open_ipr(netns) as ipr:
        if not up:
            links.set_down(ipr, LO_INDEX)
            return []
        stray = [
            c
            for c in addrs.list_addresses(ipr, LO_INDEX, all_scopes=True)
            if not ipaddress.ip_interface(c).is_loopback
        ]
        if stray:
            raise CNIError(
                ErrorCode.INTERNAL, "lo carries non-loopback addresses", ", ".join(stray)
            )
        links.set_up(ipr, LO_INDEX)
        # The kernel adds 127.0.0.1/8 and ::1/128 when lo comes up.
        return addrs.list_addresses(ipr, LO_INDEX, all_scopes=True)


def validate_lo_up(netns: NetNS) -> None:
    with open_ipr(netns) as ipr:
        link = links.get_link(ipr, LO)
        if link is None or not link.up:
            raise CNIError(ErrorCode.INTERNAL, f"lo is not up in {netns}")


def loopback_result(cni_version: str, netns_path: str, cidrs: list[str]) -> Result:
    # The reference reports the first IPv4 and the first IPv6 loopback address.
    first: dict[int, str] = {}
    for cidr in cidrs:
        first.setdefault(ipaddress.ip_interface(cidr).version, cidr)
    return Result(
        cni_version=cni_version,
        interfaces=(Interface(name=LO, mac="00:00:00:00:00:00", sandbox=netns_path),),
        ips=tuple(IPConfig(address=first[v], interface=0) for v in sorted(first)),
    )
