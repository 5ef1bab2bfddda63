"""A veth pair across namespaces: created in one request with its peer born in the
container's netns, and found again from the container's end.

Every function takes ``IPRoute`` handles from ``pycni.net.ipr.open_ipr`` bound to the
namespace they act in, and raises ``CNIError`` (never a pyroute2 error).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from pycni.cni.errors import CNIError, ErrorCode
from pycni.net import links, netns
from pycni.net.ipr import IPR, open_ipr, translate_netlink_error
from pycni.net.links import LinkInfo
from pycni.net.netns import NetNSRef

__all__ = [
    "ContainerIfnameExists",
    "HostVethNameTaken",
    "VethPair",
    "create_veth",
    "find_veth_peer_in",
]


@dataclass(frozen=True)
class VethPair:
    host: LinkInfo
    container: LinkInfo


class HostVethNameTaken(CNIError):
    """The host-side veth name is in use: pick another name and retry."""

    def __init__(self, name: str) -> None:
        super().__init__(ErrorCode.INTERNAL, f"host veth name {name} already exists")
        self.name = name


class ContainerIfnameExists(CNIError):
    """CNI_IFNAME already exists in the container: the spec says ADD must fail, not reuse it."""

    def __init__(self, name: str, netns_path: str) -> None:
        super().__init__(
            ErrorCode.INTERNAL, f"container veth name {name} already exists", f"in {netns_path}"
        )
        self.name = name


def _veth_request(
    *, host_ifname: str, container_ifname: str, ns_fd: int, mtu: int | None, mac: str | None
) -> dict[str, Any]:
    # The peer is born inside the container netns (IFLA_NET_NS_FD): no window where it
    # sits in the host netns under a name that might clash there.
    peer: dict[str, Any] = {"ifname": container_ifname, "net_ns_fd": ns_fd}
    request: dict[str, Any] = {"ifname": host_ifname, "kind": "veth", "peer": peer}
    if mtu is not None:
        peer["mtu"] = mtu
        request["mtu"] = mtu
    if mac is not None:
        peer["address"] = mac.lower()
    return request


def _add_veth(
    host_ipr: IPR,
    *,
    host_ifname: str,
    container_ifname: str,
    container_netns: NetNSRef,
    mtu: int | None,
    mac: str | None,
) -> bool:
    """Send the one RTM_NEWLINK; False if the kernel said EEXIST (for one end or the other)."""
    with netns.held(container_netns) as ns_fd:
        request = _veth_request(
            host_ifname=host_ifname,
            container_ifname=container_ifname,
            ns_fd=ns_fd,
            mtu=mtu,
            mac=mac,
        )
        with translate_netlink_error(f"create veth {host_ifname}"):
            try:
                host_ipr.link("add", **request)
            except NetlinkError as err:
                if err.code == errno.EEXIST:
                    return False
                raise
    return True


def _name_clash(
    host_ipr: IPR, container_ipr: IPR, *, host: str, container: str, ns: NetNSRef
) -> CNIError:
    """EEXIST does not say which end clashed: look both names up to tell the caller. The
    container end first: a taken CNI_IFNAME fails the ADD whatever the host side holds."""
    if links.link_exists(container_ipr, container):
        return ContainerIfnameExists(container, str(ns))
    if links.link_exists(host_ipr, host):
        return HostVethNameTaken(host)
    return CNIError(ErrorCode.INTERNAL, f"create veth {host}: name clash that went away")


def _validate_veth_args(host_ifname: str, container_ifname: str, mac: str | None) -> None:
    links.validate_ifname(host_ifname)
    links.validate_ifname(container_ifname)
    if mac is not None and not links.MAC_RE.match(mac):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid MAC address {mac!r}")


def create_veth(
    host_ipr: IPR,
    *,
    host_ifname: str,
    container_ifname: str,
    container_netns: NetNSRef,
    mtu: int | None = None,
    container_mac: str | None = None,
    container_ipr: IPR | None = None,
) -> VethPair:
    """Create a veth pair in one request: ``host_ifname`` in ``host_ipr``'s netns and its peer
    ``container_ifname`` directly in ``container_netns``. Both ends are left down.

    ``container_ipr``, a handle already bound to ``container_netns``, saves opening one.
    ``ContainerIfnameExists`` if the container already has that name; ``HostVethNameTaken``
    if only the host name is in use (retry with another name): the kernel's EEXIST tells a
    clash, the names are looked up only then. ``NetNSNotFound`` if the container netns is gone.
    """
    _validate_veth_args(host_ifname, container_ifname, container_mac)

    def create_with(cipr: IPR) -> VethPair:
        return _create_veth_with(
            host_ipr,
            cipr,
            host_ifname=host_ifname,
            container_ifname=container_ifname,
            container_netns=container_netns,
            mtu=mtu,
            mac=container_mac,
        )

    if container_ipr is not None:
        return create_with(container_ipr)
    with open_ipr(container_netns) as cipr:
        return create_with(cipr)


def _create_veth_with(
    host_ipr: IPR,
    cipr: IPR,
    *,
    host_ifname: str,
    container_ifname: str,
    container_netns: NetNSRef,
    mtu: int | None,
    mac: str | None,
) -> VethPair:
    created = _add_veth(
        host_ipr,
        host_ifname=host_ifname,
        container_ifname=container_ifname,
        container_netns=container_netns,
        mtu=mtu,
        mac=mac,
    )
    if not created:
        raise _name_clash(
            host_ipr, cipr, host=host_ifname, container=container_ifname, ns=container_netns
        )
    return _read_pair(host_ipr, cipr, host_ifname, container_ifname)


def _read_pair(host_ipr: IPR, cipr: IPR, host_ifname: str, container_ifname: str) -> VethPair:
    host = links.get_link(host_ipr, host_ifname)
    container = links.get_link(cipr, container_ifname)
    if host is None or container is None:
        # Someone deleted an end under us; removing either end removes both.
        links.delete_link(host_ipr, host_ifname)
        raise CNIError(ErrorCode.INTERNAL, f"veth {host_ifname} vanished right after creation")
    return VethPair(host=host, container=container)


def find_veth_peer_in(host_ipr: IPR, container_link: LinkInfo) -> LinkInfo | None:
    """The link in ``host_ipr``'s netns that is the other end of ``container_link``.

    IFLA_LINK of a veth is the peer's index in the peer's own netns; checking the candidate's
    own IFLA_LINK back guards against an unrelated link that happens to share the index.
    """
    if container_link.peer_index is None:
        return None
    candidate = links.get_link_by_index(host_ipr, container_link.peer_index)
    if candidate is None or candidate.kind != "veth":
        return None
    if candidate.peer_index != container_link.index:
        return None
    return candidate
