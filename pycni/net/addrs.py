"""Addresses and routes on a link, as CIDR strings and ``RouteInfo`` dataclasses.

Adds are idempotent (EEXIST is success: a retried or concurrent ADD must not fail), deletes of
something absent are no-ops (DEL semantics). Handles come from ``pycni.net.ipr.open_ipr``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from pyroute2.netlink.exceptions import NetlinkError

from pycni.cni.errors import CNIError, ErrorCode
from pycni.net.ipr import IPR, translate_netlink_error

__all__ = [
    "RouteInfo",
    "add_address",
    "add_route",
    "delete_address",
    "delete_route",
    "list_addresses",
    "list_all_addresses",
    "list_routed_prefixes",
    "list_routes",
    "parse_cidr",
    "wait_addresses_settled",
]

IFA_F_NODAD: Final = 0x02
IFA_F_DADFAILED: Final = 0x08
IFA_F_TENTATIVE: Final = 0x40
RT_SCOPE_UNIVERSE: Final = 0
RT_TABLE_MAIN: Final = 254
RT_TABLE_LOCAL: Final = 255

RT_SCOPE_NOWHERE: Final = 255  # in a delete request: match a route of any scope
# A default route has no RTA_DST; these are what RouteInfo.dst shows then ("0.0.0.0/0", "::/0").
_UNSPECIFIED: Final = {
    socket.AF_INET: ipaddress.IPv4Address(0),
    socket.AF_INET6: ipaddress.IPv6Address(0),
}

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RouteInfo:
    """One route; ``dst`` is always a CIDR ("0.0.0.0/0" / "::/0" for the default route)."""

    dst: str
    gateway: str | None
    index: int | None  # RTA_OIF
    priority: int | None
    table: int
    scope: int
    mtu: int | None = None  # RTAX_MTU metric
    advmss: int | None = None  # RTAX_ADVMSS metric


def parse_cidr(cidr: str) -> Interface:
    """An address with its prefix ("10.1.0.5/24"); ``CNIError`` code 7 if malformed."""
    try:
        return ipaddress.ip_interface(cidr)
    except ValueError as err:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid CIDR {cidr!r}") from err


def _parse_network(cidr: str) -> Network:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as err:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid CIDR {cidr!r}") from err


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


# ---------------------------------------------------------------------------- addresses


def _addr_request(iface: Interface, nodad: bool) -> dict[str, Any]:
    request: dict[str, Any] = {
        "address": str(iface.ip),
        "prefixlen": iface.network.prefixlen,
        "family": _family(iface.version),
    }
    if iface.version == 4 and iface.network.prefixlen < 31:
        # What netlink libraries (and `ip addr add ... brd +`) do: set the broadcast address,
        # so the container answers subnet broadcasts like a normally configured host.
        request["broadcast"] = str(iface.network.broadcast_address)
    if iface.version == 6 and nodad:
        request["flags"] = IFA_F_NODAD
    return request


def add_address(ipr: IPR, index: int, cidr: str, *, nodad: bool = False) -> bool:
    """Add ``cidr`` to link ``index``; already present is success (False: it was there, True:
    added now). ``nodad`` (IPv6 only) skips duplicate address detection, so the address is
    usable at once instead of tentative."""
    request = _addr_request(parse_cidr(cidr), nodad)
    with translate_netlink_error(f"add address {cidr} to link #{index}", link=f"#{index}"):
        try:
            ipr.addr("add", index=index, **request)
        except NetlinkError as err:
            if err.code != errno.EEXIST:
                raise
            return False
    return True


def _dump_addresses(ipr: IPR, index: int, family: int | None) -> Iterator[Any]:
    query: dict[str, Any] = {"index": index}
    if family is not None:
        query["family"] = family
    with translate_netlink_error(f"list addresses of link #{index}"):
        msgs = list(ipr.addr("dump", **query))
    # The dump filter is applied by pyroute2 in userspace; check again to be sure.
    return (m for m in msgs if m["index"] == index)


def list_addresses(
    ipr: IPR, index: int, *, family: int | None = None, all_scopes: bool = False
) -> list[str]:
    """Global-scope addresses of link ``index`` as CIDR strings ("10.1.0.5/24", "fd00::5/64");
    with ``all_scopes`` also host- and link-scope ones (lo's 127.0.0.1/8, fe80::/64).

    ``family`` is ``socket.AF_INET`` / ``socket.AF_INET6`` or None for both.
    """
    return [
        f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
        for m in _dump_addresses(ipr, index, family)
        if all_scopes or m["scope"] == RT_SCOPE_UNIVERSE
    ]


def delete_address(ipr: IPR, index: int, cidr: str) -> None:
    """Remove ``cidr`` from link ``index``; absent (address or link) is not an error."""
    iface = parse_cidr(cidr)
    with translate_netlink_error(f"delete address {cidr} from link #{index}"):
        try:
            ipr.addr(
                "del",
                index=index,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                family=_family(iface.version),
            )
        except NetlinkError as err:
            if err.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                raise


def _addr_flags(msg: Any) -> int:
    # IFA_FLAGS (32 bits) supersedes the 8-bit header field when the kernel sends it.
    value = msg.get_attr("IFA_FLAGS")
    return int(value if value is not None else msg["flags"])


def wait_addresses_settled(ipr: IPR, index: int, *, timeout: float = 5.0) -> None:
    """Wait until no IPv6 address of link ``index`` is tentative (DAD done), as the reference
    plugin does before routing via an IPv6 gateway; ``CNIError`` on DAD failure or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        flags = [_addr_flags(m) for m in _dump_addresses(ipr, index, socket.AF_INET6)]
        if any(f & IFA_F_DADFAILED for f in flags):
            raise CNIError(ErrorCode.INTERNAL, f"duplicate address detected on link #{index}")
        if not any(f & IFA_F_TENTATIVE for f in flags):
            return
        if time.monotonic() >= deadline:
            raise CNIError(ErrorCode.INTERNAL, f"addresses on link #{index} still tentative")
        time.sleep(0.05)


# ---------------------------------------------------------------------------- routes


def _route_request(
    *,
    dst: Network,
    gateway: str | None,
    index: int,
    mtu: int | None,
    advmss: int | None,
    extra: dict[str, int | None],
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "family": _family(dst.version),
        "dst": str(dst.network_address),
        "dst_len": dst.prefixlen,
        "oif": index,
    }
    if gateway is not None:
        request["gateway"] = gateway
    metrics = {k: v for k, v in (("mtu", mtu), ("advmss", advmss)) if v is not None}
    if metrics:
        request["metrics"] = metrics
    request.update({k: v for k, v in extra.items() if v is not None})
    return request


def add_route(
    ipr: IPR,
    *,
    dst: str,
    gateway: str | None,
    index: int,
    mtu: int | None = None,
    advmss: int | None = None,
    priority: int | None = None,
    table: int | None = None,
    scope: int | None = None,
) -> None:
    """Add a route via link ``index`` (and ``gateway`` if given); already present is success."""
    network = _parse_network(dst)
    if gateway is not None and ipaddress.ip_address(gateway).version != network.version:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"gateway {gateway} is not in {dst}'s family"
        )
    request = _route_request(
        dst=network,
        gateway=gateway,
        index=index,
        mtu=mtu,
        advmss=advmss,
        extra={"priority": priority, "table": table, "scope": scope},
    )
    with translate_netlink_error(f"add route {dst} via link #{index}", link=f"#{index}"):
        try:
            ipr.route("add", **request)
        except NetlinkError as err:
            if err.code != errno.EEXIST:
                raise


