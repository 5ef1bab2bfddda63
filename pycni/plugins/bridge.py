"""`bridge`: Docker's ``--net=bridge`` as a CNI plugin.

ADD, as a checklist under an undo stack (a failed ADD leaves nothing behind):
IPAM (delegated) -> bridge -> veth pair -> bridge port -> container addressing -> gateway on the
bridge + forwarding -> masquerade. DEL releases IPAM first, then removes what is keyed by
(network, container id, ifname); everything already gone is success (``bridge_del``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from pycni.cni.delegate import delegate_add
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import Interface, IPConfig, Result, Route
from pycni.failpoints import failpoint
from pycni.firewall import Masquerade, select
from pycni.lockfile import network_lock
from pycni.net import addrs, bridge_ports, links, sysctl, veth_pair
from pycni.net.configure import configure_interface
from pycni.net.ipr import IPR, open_ipr
from pycni.plugins.bridge_conf import BridgeConfig, parse_bridge_config
from pycni.plugins.bridge_keys import attachment, collect, delegate_ipam, host_veth_name
from pycni.plugins.runner import DELEGATES

__all__ = ["cmd_add", "cmd_check", "cmd_del", "cmd_gc", "cmd_status", "host_veth_name"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Built:
    bridge: links.LinkInfo
    veth: veth_pair.VethPair


# ---------------------------------------------------------------------------- ADD steps


def _plain_port(conf: BridgeConfig) -> bool:
    """A port with hairpin and isolation off (the kernel's defaults for a fresh port) and no
    VLAN: it joins the bridge, up, in the very request that makes it. Any other is
    configured while down, then brought up (``_attach_port``)."""
    return not (conf.hairpin_mode or conf.port_isolation or conf.vlan > 0)


def _create_veth(
    host: IPR, container: IPR, conf: BridgeConfig, args: CmdArgs, bridge: links.LinkInfo
) -> veth_pair.VethPair:
    name = host_veth_name(args)
    plain = _plain_port(conf)
    for attempt in range(2):
        try:
            return veth_pair.create_veth(
                host,
                host_ifname=name,
                container_ifname=args.ifname,
                container_netns=args.container_netns(),
                mtu=conf.mtu,
                container_mac=conf.mac,
                container_ipr=container,
                master=bridge.index if plain else None,
                up=plain,
            )
        except veth_pair.HostVethNameTaken:
            if attempt:
                raise
            # Our own name, so a leftover of a crashed ADD for this very attachment whose
            # container end is gone or elsewhere: it carries nothing worth keeping.
            links.delete_link(host, name)
    raise AssertionError("unreachable")


def _attach_port(
    host: IPR, conf: BridgeConfig, bridge: links.LinkInfo, veth: veth_pair.VethPair
) -> None:
    index = veth.host.index
    with contextlib.suppress(CNIError):  # no IPv6 on this host: nothing to turn off
        sysctl.ensure(sysctl.conf_key("ipv6", veth.host.name, "accept_ra"), "0")
    if _plain_port(conf):
        return  # a port of the bridge, up, since its creation
    port_flags = conf.hairpin_mode or conf.port_isolation
    links.set_master(host, index, bridge.index, up=False)
    if conf.vlan:
        bridge_ports.set_bridge_port_vlan(host, index, conf.vlan)
    if port_flags:  # the flags and the up flag in one request
        bridge_ports.set_bridge_port(host, index, hairpin=conf.hairpin_mode,
                                     isolated=conf.port_isolation, up=True)
    else:
        links.set_up(host, index)


def _run_ipam(conf: BridgeConfig, args: CmdArgs, undo: contextlib.ExitStack) -> Result:
    if not conf.ipam_type:
        return Result(cni_version=args.cni_version)  # ipam {}: layer 2 only
    result = delegate_add(conf.ipam_type, stdin=args.stdin, env=args.env, path=args.path,
                          runner=DELEGATES)
    undo.callback(_ipam_quiet_del, conf, args)
    if conf.is_gateway and not result.ips:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"IPAM {conf.ipam_type} returned no address"
        )
    return result


def _ipam_quiet_del(conf: BridgeConfig, args: CmdArgs) -> None:
    try:
        delegate_ipam(conf, args, "DEL")
    except CNIError as err:
        print(f"bridge: IPAM DEL during rollback failed: {err}", file=sys.stderr)


def _gateway_ips(conf: BridgeConfig, ipam: Result) -> tuple[IPConfig, ...]:
    """Each IP with interface 2 (the container end) and, if we are the gateway, a gateway."""
    out = []
    for ip in ipam.ips:
        gateway = ip.gateway
        if conf.is_gateway and not gateway:
            gateway = str(ipaddress.ip_interface(ip.address).network.network_address + 1)
        out.append(IPConfig(address=ip.address, gateway=gateway, interface=2))
    return tuple(out)


def _routes(conf: BridgeConfig, ipam: Result, ips: tuple[IPConfig, ...]) -> tuple[Route, ...]:
    routes = list(ipam.routes)
    if conf.is_default_gateway:
        for ip in ips:
            default = "0.0.0.0/0" if ip.family == 4 else "::/0"
            if ip.gateway and not any(r.dst == default and r.gw for r in routes):
                routes.append(Route(dst=default, gw=ip.gateway))
    return tuple(routes)


def _ensure_gateway_address(
    host: IPR, conf: BridgeConfig, bridge: links.LinkInfo, ip: IPConfig
) -> None:
    """Add the gateway address unless it is there. Only a newly added one needs the overlap
    check (a listing): the common case, the address in place, costs one request."""
    assert ip.gateway is not None
    prefix = ipaddress.ip_interface(ip.address).network.prefixlen
    wanted = ipaddress.ip_interface(f"{ip.gateway}/{prefix}")
    if not addrs.add_address(host, bridge.index, str(wanted), nodad=True):
        return  # already there
    clashes = [
        cidr
        for cidr in addrs.list_addresses(host, bridge.index)
        if _overlaps_v4(ipaddress.ip_interface(cidr), wanted)
    ]
    if not clashes:
        return
    if not conf.force_address:
        addrs.delete_address(host, bridge.index, str(wanted))  # ours, just added: undo it
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{conf.bridge} already has an IP address different from {wanted}",
            f"it has {clashes[0]}; set forceAddress to replace it",
        )
    for cidr in clashes:
        addrs.delete_address(host, bridge.index, cidr)
    # Deleting a primary address takes its secondaries (ours) with it unless promoted.
    addrs.add_address(host, bridge.index, str(wanted), nodad=True)


def _overlaps_v4(
    have: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
    wanted: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
) -> bool:
    return (
        have != wanted
        and have.version == 4
        and wanted.version == 4
        and have.network.overlaps(wanted.network)
    )


def _setup_gateway(
    host: IPR, conf: BridgeConfig, bridge: links.LinkInfo, ips: tuple[IPConfig, ...]
) -> None:
    # The bridge MAC was pinned when we created the bridge (ensure_bridge(pin_mac=True)).
    for ip in ips:
        if ip.gateway is None:
            continue
        _ensure_gateway_address(host, conf, bridge, ip)
        key = "net.ipv4.ip_forward" if ip.family == 4 else "net.ipv6.conf.all.forwarding"
        sysctl.ensure(key, "1")


def _setup_masquerade(
    conf: BridgeConfig, args: CmdArgs, ips: tuple[IPConfig, ...], undo: contextlib.ExitStack
) -> None:
    if not conf.ip_masq or not ips:
        return
    masquerade = select(conf.ip_masq_backend).masquerade
    key = attachment(args)
    masquerade.setup(
        Masquerade(
            key=key,
            network_subnets=tuple(dict.fromkeys(ip.network for ip in ips)),
            sources=tuple(ip.ip for ip in ips),
        )
    )
    undo.callback(masquerade.teardown, key)


# --- macspoofchk (the firewall's macspoof facet) ---
def _setup_mac_spoof_check(
    conf: BridgeConfig, args: CmdArgs, veth: veth_pair.VethPair, undo: contextlib.ExitStack
) -> None:
    if not conf.mac_spoof_check:
        return
    from pycni.firewall import MacSpoofCheck  # only a bridge that checks MACs pays for it

    key = attachment(args)
    macspoof = select(conf.ip_masq_backend).macspoof
    macspoof.setup(MacSpoofCheck(key=key, port=veth.host.name, mac=veth.container.mac))
    undo.callback(macspoof.teardown, key)


# --- end macspoofchk ---


def _build_result(
    args: CmdArgs, conf: BridgeConfig, built: _Built, ipam: Result, ips: tuple[IPConfig, ...]
) -> Result:
    return Result(
        cni_version=args.cni_version,
        interfaces=(
            Interface(name=built.bridge.name, mac=built.bridge.mac),
            Interface(name=built.veth.host.name, mac=built.veth.host.mac),
            Interface(
                name=built.veth.container.name,
                mac=built.veth.container.mac,
                mtu=built.veth.container.mtu,
                sandbox=args.netns,
            ),
        ),
        ips=ips,
        routes=_routes(conf, ipam, ips),
        dns=conf.dns if conf.dns else ipam.dns,
    )


@contextlib.contextmanager
def _undo_on_failure() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as undo:
        yield undo
        undo.pop_all()  # success: keep everything


def cmd_add(args: CmdArgs) -> Result:
    conf = parse_bridge_config(args)
    if conf.mac_spoof_check:  # macspoofchk: refused (code 2) before anything is made
        select(conf.ip_masq_backend).macspoof.require_available()
    netns = args.container_netns()
    with open_ipr() as host, open_ipr(netns) as container, _undo_on_failure() as undo:
        # IPAM first: a bad IPAM config or an exhausted pool fails before the kernel is touched.
        ipam = _run_ipam(conf, args, undo)
        failpoint("bridge.add.after_ipam")
        ips = _gateway_ips(conf, ipam)
        with network_lock("bridge", conf.bridge):
            bridge = links.ensure_bridge(
                host,
                conf.bridge,
                mtu=conf.mtu,
                promisc=conf.promisc_mode,
                vlan_filtering=conf.vlan > 0,
                pin_mac=True,
            )
        failpoint("bridge.add.after_bridge")
        veth = _create_veth(host, container, conf, args, bridge)
        undo.callback(links.delete_link, host, veth.host.name)
        failpoint("bridge.add.after_veth")
        _attach_port(host, conf, bridge, veth)
        failpoint("bridge.add.after_port")
        _setup_mac_spoof_check(conf, args, veth, undo)  # macspoofchk
        built = _Built(bridge=bridge, veth=veth)
        result = _build_result(args, conf, built, ipam, ips)
        configure_interface(
            container,
            container_netns=netns,
            link=veth.container,
            ips=ips,
            routes=result.routes,
            enable_dad=conf.enable_dad,
        )
        failpoint("bridge.add.after_configure")
        if conf.is_gateway:
            with network_lock("bridge", conf.bridge):
                _setup_gateway(host, conf, bridge, ips)
        failpoint("bridge.add.after_gateway")
        _setup_masquerade(conf, args, ips, undo)
        failpoint("bridge.add.after_masquerade")
        if veth.host.mac < bridge.mac:
            return _refresh_macs(host, result)
        return result


def _refresh_macs(host: IPR, result: Result) -> Result:
    """Re-read the bridge MAC. A bridge we created has its MAC pinned (it starts 02:, which
    few port MACs sort below); one made by someone else without a pinned MAC takes the lowest
    port MAC, so ours joining changes it only when ours sorts lower. (Left out: such a bridge
    with no port at all until ours, whose first port sets its MAC whatever it is.)"""
    bridge = links.get_link(host, result.interfaces[0].name)
    if bridge is None or bridge.mac == result.interfaces[0].mac:
        return result
    first = Interface(name=bridge.name, mac=bridge.mac)
    return Result(
        cni_version=result.cni_version,
        interfaces=(first, *result.interfaces[1:]),
        ips=result.ips,
        routes=result.routes,
        dns=result.dns,
    )


# ---------------------------------------------------------------------------- CHECK, STATUS, GC


# DEL and CHECK live in modules of their own, imported by the verb that runs them: an ADD run
# in-process (a one-shot process) does not pay for them. The servers preload both.


def cmd_del(args: CmdArgs) -> None:
    from pycni.plugins import bridge_del

    bridge_del.cmd_del(args)


def cmd_check(args: CmdArgs) -> None:
    from pycni.plugins import bridge_check

    conf = parse_bridge_config(args)
    if conf.ipam_type:
        delegate_ipam(conf, args, "CHECK")
    problems = bridge_check.validate(args, conf, attachment(args))
    if problems:
        raise CNIError(ErrorCode.INTERNAL, "bridge CHECK failed", "; ".join(problems))


def _has_ports(bridge_name: str) -> bool:
    """Whether containers are attached: the kernel says so, no state of ours needed."""
    with open_ipr() as host:
        bridge = links.get_link(host, bridge_name)
        if bridge is None:
            return False
        return any(link.get_attr("IFLA_MASTER") == bridge.index for link in host.get_links())


def cmd_status(args: CmdArgs) -> None:
    conf = parse_bridge_config(args)
    if conf.ip_masq:
        masquerade = select(conf.ip_masq_backend).masquerade
        reason = masquerade.status()
        if reason:
            raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "masquerade backend unavailable", reason)
        missing = masquerade.check_layout() if _has_ports(conf.bridge) else []
        if missing:
            # 51: new ADDs rebuild the layout, but attached containers have lost their way out.
            raise CNIError(
                ErrorCode.LIMITED_CONNECTIVITY,
                "masquerade rules are missing; `pycni reconcile` restores them",
                "; ".join(missing),
            )
    if conf.ipam_type:
        delegate_ipam(conf, args, "STATUS")


def cmd_gc(args: CmdArgs) -> None:
    conf = parse_bridge_config(args)
    errors: list[str] = []
    firewall = select(conf.ip_masq_backend)
    if conf.ip_masq:
        errors += firewall.masquerade.gc(args.network, args.valid_attachments())
    if conf.mac_spoof_check:  # macspoofchk
        errors += firewall.macspoof.gc(args.network, args.valid_attachments())
    if conf.ipam_type:
        collect(errors, "IPAM GC", lambda: delegate_ipam(conf, args, "GC"))
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "bridge GC incomplete", "; ".join(errors))
