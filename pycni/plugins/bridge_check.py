"""CHECK for `bridge` (spec §2 CHECK): compare the kernel against prevResult and the config."""

from __future__ import annotations

import ipaddress

from pycni.cni.errors import CNIError, ErrorCode, NetNSNotFound
from pycni.cni.skel import CmdArgs
from pycni.cni.types import Result
from pycni.firewall import AttachmentKey, Masquerade, select
from pycni.net import addrs, links, veth_pair
from pycni.net.ipr import IPR, open_ipr
from pycni.plugins.bridge_conf import BridgeConfig

__all__ = ["validate"]


def _validate_bridge(
    host: IPR, conf: BridgeConfig, prev: Result
) -> tuple[list[str], links.LinkInfo | None]:
    bridge = links.get_link(host, conf.bridge)
    if bridge is None or bridge.kind != "bridge":
        return [f"bridge {conf.bridge} is missing or not a bridge"], None
    problems = []
    expected = next((i for i in prev.interfaces if i.name == conf.bridge), None)
    if expected and expected.mac and expected.mac.lower() != bridge.mac.lower():
        problems.append(f"bridge MAC is {bridge.mac}, result says {expected.mac}")
    if conf.promisc_mode and not bridge.promisc:
        problems.append(f"bridge {conf.bridge} is not promiscuous")
    return problems, bridge


def _validate_container(
    cont: IPR, args: CmdArgs, prev: Result
) -> tuple[list[str], links.LinkInfo | None]:
    link = links.get_link(cont, args.ifname)
    if link is None:
        return [f"{args.ifname} is missing in {args.netns}"], None
    problems = []
    if link.kind != "veth":
        problems.append(f"{args.ifname} is a {link.kind}, not a veth")
    expected = next((i for i in prev.interfaces if i.name == args.ifname and i.sandbox), None)
    if expected and expected.mac and expected.mac.lower() != link.mac.lower():
        problems.append(f"{args.ifname} MAC is {link.mac}, result says {expected.mac}")
    have = {ipaddress.ip_interface(c) for c in addrs.list_addresses(cont, link.index)}
    for ip in prev.ips:
        if ipaddress.ip_interface(ip.address) not in have:
            problems.append(f"address {ip.address} missing on {args.ifname}")
    routes = {(r.dst, r.gateway) for r in addrs.list_routes(cont)}
    for route in prev.routes:
        if not any(dst == route.dst and (route.gw is None or gw == route.gw) for dst, gw in routes):
            problems.append(f"route {route.dst} via {route.gw or 'link'} missing")
    return problems, link


def _validate_port(
    host: IPR, bridge: links.LinkInfo | None, container: links.LinkInfo | None
) -> list[str]:
    if bridge is None or container is None:
        return []
    peer = veth_pair.find_veth_peer_in(host, container)
    if peer is None:
        return ["no host veth is the peer of the container interface"]
    if peer.master != bridge.index:
        return [f"host veth {peer.name} is not attached to {bridge.name}"]
    return []


def validate(args: CmdArgs, conf: BridgeConfig, key: AttachmentKey) -> list[str]:
    """Problems found (empty when the attachment is whole)."""
    prev = args.config.prev_result
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "bridge CHECK needs prevResult")
    try:
        with open_ipr() as host, open_ipr(args.container_netns()) as cont:
            problems, bridge = _validate_bridge(host, conf, prev)
            more, container = _validate_container(cont, args, prev)
            problems += more + _validate_port(host, bridge, container)
    except NetNSNotFound as err:
        return [str(err)]
    if conf.ip_masq and prev.ips:
        masq = Masquerade(
            key=key,
            network_subnets=tuple(dict.fromkeys(ip.network for ip in prev.ips)),
            sources=tuple(ip.ip for ip in prev.ips),
        )
        problems += select(conf.ip_masq_backend).masquerade.check(masq)
    if conf.mac_spoof_check:
        problems += _validate_mac_spoof_check(args, conf, prev, key)
    return problems


# --- macspoofchk (the firewall's macspoof facet) ---
def _validate_mac_spoof_check(
    args: CmdArgs, conf: BridgeConfig, prev: Result, key: AttachmentKey
) -> list[str]:
    port = next((i for i in prev.interfaces if not i.sandbox and i.name != conf.bridge), None)
    cont = next((i for i in prev.interfaces if i.sandbox and i.name == args.ifname), None)
    if port is None or cont is None or not cont.mac:
        return ["macspoofchk: prevResult names no host veth or container MAC"]
    from pycni.firewall import MacSpoofCheck  # only a bridge that checks MACs pays for it

    macspoof = select(conf.ip_masq_backend).macspoof
    return macspoof.check(MacSpoofCheck(key=key, port=port.name, mac=cont.mac))


# --- end macspoofchk ---
