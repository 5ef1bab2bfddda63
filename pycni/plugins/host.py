"""`host`: Docker's ``--net=host``: the container shares the host's network namespace.

ADD records the host's interfaces and addresses as they are and changes nothing; DEL has
nothing to undo. CNI_NETNS must be the plugin's own namespace (that is what host mode means,
and why the registry sets ``allow_own_netns``): any other netns is refused.
"""

from __future__ import annotations

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import Interface, IPConfig, Result
from pycni.net import addrs, links, netns
from pycni.net.ipr import open_ipr, translate_netlink_error

__all__ = ["cmd_add", "cmd_check", "cmd_del"]


def _require_host_netns(args: CmdArgs) -> None:
    target = args.container_netns()
    try:
        own = netns.is_current(target)
    except OSError as err:
        raise CNIError(ErrorCode.INVALID_NETNS, f"cannot stat netns {target}", str(err)) from err
    if not own:
        raise CNIError(
            ErrorCode.INVALID_NETNS,
            "host mode needs CNI_NETNS to be the host's network namespace",
            target.path,
        )


def host_result(cni_version: str) -> Result:
    """Every interface of the current netns with its global addresses (no sandbox: host side)."""
    interfaces: list[Interface] = []
    ips: list[IPConfig] = []
    with open_ipr() as ipr:
        with translate_netlink_error("list links"):
            indexes = sorted(int(msg["index"]) for msg in ipr.get_links())
        for index in indexes:
            link = links.get_link_by_index(ipr, index)
            if link is None:  # vanished between the dump and the lookup
                continue
            position = len(interfaces)
            interfaces.append(Interface(name=link.name, mac=link.mac, mtu=link.mtu or None))
            ips.extend(
                IPConfig(address=cidr, interface=position)
                for cidr in addrs.list_addresses(ipr, index)
            )
    return Result(cni_version=cni_version, interfaces=tuple(interfaces), ips=tuple(ips))


def cmd_add(args: CmdArgs) -> Result:
    _require_host_netns(args)
    return host_result(args.cni_version)


def cmd_del(args: CmdArgs) -> None:
    """Nothing to undo: host mode never changed anything."""


def cmd_check(args: CmdArgs) -> None:
    _require_host_netns(args)
    prev = args.config.prev_result
    if prev is None:
        return
    present = {iface.name for iface in host_result(args.cni_version).interfaces}
    missing = sorted(i.name for i in prev.interfaces if i.name not in present)
    if missing:
        raise CNIError(
            ErrorCode.INTERNAL, "host interfaces recorded at ADD are gone", ", ".join(missing)
        )
