"""Links: read them as ``LinkInfo``, ensure a bridge, create a veth pair across namespaces,
wire a bridge port (master, hairpin, isolation, access VLAN) and delete links.

Every function takes an ``IPRoute`` handle from ``pycni.net.ipr.open_ipr`` bound to the
namespace it acts in, and raises ``CNIError`` (never a pyroute2 error).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from pyroute2.netlink.exceptions import NetlinkError

from pycni.cni.errors import CNIError, ErrorCode
from pycni.digest import sha256_hex
from pycni.net import netns
from pycni.net.ipr import IPR, open_ipr, translate_netlink_error
from pycni.net.netns import NetNSRef

__all__ = [
    "BridgePortInfo",
    "BridgeVlan",
    "BridgeVlanUnsupported",
    "ContainerIfnameExists",
    "HostVethNameTaken",
    "LinkInfo",
    "VethPair",
    "bridge_vlan_filtering",
    "create_veth",
    "delete_link",
    "ensure_bridge",
    "find_veth_peer_in",
    "get_bridge_port",
    "get_bridge_port_vlans",
    "get_link",
    "get_link_by_index",
    "host_veth_name",
    "list_link_names",
    "random_host_veth_name",
    "random_mac",
    "set_bridge_port",
    "set_bridge_port_vlan",
    "set_mac",
    "set_master",
    "set_promisc",
    "set_up",
    "validate_ifname",
    "wait_oper_up",
]

IFF_UP: Final = 0x1
IFF_PROMISC: Final = 0x100
IFNAMSIZ: Final = 16
DEFAULT_VLAN: Final = 1
# bridge_vlan_info flags (linux/if_bridge.h)
BRIDGE_VLAN_INFO_PVID: Final = 0x2
BRIDGE_VLAN_INFO_UNTAGGED: Final = 0x4
RTEXT_FILTER_BRVLAN: Final = 0x2

_MAC_RE: Final = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True)
class LinkInfo:
    """One network interface as the kernel reports it."""

    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND: "bridge", "veth"...; None for lo and physical NICs
    mac: str
    mtu: int
    master: int | None  # ifindex of the bridge this link is a port of
    peer_index: int | None  # IFLA_LINK: for a veth, the peer's index (possibly in another netns)
    up: bool  # administratively up (IFF_UP)
    promisc: bool  # promiscuous mode requested by userspace (not the bridge-port count)
    operstate: str  # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN"...


@dataclass(frozen=True)
class VethPair:
    host: LinkInfo
    container: LinkInfo


@dataclass(frozen=True)
class BridgePortInfo:
    hairpin: bool
    isolated: bool


@dataclass(frozen=True)
class BridgeVlan:
    vid: int
    pvid: bool
    untagged: bool


class HostVethNameTaken(CNIError):
    """The host-side veth name is in use: pick another name and retry."""

    def __init__(self, name: str) -> None:
        super().__init__(ErrorCode.INTERNAL, f"host veth name {name} already exists")
        self.name = name


class BridgeVlanUnsupported(CNIError):
    """The kernel was built without CONFIG_BRIDGE_VLAN_FILTERING (netlink says EOPNOTSUPP)."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            ErrorCode.INTERNAL,
            f"{operation} failed",
            "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)",
        )


class ContainerIfnameExists(CNIError):
    """CNI_IFNAME already exists in the container: the spec says ADD must fail, not reuse it."""

    def __init__(self, name: str, netns_path: str) -> None:
        super().__init__(
            ErrorCode.INTERNAL, f"container veth name {name} already exists", f"in {netns_path}"
        )
        self.name = name


# ---------------------------------------------------------------------------- reading


def _nested(msg: Any, *path: str) -> Any:
    """Walk nested NLAs (``IFLA_LINKINFO`` -> ``IFLA_INFO_DATA`` ...); None when absent."""
    node = msg
    for attr in path:
        if node is None:
            return None
        node = node.get_attr(attr)
    return node


