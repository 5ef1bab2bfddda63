"""The link attributes `tuning` reads and sets, through the typed pyroute2 seam.

``pycni.net.links.LinkInfo`` does not carry allmulti or the tx queue length, so this small
module reads one link's tunable state and sets each attribute, raising ``CNIError`` only.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Final

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net import links
from pycni.net.ipr import IPR, translate_netlink_error

__all__ = ["LinkState", "read_link", "set_allmulti", "set_mtu", "set_txqlen"]

IFF_ALLMULTI: Final = 0x200


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkState:
    index: int
    name: str
    mac: str
    mtu: int
    promisc: bool
    allmulti: bool
    txqlen: int


def read_link(ipr: IPR, name: str) -> LinkState | None:
    """``name``'s tunable attributes; None if there is no such link."""
    with translate_netlink_error(f"get link {name}"):
        try:
            msg = ipr.link("get", ifname=name)[0]
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return None
            raise
    flags = int(msg["flags"])  # userspace-requested promisc/allmulti (dev->gflags)
    return LinkState(
        index=int(msg["index"]),
        name=name,
        mac=str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        promisc=bool(flags & links.IFF_PROMISC),
        allmulti=bool(flags & IFF_ALLMULTI),
        txqlen=int(msg.get_attr("IFLA_TXQLEN") or 0),
    )


def set_mtu(ipr: IPR, index: int, mtu: int) -> None:
    with translate_netlink_error(f"set MTU {mtu} on link #{index}", link=f"#{index}"):
        ipr.link("set", index=index, mtu=mtu)


def set_allmulti(ipr: IPR, index: int, on: bool) -> None:
    with translate_netlink_error(f"set allmulti on link #{index}", link=f"#{index}"):
        ipr.link("set", index=index, flags=IFF_ALLMULTI if on else 0, change=IFF_ALLMULTI)


def set_txqlen(ipr: IPR, index: int, qlen: int) -> None:
    with translate_netlink_error(f"set txqlen {qlen} on link #{index}", link=f"#{index}"):
        ipr.link("set", index=index, txqlen=qlen)
