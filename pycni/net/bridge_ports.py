"""A bridge port's flags (hairpin, isolation) and VLANs (the access VLAN, and reading them).

Every function takes an ``IPRoute`` handle from ``pycni.net.ipr.open_ipr`` bound to the
namespace it acts in, and raises ``CNIError`` (never a pyroute2 error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.net.ipr import IPR, translate_netlink_error
from pycni.net.links import IFF_UP, link_message, nested_attr, vlan_op

__all__ = [
    "BridgePortInfo",
    "BridgeVlan",
    "get_bridge_port",
    "get_bridge_port_vlans",
    "set_bridge_port",
    "set_bridge_port_vlan",
]

DEFAULT_VLAN: Final = 1
# bridge_vlan_info flags (linux/if_bridge.h)
BRIDGE_VLAN_INFO_PVID: Final = 0x2
BRIDGE_VLAN_INFO_UNTAGGED: Final = 0x4
RTEXT_FILTER_BRVLAN: Final = 0x2


@dataclass(frozen=True)
class BridgePortInfo:
    hairpin: bool
    isolated: bool


@dataclass(frozen=True)
class BridgeVlan:
    vid: int
    pvid: bool
    untagged: bool


def set_bridge_port(ipr: IPR, index: int, *, hairpin: bool, isolated: bool,
                    up: bool = False) -> None:
    """Set hairpin (IFLA_BRPORT_MODE) and isolation explicitly, on or off; with ``up``, in the
    same request also set the link up.

    One RTM_NEWLINK with the bridge's slave data (as ``ip link set ... type bridge_slave``
    sends), so it goes through ``SyncRtnl``'s fast path: pyroute2's ``brport`` (an AF_BRIDGE
    RTM_SETLINK) would open the full asyncio handle, ~1.5 ms of every bridge ADD with
    hairpinMode. The link's up flag goes as ifi_flags/ifi_change: ``state`` would be read as
    the port's STP state (IFLA_BRPORT_STATE) here."""
    flags = {"flags": IFF_UP, "change": IFF_UP} if up else {}
    with translate_netlink_error(f"set bridge port flags on link #{index}", link=f"#{index}"):
        ipr.link("set", index=index, kind="bridge_slave", mode=int(hairpin),
                 isolated=int(isolated), **flags)


def get_bridge_port(ipr: IPR, index: int) -> BridgePortInfo | None:
    """Hairpin and isolation of a bridge port; None if the link is not a bridge port."""
    msg = link_message(ipr, f"#{index}", index=index)
    data = nested_attr(msg, "IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA")
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
    with vlan_op(f"set access VLAN {vlan} on link #{index}", link=f"#{index}"):
        ipr.vlan_filter("add", index=index, vlan_info={"vid": vlan, "flags": ["pvid", "untagged"]})
        if vlan != DEFAULT_VLAN and _has_vlan(ipr, index, DEFAULT_VLAN):
            ipr.vlan_filter("del", index=index, vlan_info={"vid": DEFAULT_VLAN})


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
