"""Links: read them as ``LinkInfo``, ensure a bridge, set a link's attributes (up, master,
MAC, promiscuity) and delete links. A veth pair across namespaces is ``veth_pair``'s, a bridge
port's flags and VLANs ``bridge_ports``'.

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
from pycni.net.ipr import IPR, translate_netlink_error

__all__ = [
    "MAC_RE",
    "BridgeVlanUnsupported",
    "LinkInfo",
    "bridge_vlan_filtering",
    "delete_link",
    "ensure_bridge",
    "get_link",
    "get_link_by_index",
    "host_veth_name",
    "link_exists",
    "link_message",
    "list_link_names",
    "nested_attr",
    "random_host_veth_name",
    "random_mac",
    "set_mac",
    "set_master",
    "set_promisc",
    "set_up",
    "validate_ifname",
    "vlan_op",
    "wait_oper_up",
]

IFF_UP: Final = 0x1
IFF_PROMISC: Final = 0x100
IFNAMSIZ: Final = 16

MAC_RE: Final = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


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


class BridgeVlanUnsupported(CNIError):
    """The kernel was built without CONFIG_BRIDGE_VLAN_FILTERING (netlink says EOPNOTSUPP)."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            ErrorCode.INTERNAL,
            f"{operation} failed",
            "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)",
        )


# ---------------------------------------------------------------------------- reading


def nested_attr(msg: Any, *path: str) -> Any:
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
        kind=nested_attr(msg, "IFLA_LINKINFO", "IFLA_INFO_KIND"),
        mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        master=msg.get_attr("IFLA_MASTER"),
        peer_index=msg.get_attr("IFLA_LINK"),
        up=bool(flags & IFF_UP),
        promisc=bool(flags & IFF_PROMISC),
        operstate=str(msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN"),
    )


# What ``_to_link_info`` reads of a link: decoded alone (``pycni.net.nlattrs``), a lookup
# took ~0.3 ms instead of ~0.5 ms with all ~40 attributes of the kernel's answer.
_LINK_INFO_ATTRIBUTES: Final = (
    ("IFLA_IFNAME", ()), ("IFLA_ADDRESS", ()), ("IFLA_MTU", ()), ("IFLA_MASTER", ()),
    ("IFLA_LINK", ()), ("IFLA_OPERSTATE", ()), ("IFLA_LINKINFO", ("IFLA_INFO_KIND",)),
)


def link_message(ipr: IPR, what: str, **query: Any) -> Any:
    """The RTM_NEWLINK message for one link, or None when the kernel says ENODEV."""
    return _link_message(ipr, what, None, query)


def _link_message(ipr: IPR, what: str, attributes: Any, query: dict[str, Any]) -> Any:
    with translate_netlink_error(f"get link {what}"):
        try:
            if attributes is None:
                return ipr.link("get", **query)[0]
            return ipr.link_with(attributes, "get", **query)[0]
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return None
            raise


def get_link(ipr: IPR, name: str) -> LinkInfo | None:
    msg = _link_message(ipr, name, _LINK_INFO_ATTRIBUTES, {"ifname": name})
    return None if msg is None else _to_link_info(msg)


def add_link(ipr: IPR, **request: Any) -> LinkInfo | None:
    """Create a link (RTM_NEWLINK, exclusive) and return it as the kernel echoes it back, made
    and configured but before ``master`` applies; None from a kernel that does not echo a new
    link (before 6.3: read it back). ``NetlinkError`` as the kernel raised it."""
    replies = ipr.link_created(_LINK_INFO_ATTRIBUTES, **request)
    return _to_link_info(replies[0]) if replies else None


def link_exists(ipr: IPR, name: str) -> bool:
    """Whether link ``name`` exists (its message not decoded: for a yes or no)."""
    with translate_netlink_error(f"get link {name}"):
        return bool(ipr.link_exists(name))


def get_link_by_index(ipr: IPR, index: int) -> LinkInfo | None:
    msg = _link_message(ipr, f"#{index}", _LINK_INFO_ATTRIBUTES, {"index": index})
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
    msg = link_message(ipr, f"#{index}", index=index)
    value = nested_attr(msg, "IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_BR_VLAN_FILTERING")
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
        with vlan_op(f"enable vlan_filtering on {name}", link=name):
            ipr.link("set", index=link.index, kind="bridge", br_vlan_filtering=1)
        changed = True
    if promisc and not link.promisc:
        set_promisc(ipr, link.index, True)
        changed = True
    if not link.up:
        set_up(ipr, link.index)
        changed = True
    return _require_link(ipr, link.index) if changed else link


@contextlib.contextmanager
def vlan_op(operation: str, *, link: str) -> Iterator[None]:
    """Netlink errors of a VLAN ``operation`` as ``CNIError``: ``BridgeVlanUnsupported`` for a
    kernel without bridge VLAN filtering."""
    with translate_netlink_error(operation, link=link):
        try:
            yield
        except NetlinkError as err:
            if err.code == errno.EOPNOTSUPP:
                raise BridgeVlanUnsupported(operation) from err
            raise


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
    if not MAC_RE.match(mac):
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