def delete_route(
    ipr: IPR,
    *,
    dst: str,
    gateway: str | None = None,
    index: int | None = None,
    table: int | None = None,
) -> bool:
    """Delete a route; False when no such route exists (or its link is gone)."""
    network = _parse_network(dst)
    request: dict[str, Any] = {
        "family": _family(network.version),
        "dst": str(network.network_address),
        "dst_len": network.prefixlen,
        "scope": RT_SCOPE_NOWHERE,
    }
    for key, value in (("gateway", gateway), ("oif", index), ("table", table)):
        if value is not None:
            request[key] = value
    with translate_netlink_error(f"delete route {dst}"):
        try:
            ipr.route("del", **request)
        except NetlinkError as err:
            if err.code in (errno.ESRCH, errno.ENODEV, errno.ENOENT):
                return False
            raise
    return True


def _metric(msg: Any, name: str) -> int | None:
    metrics = msg.get_attr("RTA_METRICS")
    return None if metrics is None else metrics.get_attr(name)


def _to_route_info(msg: Any) -> RouteInfo:
    family = msg["family"]
    dst = msg.get_attr("RTA_DST") or str(_UNSPECIFIED[family])
    table = msg.get_attr("RTA_TABLE")
    return RouteInfo(
        dst=f"{dst}/{msg['dst_len']}",
        gateway=msg.get_attr("RTA_GATEWAY"),
        index=msg.get_attr("RTA_OIF"),
        priority=msg.get_attr("RTA_PRIORITY"),
        table=int(table if table is not None else msg["table"]),
        scope=int(msg["scope"]),
        mtu=_metric(msg, "RTAX_MTU"),
        advmss=_metric(msg, "RTAX_ADVMSS"),
    )


def list_routes(
    ipr: IPR, *, index: int | None = None, family: int | None = None, table: int = RT_TABLE_MAIN
) -> list[RouteInfo]:
    """Routes in ``table`` (main by default), optionally only those out of link ``index`` and
    of one address family (``socket.AF_INET`` / ``socket.AF_INET6``)."""
    query: dict[str, Any] = {"table": table}
    if family is not None:
        query["family"] = family
    with translate_netlink_error(f"list routes of table {table}"):
        msgs = list(ipr.route("dump", **query))
    routes = [_to_route_info(m) for m in msgs]
    return [r for r in routes if r.table == table and (index is None or r.index == index)]


def list_all_addresses(ipr: IPR) -> list[str]:
    """Every address of every link, any scope, as CIDR strings."""
    with translate_netlink_error("list addresses"):
        msgs = list(ipr.addr("dump"))
    return [f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}" for m in msgs]


def list_routed_prefixes(ipr: IPR) -> list[str]:
    """The destination of every route in every table but ``local`` (the namespace's own
    addresses and broadcasts), default routes left out: what the namespace sends somewhere
    specific (LAN, VPN, policy-routed tables), as CIDR strings."""
    with translate_netlink_error("list routes"):
        msgs = list(ipr.route("dump"))
    routes = (_to_route_info(m) for m in msgs)
    return [r.dst for r in routes if r.table != RT_TABLE_LOCAL and not r.dst.endswith("/0")]
