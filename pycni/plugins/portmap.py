"""`portmap`: Docker's ``-p hostPort:containerPort`` as a chained CNI plugin.

ADD, as a checklist under an undo stack (a failed ADD leaves nothing behind): read the
container's addresses from prevResult -> reserve the host ports (a collision with another
container or a listening host socket fails here, before any rule) -> publish (one firewall
transaction) -> route_localnet for 127.0.0.1 and hairpin mode on the container's bridge port
-> flush stale UDP conntrack entries. No mappings: prevResult passes through and the
firewall is never called.

DEL goes by the attachment's record in the host-port registry, so it removes exactly what was
published even when the runtime passes no portMappings; everything already gone is success.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Callable, Iterator

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import IPConfig, Result
from pycni.failpoints import failpoint
from pycni.firewall import (
    AttachmentKey,
    PortMap,
    Record,
    Registry,
    netns_identity,
    network_tag,
    select,
)
from pycni.plugins.portmap_conf import PortmapConfig, parse_for_teardown, parse_portmap_config
from pycni.plugins.portmap_net import (
    enable_hairpin,
    enable_route_localnet,
    flush_udp_conntrack,
)

__all__ = ["cmd_add", "cmd_check", "cmd_del", "cmd_gc", "cmd_status"]


def _attachment(args: CmdArgs) -> AttachmentKey:
    return AttachmentKey(network=args.network, container_id=args.container_id, ifname=args.ifname)


def _require_prev(args: CmdArgs) -> Result:
    prev = args.config.prev_result
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "must be called as chained plugin",
                       "portmap needs prevResult (put it after an interface plugin)")
    return prev


def _container_ips(args: CmdArgs, prev: Result) -> list[IPConfig]:
    """The first IPv4 and first IPv6 address of CNI_IFNAME in the sandbox (as the reference
    picks them); an address naming no interface counts."""
    chosen: dict[int, IPConfig] = {}
    for ip in prev.ips:
        if ip.interface is not None and 0 <= ip.interface < len(prev.interfaces):
            iface = prev.interfaces[ip.interface]
            if iface.name != args.ifname or not iface.sandbox:
                continue
        chosen.setdefault(ip.family, ip)
    return list(chosen.values())


def _portmap(conf: PortmapConfig, args: CmdArgs, prev: Result) -> PortMap:
    ips = _container_ips(args, prev)
    by_family = {ip.family: ip.ip for ip in ips}
    return PortMap(key=_attachment(args), mappings=conf.mappings,
                   container_ipv4=by_family.get(4), container_ipv6=by_family.get(6),
                   subnets=tuple(ip.network for ip in ips), snat=conf.snat,
                   masq_all=conf.masq_all)


def _warn(what: str, err: Exception) -> None:
    print(f"portmap: {what}: {err}", file=sys.stderr)


def _udp_flush(pm: PortMap, *, with_container: bool) -> None:
    """Informative only, as in the reference: a stale entry is not worth failing ADD for.
    Only attachments publishing UDP ports pay for it (a conntrack dump per family)."""
    ports = pm.host_ports("udp")
    if not ports:
        return
    ips = [ip for ip in (pm.container_ipv4, pm.container_ipv6) if ip] if with_container else []
    try:
        flush_udp_conntrack(ports, ips)
    except CNIError as err:
        _warn("flushing UDP conntrack entries failed", err)


def _needs_localnet(pm: PortMap) -> bool:
    return pm.snat and any(
        t.version == 4 and (t.host_addr is None or ipaddress.ip_address(t.host_addr).is_loopback)
        for t in pm.targets()
    )


def _teardown_stale(stale: list[Record], default_backend: str | None) -> None:
    """Remove the rules of owners whose container is gone (their DEL never came)."""
    for rec in stale:
        print(f"portmap: reclaiming host ports of {rec.describe()}: its netns is gone",
              file=sys.stderr)
        try:
            select(rec.backend or default_backend).portmap.teardown(rec.portmap.key, rec.portmap)
        except CNIError as err:
            _warn(f"removing the rules of {rec.describe()} failed", err)


def _setup_host_side(pm: PortMap, prev: Result) -> None:
    """route_localnet for 127.0.0.1:hostPort; hairpin mode on the container's bridge port so
    it can reach its own published ports. Neither is undone: the bridge owns the port (and
    deletes it with the veth), and other attachments rely on route_localnet."""
    if _needs_localnet(pm) and pm.container_ipv4:
        enable_route_localnet(pm.container_ipv4)
    if pm.masquerades:
        enable_hairpin([i.name for i in prev.interfaces if not i.sandbox])


@contextlib.contextmanager
def _undo_on_failure() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as undo:
        yield undo
        undo.pop_all()


def cmd_add(args: CmdArgs) -> Result:
    conf = parse_portmap_config(args)
    prev = _require_prev(args)
    if not conf.mappings:
        return prev  # pass-through: no registry, no firewall call (plugins#509)
    pm = _portmap(conf, args, prev)
    if not pm.targets():
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "no address to publish ports to",
                       f"prevResult has no IP of the address families mapped on {args.ifname}")
    firewall = select(conf.backend)
    registry = Registry(conf.data_dir)
    netns_id = netns_identity(args.netns_handle) if args.netns_handle is not None else ""
    record = Record(portmap=pm, netns=args.netns, netns_id=netns_id,
                    backend=firewall.name)
    with _undo_on_failure() as undo:
        stale = registry.reserve(record)
        undo.callback(registry.release, pm.key.label)
        failpoint("portmap.add.after_reserve")
        _teardown_stale(stale, conf.backend)
        firewall.portmap.setup(pm)
        undo.callback(firewall.portmap.teardown, pm.key, pm)
        failpoint("portmap.add.after_rules")
        _setup_host_side(pm, prev)
        failpoint("portmap.add.after_host_side")
    _udp_flush(pm, with_container=False)
    failpoint("portmap.add.after_udp_flush")
    return prev


# ---------------------------------------------------------------------------- DEL


def _collect(errors: list[str], what: str, step: Callable[[], object]) -> None:
    try:
        step()
    except CNIError as err:
        errors.append(f"{what}: {err}")


def _del_hint(conf: PortmapConfig, args: CmdArgs, record: Record | None) -> PortMap | None:
    if record is not None:
        return record.portmap
    prev = args.config.prev_result
    if conf.mappings and prev is not None:
        return _portmap(conf, args, prev)
    return None


def cmd_del(args: CmdArgs) -> None:
    conf = parse_for_teardown(args)
    key = _attachment(args)
    registry = Registry(conf.data_dir)
    errors: list[str] = []
    record: Record | None = None
    try:
        record = registry.load(key.label)
    except CNIError as err:
        errors.append(str(err))
    failpoint("portmap.del.after_load")
    if record is None and not conf.mappings and not errors:
        return  # nothing was ever published for this attachment
    hint = _del_hint(conf, args, record)
    portmap = select(record.backend if record and record.backend else conf.backend).portmap
    _collect(errors, "rules", lambda: portmap.teardown(key, hint))
    failpoint("portmap.del.after_rules")
    if hint is not None:
        _udp_flush(hint, with_container=True)
    _collect(errors, "host-port reservation", lambda: registry.release(key.label))
    failpoint("portmap.del.after_release")
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "portmap DEL incomplete", "; ".join(errors))


# ---------------------------------------------------------------------------- CHECK, GC, STATUS


def cmd_check(args: CmdArgs) -> None:
    """Verify what was published: the mappings passed, or else those recorded at ADD."""
    conf = parse_portmap_config(args)
    prev = _require_prev(args)
    registry = Registry(conf.data_dir)
    record = registry.load(_attachment(args).label)
    if conf.mappings:
        pm = _portmap(conf, args, prev)
    elif record is not None:
        pm = record.portmap
    else:
        return
    backend = record.backend if record and record.backend else conf.backend
    problems = select(backend).portmap.check(pm)
    problems += registry.holds(Record(portmap=pm))
    if problems:
        raise CNIError(ErrorCode.INTERNAL, "portmap CHECK failed", "; ".join(problems))


def _gc_one(registry: Registry, rec: Record, default_backend: str | None) -> list[str]:
    errors: list[str] = []
    portmap = select(rec.backend or default_backend).portmap
    _collect(errors, f"rules of {rec.describe()}",
             lambda: portmap.teardown(rec.portmap.key, rec.portmap))
    _udp_flush(rec.portmap, with_container=True)
    _collect(errors, "host-port reservation", lambda: registry.release(rec.label))
    return errors


def cmd_gc(args: CmdArgs) -> None:
    """Remove the records, reservations and rules of every attachment of this network that
    is not in the valid list; then, by label, any rule left without a record."""
    conf = parse_portmap_config(args)
    valid = args.valid_attachments()
    keep = {AttachmentKey(args.network, cid, ifname).label for cid, ifname in valid}
    registry = Registry(conf.data_dir)
    errors: list[str] = []
    for rec in registry.records(network_tag(args.network)):
        if rec.label not in keep:
            errors += _gc_one(registry, rec, conf.backend)
    errors += select(conf.backend).portmap.gc(args.network, valid)
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "portmap GC incomplete", "; ".join(errors))


def _missing_rules(registry: Registry, network: str, default_backend: str | None) -> list[str]:
    """Published ports of live attachments whose rules are gone (a flushed ruleset)."""
    problems: list[str] = []
    for rec in registry.records(network_tag(network)):
        if rec.is_stale():
            continue  # its container is gone: GC's business, not a connectivity problem
        portmap = select(rec.backend or default_backend).portmap
        problems += [f"{rec.describe()}: {p}" for p in portmap.check(rec.portmap)]
    return problems


def cmd_status(args: CmdArgs) -> None:
    conf = parse_portmap_config(args)
    reason = select(conf.backend).portmap.status()
    if reason:
        raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "port-mapping backend unavailable", reason)
    missing = _missing_rules(Registry(conf.data_dir), args.network, conf.backend)
    if missing:
        # 51: new ADDs work, but existing containers' published ports do not answer.
        raise CNIError(
            ErrorCode.LIMITED_CONNECTIVITY,
            "published ports are missing their rules; `pycni reconcile` restores them",
            "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else ""),
        )
