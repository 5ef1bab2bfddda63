"""A veth pair across namespaces: created in one request with its peer born in the
container's netns (and nothing read back: ``create_veth``), and found again from the
container's end.

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
    *, host_ifname: str, container_ifname: str, ns_fd: int, mtu: int | None, mac: str,
    master: int | None, up: bool,
) -> dict[str, Any]:
    # The peer is born inside the container netns (IFLA_NET_NS_FD): no window where it
    # sits in the host netns under a name that might clash there.
    peer: dict[str, Any] = {"ifname": container_ifname, "net_ns_fd": ns_fd, "address": mac}
    request: dict[str, Any] = {"ifname": host_ifname, "kind": "veth", "peer": peer}
    if mtu is not None:
        peer["mtu"] = mtu
        request["mtu"] = mtu
    if master is not None:
        request["master"] = master
    if up:
        request["state"] = "up"
    return request


def _add_veth(
    host_ipr: IPR,
    *,
    host_ifname: str,
    container_ifname: str,
    container_netns: NetNSRef,
    mtu: int | None,
    mac: str,
    master: int | None,
    up: bool,
) -> tuple[bool, LinkInfo | None]:
    """Send the one RTM_NEWLINK: (False, None) if the kernel said EEXIST (for one end or the
    other), else (True, the host end as the kernel echoed it, None if it did not)."""
    with netns.held(container_netns) as ns_fd:
        request = _veth_request(host_ifname=host_ifname, container_ifname=container_ifname,
                                ns_fd=ns_fd, mtu=mtu, mac=mac, master=master, up=up)
        with translate_netlink_error(f"create veth {host_ifname}"):
            try:
                return True, links.add_link(host_ipr, **request)
            except NetlinkError as err:
                if err.code == errno.EEXIST:
                    return False, None
                raise


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
    master: int | None = None,
    up: bool = False,
) -> VethPair:
    """Create a veth pair in one request: ``host_ifname`` in ``host_ipr``'s netns and its peer
    ``container_ifname`` directly in ``container_netns``, left down. The host end is made a
    port of bridge ``master`` and up, if asked, in that same request.

    The container end gets ``container_mac`` or a random MAC of ours (the kernel's would be
    just as random), so that nothing of it has to be read back: its index is the host end's
    IFLA_LINK, its MTU the host end's (``mtu`` or the default, the same for both ends). The
    host end is the kernel's echo of the request (``links.add_link``), read back only from a
    kernel that does not echo; either way its ``master`` is as before the request's.

    ``container_ipr``, a handle already bound to ``container_netns``, saves opening one when a
    name clashes: ``ContainerIfnameExists`` if the container already has that name;
    ``HostVethNameTaken`` if only the host name is in use (retry with another name): the
    kernel's EEXIST tells a clash, the names are looked up only then. ``NetNSNotFound`` if the
    container netns is gone.
    """
    _validate_veth_args(host_ifname, container_ifname, container_mac)
    mac = container_mac.lower() if container_mac else links.random_mac()
    created, host = _add_veth(
        host_ipr,
        host_ifname=host_ifname,
        container_ifname=container_ifname,
        container_netns=container_netns,
        mtu=mtu,
        mac=mac,
        master=master,
        up=up,
    )
    if not created:
        if container_ipr is not None:
            raise _name_clash(host_ipr, container_ipr, host=host_ifname,
                              container=container_ifname, ns=container_netns)
        with open_ipr(container_netns) as cipr:
            raise _name_clash(host_ipr, cipr, host=host_ifname, container=container_ifname,
                              ns=container_netns)
    if host is None:  # a kernel that does not echo a new link
        host = links.get_link(host_ipr, host_ifname)
    if host is None or host.peer_index is None:
        # Someone deleted an end under us; removing either end removes both.
        links.delete_link(host_ipr, host_ifname)
        raise CNIError(ErrorCode.INTERNAL, f"veth {host_ifname} vanished right after creation")
    return VethPair(host=host, container=_container_end(host, container_ifname, mac))


def _container_end(host: LinkInfo, name: str, mac: str) -> LinkInfo:
    """The container end as ``create_veth`` made it (see there), from the host end."""
    assert host.peer_index is not None
    return LinkInfo(index=host.peer_index, name=name, kind="veth", mac=mac, mtu=host.mtu,
                    master=None, peer_index=host.index, up=False, promisc=False,
                    operstate="DOWN")


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