def _to_link_info(msg: Any) -> LinkInfo:
    flags = int(msg["flags"])
    return LinkInfo(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        kind=_nested(msg, "IFLA_LINKINFO", "IFLA_INFO_KIND"),
        mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        master=msg.get_attr("IFLA_MASTER"),
        peer_index=msg.get_attr("IFLA_LINK"),
        up=bool(flags & IFF_UP),
        promisc=bool(flags & IFF_PROMISC),
        operstate=str(msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN"),
    )


def _get_msg(ipr: IPR, what: str, **query: Any) -> Any:
    """The RTM_NEWLINK message for one link, or None when the kernel says ENODEV."""
    with translate_netlink_error(f"get link {what}"):
        try:
            return ipr.link("get", **query)[0]
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return None
            raise


def get_link(ipr: IPR, name: str) -> LinkInfo | None:
    msg = _get_msg(ipr, name, ifname=name)
    return None if msg is None else _to_link_info(msg)


def get_link_by_index(ipr: IPR, index: int) -> LinkInfo | None:
    msg = _get_msg(ipr, f"#{index}", index=index)
    return None if msg is None else _to_link_info(msg)


def list_link_names(ipr: IPR) -> list[str]:
    with translate_netlink_error("list links"):
        return [str(msg.get_attr("IFLA_IFNAME")) for msg in ipr.link("dump")]


def _require_link(ipr: IPR, index: int) -> LinkInfo:
    link = get_link_by_index(ipr, index)
    if link is None:
        raise CNIError(ErrorCode.INTERNAL, f"link #{index} vanished")
    return link


def validate_ifname(name: str) -> None:
    """The kernel's ``dev_valid_name`` rules, checked before any request is sent, and no
    '%': the kernel takes such a name as a template ("br%d" makes br0, br1... a link we
    would never find again under the name we asked for)."""
    if (
        not name
        or len(name.encode()) >= IFNAMSIZ
        or name in (".", "..")
        or any(ch in name for ch in "/:%")
        or any(ch.isspace() for ch in name)
    ):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid interface name {name!r}")


def random_host_veth_name() -> str:
    """``veth`` + 8 random hex digits, as the reference plugins name the host end."""
    return "veth" + os.urandom(4).hex()  # what secrets.token_hex does


def host_veth_name(seed: str) -> str:
    """A stable host veth name for ``seed`` (e.g. network + container id + ifname)."""
    return "veth" + sha256_hex(seed.encode())[:8]


# ---------------------------------------------------------------------------- bridge


def bridge_vlan_filtering(ipr: IPR, index: int) -> bool:
    msg = _get_msg(ipr, f"#{index}", index=index)
    value = _nested(msg, "IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_BR_VLAN_FILTERING")
    return bool(value)


def random_mac(*, low: bool = False) -> str:
    """A random locally administered unicast MAC address; with ``low``, one starting 02: (the
    lowest such first byte: a bridge with it rarely has a port whose MAC sorts lower)."""
    raw = bytearray(os.urandom(6))
    raw[0] = 0x02 if low else (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def _create_bridge(
    ipr: IPR, name: str, *, mtu: int | None, vlan_filtering: bool, mac: str | None
) -> None:
    request: dict[str, Any] = {"ifname": name, "kind": "bridge"}
    if mtu is not None:
        request["mtu"] = mtu
    if mac is not None:
        # Given at creation the address counts as set by the user (NET_ADDR_SET): the bridge
        # keeps it instead of following the lowest port MAC as ports come and go.
        request["address"] = mac
    if vlan_filtering:
        request["br_vlan_filtering"] = 1
    with translate_netlink_error(f"create bridge {name}"):
        try:
            ipr.link("add", **request)
        except NetlinkError as err:
            if vlan_filtering and err.code == errno.EOPNOTSUPP:
                raise BridgeVlanUnsupported(f"create bridge {name}") from err
            # EEXIST: another ADD created it between our look-up and our request. Success;
            # the caller re-reads the link and checks that it really is a bridge.
            if err.code != errno.EEXIST:
                raise


def ensure_bridge(
    ipr: IPR,
    name: str,
    *,
    mtu: int | None = None,
    promisc: bool = False,
    vlan_filtering: bool = False,
    pin_mac: bool = False,
) -> LinkInfo:
    """Create the bridge unless it exists, then make sure it is up (and promisc/VLAN-aware if
    asked). ``mtu`` applies only when creating it, like the reference plugin: an existing
    bridge's MTU belongs to whoever made it. ``pin_mac``: a bridge created here gets a fixed
    random MAC before any port joins, so its MAC never changes. Safe to call from concurrent
    ADDs."""
    validate_ifname(name)
    link = get_link(ipr, name)
    if link is None:
        _create_bridge(ipr, name, mtu=mtu, vlan_filtering=vlan_filtering,
                       mac=random_mac(low=True) if pin_mac else None)
        link = get_link(ipr, name)
        if link is None:
            raise CNIError(ErrorCode.INTERNAL, f"bridge {name} vanished right after creation")
    if link.kind != "bridge":
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{name} already exists but is not a bridge",
            f"kind {link.kind or 'none'}",
        )
    changed = False
    if vlan_filtering and not bridge_vlan_filtering(ipr, link.index):
        with _vlan_op(f"enable vlan_filtering on {name}", link=name):
            ipr.link("set", index=link.index, kind="bridge", br_vlan_filtering=1)
        changed = True
    if promisc and not link.promisc:
        set_promisc(ipr, link.index, True)
        changed = True
    if not link.up:
        set_up(ipr, link.index)
        changed = True
    return _require_link(ipr, link.index) if changed else link


# ---------------------------------------------------------------------------- veth


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
    if get_link(container_ipr, container) is not None:
        return ContainerIfnameExists(container, str(ns))
    if get_link(host_ipr, host) is not None:
        return HostVethNameTaken(host)
    return CNIError(ErrorCode.INTERNAL, f"create veth {host}: name clash that went away")


def _validate_veth_args(host_ifname: str, container_ifname: str, mac: str | None) -> None:
    validate_ifname(host_ifname)
    validate_ifname(container_ifname)
    if mac is not None and not _MAC_RE.match(mac):
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
    host = get_link(host_ipr, host_ifname)
    container = get_link(cipr, container_ifname)
    if host is None or container is None:
        # Someone deleted an end under us; removing either end removes both.
        delete_link(host_ipr, host_ifname)
        raise CNIError(ErrorCode.INTERNAL, f"veth {host_ifname} vanished right after creation")
    return VethPair(host=host, container=container)


def find_veth_peer_in(host_ipr: IPR, container_link: LinkInfo) -> LinkInfo | None:
    """The link in ``host_ipr``'s netns that is the other end of ``container_link``.

    IFLA_LINK of a veth is the peer's index in the peer's own netns; checking the candidate's
    own IFLA_LINK back guards against an unrelated link that happens to share the index.
    """
    if container_link.peer_index is None:
        return None
    candidate = get_link_by_index(host_ipr, container_link.peer_index)
    if candidate is None or candidate.kind != "veth":
        return None
    if candidate.peer_index != container_link.index:
        return None
    return candidate


# ---------------------------------------------------------------------------- link attributes


def set_up(ipr: IPR, index: int) -> None:
    with translate_netlink_error(f"set link #{index} up", link=f"#{index}"):
        ipr.link("set", index=index, state="up")


def set_down(ipr: IPR, index: int) -> None:
    with translate_netlink_error(f"set link #{index} down", link=f"#{index}"):
        ipr.link("set", index=index, state="down")


def set_master(ipr: IPR, index: int, master_index: int, *, up: bool = False) -> None:
    """Make ``master_index`` the master of link ``index``; with ``up``, in the same request
    also set the link up."""
    extra: dict[str, Any] = {"state": "up"} if up else {}
    with translate_netlink_error(f"set master of link #{index}", link=f"#{index}"):
        ipr.link("set", index=index, master=master_index, **extra)


def set_mac(ipr: IPR, index: int, mac: str) -> None:
    if not _MAC_RE.match(mac):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid MAC address {mac!r}")
    with translate_netlink_error(f"set MAC of link #{index}", link=f"#{index}"):
        ipr.link("set", index=index, address=mac.lower())


def set_promisc(ipr: IPR, index: int, on: bool) -> None:
    with translate_netlink_error(f"set promisc on link #{index}", link=f"#{index}"):
        ipr.link("set", index=index, flags=IFF_PROMISC if on else 0, change=IFF_PROMISC)


def delete_link(ipr: IPR, name: str) -> bool:
    """Delete ``name``; False if it was not there (DEL treats "already gone" as success).

    One request, by name: the kernel resolves it, so there is no lookup to race with."""
    with translate_netlink_error(f"delete link {name}"):
        try:
            ipr.link("del", ifname=name)
        except NetlinkError as err:
            if err.code == errno.ENODEV:  # not there, or removed concurrently (its veth peer)
                return False
            raise
    return True


def wait_oper_up(ipr: IPR, index: int, timeout: float = 2.55) -> LinkInfo:
    """Poll until the link's operstate is UP (a bridge port leaves "DOWN" only once both veth
    ends are up); ``CNIError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        link = _require_link(ipr, index)
        if link.operstate == "UP":
            return link
        if time.monotonic() >= deadline:
            raise CNIError(
                ErrorCode.INTERNAL, f"link {link.name} not up", f"operstate {link.operstate}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# ---------------------------------------------------------------------------- bridge ports


def set_bridge_port(ipr: IPR, index: int, *, hairpin: bool, isolated: bool) -> None:
    """Set hairpin (IFLA_BRPORT_MODE) and isolation explicitly, on or off."""
    with translate_netlink_error(f"set bridge port flags on link #{index}", link=f"#{index}"):
        ipr.brport("set", index=index, mode=int(hairpin), isolated=int(isolated))


def get_bridge_port(ipr: IPR, index: int) -> BridgePortInfo | None:
    """Hairpin and isolation of a bridge port; None if the link is not a bridge port."""
    msg = _get_msg(ipr, f"#{index}", index=index)
    data = _nested(msg, "IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA")
    if data is None:
        return None
    return BridgePortInfo(
        hairpin=bool(data.get_attr("IFLA_BRPORT_MODE")),
        isolated=bool(data.get_attr("IFLA_BRPORT_ISOLATED")),
    )


def set_bridge_port_vlan(ipr: IPR, index: int, vlan: int) -> None:
    """Make ``vlan`` the port's access VLAN (PVID, egress untagged) and drop default VLAN 1.

    Needs ``vlan_filtering`` on the bridge. Idempotent: re-adding a VLAN updates its flags.
    """
    if not 1 <= vlan <= 4094:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid VLAN id {vlan}")
    with _vlan_op(f"set access VLAN {vlan} on link #{index}", link=f"#{index}"):
        ipr.vlan_filter("add", index=index, vlan_info={"vid": vlan, "flags": ["pvid", "untagged"]})
        if vlan != DEFAULT_VLAN and _has_vlan(ipr, index, DEFAULT_VLAN):
            ipr.vlan_filter("del", index=index, vlan_info={"vid": DEFAULT_VLAN})


@contextlib.contextmanager
def _vlan_op(operation: str, *, link: str) -> Iterator[None]:
    with translate_netlink_error(operation, link=link):
        try:
            yield
        except NetlinkError as err:
            if err.code == errno.EOPNOTSUPP:
                raise BridgeVlanUnsupported(operation) from err
            raise


def _has_vlan(ipr: IPR, index: int, vid: int) -> bool:
    return any(v.vid == vid for v in get_bridge_port_vlans(ipr, index))


def get_bridge_port_vlans(ipr: IPR, index: int) -> list[BridgeVlan]:
    """The VLANs configured on a bridge port (or on the bridge itself, for its own port)."""
    with translate_netlink_error(f"dump VLANs of link #{index}"):
        msgs = ipr.link("dump", family=7, ext_mask=RTEXT_FILTER_BRVLAN)  # 7 = AF_BRIDGE
        vlans: list[BridgeVlan] = []
        for msg in msgs:
            if msg["index"] != index:
                continue
            spec = msg.get_attr("IFLA_AF_SPEC")
            for name, info in spec["attrs"] if spec is not None else []:
                if name == "IFLA_BRIDGE_VLAN_INFO":
                    vlans.append(_to_vlan(info))
    return vlans


def _to_vlan(info: Any) -> BridgeVlan:
    flags = int(info["flags"])
    return BridgeVlan(
        vid=int(info["vid"]),
        pvid=bool(flags & BRIDGE_VLAN_INFO_PVID),
        untagged=bool(flags & BRIDGE_VLAN_INFO_UNTAGGED),
    )
