"""`container`: Docker's ``--net=container:NAME``: join another container's network namespace.

CNI_NETNS is NAME's (pinned) netns. ADD reports the interfaces found there, with that netns as
their sandbox, and owns nothing: the other container's own network owns the interfaces, so
DEL removes nothing and succeeds whether or not the netns still exists.
"""

from __future__ import annotations

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.handle import NetNS
from pycni.cni.skel import CmdArgs
from pycni.cni.types import Interface, IPConfig, Result
from pycni.net import addrs, links
from pycni.net.ipr import open_ipr, translate_netlink_error

__all__ = ["cmd_add", "cmd_check", "cmd_del"]


def shared_result(cni_version: str, netns: NetNS) -> Result:
    """The interfaces (lo included) and global addresses inside ``netns``."""
    interfaces: list[Interface] = []
    ips: list[IPConfig] = []
    with open_ipr(netns) as ipr:
        with translate_netlink_error("list links"):
            indexes = sorted(int(msg["index"]) for msg in ipr.get_links())
        for index in indexes:
            link = links.get_link_by_index(ipr, index)
            if link is None:
                continue
            position = len(interfaces)
            interfaces.append(
                Interface(name=link.name, mac=link.mac, mtu=link.mtu or None, sandbox=netns.path)
            )
            ips.extend(
                IPConfig(address=cidr, interface=position)
                for cidr in addrs.list_addresses(ipr, index)
            )
    return Result(cni_version=cni_version, interfaces=tuple(interfaces), ips=tuple(ips))


def cmd_add(args: CmdArgs) -> Result:
    return shared_result(args.cni_version, args.container_netns())


def cmd_del(args: CmdArgs) -> None:
    """Nothing to undo: the interfaces belong to the container whose netns this is."""


def cmd_check(args: CmdArgs) -> None:
    present = {i.name for i in shared_result(args.cni_version, args.container_netns()).interfaces}
    prev = args.config.prev_result
    missing = sorted(i.name for i in prev.interfaces if i.name not in present) if prev else []
    if missing:
        raise CNIError(ErrorCode.INTERNAL, "shared interfaces are gone", ", ".join(missing))
