"""`pycni-dns` (also installed as `dnsname`): container names that resolve, Docker-style.

A chained plugin that only writes and tells; the resolver (``pycni.dns``, its own process)
does the DNS. ADD: the container's names and the addresses prevResult gives its interface ->
a record on disk keyed by the attachment -> ``attach`` over the resolver's control socket with
the container's netns as a descriptor (the resolver opens 127.0.0.11:53 in there, and is
started first if it is not running) -> prevResult with 127.0.0.11 as the first nameserver and
the domain as the first search domain. A failed ADD removes the record again.

DEL removes the record and tells the resolver (best effort: a resolver that is down reads the
records when it starts). GC drops the records of attachments not in the valid list. CHECK
compares the record with what ADD would write now and asks the resolver whether it serves the
attachment in that very netns. STATUS starts the resolver if needed; code 50 if it cannot.
Every call starts a resolver that is down (and it rebuilds everything from the records), so
after a crash names resolve again at the next call of this plugin on any network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import DNS, Result
from pycni.dns.names import RESOLVER_ADDRESS
from pycni.dns.records import RecordStore, Registration, netns_identity
from pycni.plugins.dns_conf import DnsConfig, parse_dns_config, parse_for_teardown

__all__ = ["cmd_add", "cmd_check", "cmd_del", "cmd_gc", "cmd_status"]


def _require_prev(args: CmdArgs) -> Result:
    prev = args.config.prev_result
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "must be called as chained plugin",
                       f"{args.config.type} needs prevResult (put it after an interface plugin)")
    return prev


def _container_ips(args: CmdArgs, prev: Result) -> tuple[str, ...]:
    """Every address prevResult gives CNI_IFNAME in the sandbox (or gives no interface)."""
    found: list[str] = []
    for ip in prev.ips:
        if ip.interface is not None and 0 <= ip.interface < len(prev.interfaces):
            iface = prev.interfaces[ip.interface]
            if iface.name != args.ifname or not iface.sandbox:
                continue
        found.append(ip.ip)
    return tuple(dict.fromkeys(found))


def _registration(args: CmdArgs, conf: DnsConfig, prev: Result, netns_id: str) -> Registration:
    return Registration(network=args.network, container_id=args.container_id,
                        ifname=args.ifname, names=conf.names, ips=_container_ips(args, prev),
                        domain=conf.domain, netns=args.netns, netns_id=netns_id)


def _with_resolver(prev: Result, conf: DnsConfig) -> Result:
    """prevResult with the resolver first, so runtimes that honour the result's dns write it
    into the container's resolv.conf."""
    old = prev.dns
    search = (conf.domain,) if conf.domain else ()
    dns = DNS(
        nameservers=(RESOLVER_ADDRESS, *(n for n in old.nameservers if n != RESOLVER_ADDRESS)),
        domain=old.domain,
        search=(*search, *(s for s in old.search if s not in search)),
        options=old.options,
    )
    return dataclasses.replace(prev, dns=dns)


def cmd_add(args: CmdArgs) -> Result:
    conf = parse_dns_config(args)
    prev = _require_prev(args)
    store = RecordStore(conf.resolver.run_dir)
    netns_fd = args.container_netns().fd
    reg = _registration(args, conf, prev, netns_identity(netns_fd))
    with contextlib.ExitStack() as undo:
        store.write(reg)
        undo.callback(store.remove, reg.label)
        conf.resolver.request({"op": "attach", "label": reg.label}, netns_fd=netns_fd)
        undo.pop_all()
    return _with_resolver(prev, conf)


def _warn(args: CmdArgs, what: str, err: Exception) -> None:
    print(f"{args.config.type}: {what}: {err}", file=sys.stderr)


def _tell(args: CmdArgs, conf: DnsConfig, store: RecordStore, doc: dict[str, str]) -> None:
    """After a removal: tell the resolver. It is started only if it still has records to
    serve (the next call restores service after a crash); a failure is only a warning."""
    try:
        conf.resolver.request(doc, start=bool(store.labels()))
    except CNIError as err:
        _warn(args, "the name resolver was not told", err)


def cmd_del(args: CmdArgs) -> None:
    conf = parse_for_teardown(args)
    store = RecordStore(conf.resolver.run_dir)
    label = Registration(network=args.network, container_id=args.container_id,
                         ifname=args.ifname).label
    try:
        store.remove(label)
    except CNIError as err:  # reported, and DEL goes on: the resolver still drops it
        _warn(args, "DEL incomplete", err)
    _tell(args, conf, store, {"op": "detach", "label": label})


def cmd_gc(args: CmdArgs) -> None:
    conf = parse_for_teardown(args)
    store = RecordStore(conf.resolver.run_dir)
    valid = {Registration(network=args.network, container_id=cid, ifname=ifname).label
             for cid, ifname in args.valid_attachments()}
    errors: list[str] = []
    for label in store.labels(args.network):
        if label not in valid:
            try:
                store.remove(label)
            except CNIError as err:
                errors.append(str(err))
    _tell(args, conf, store, {"op": "sync", "network": args.network})
    if errors:
        raise CNIError(ErrorCode.IO_FAILURE, "GC incomplete", "; ".join(errors))


def _check_record(args: CmdArgs, conf: DnsConfig, prev: Result, netns_id: str) -> Registration:
    want = _registration(args, conf, prev, netns_id)
    have = RecordStore(conf.resolver.run_dir).load(want.label)
    if have is None:
        raise CNIError(ErrorCode.INTERNAL, "not registered",
                       f"no DNS record for {want.describe()}")
    for field in ("names", "ips", "domain", "netns_id"):
        if getattr(have, field) != getattr(want, field):
            raise CNIError(ErrorCode.INTERNAL, f"DNS record differs in {field}",
                           f"{want.describe()}: recorded {getattr(have, field)!r}, expected "
                           f"{getattr(want, field)!r}")
    return want


def cmd_check(args: CmdArgs) -> None:
    conf = parse_dns_config(args)
    prev = _require_prev(args)
    want = _check_record(args, conf, prev, netns_identity(args.container_netns().fd))
    reply = conf.resolver.request({"op": "status", "label": want.label}) or {}
    if not reply.get("serving") or reply.get("netnsID") != want.netns_id:
        raise CNIError(ErrorCode.INTERNAL, "the name resolver does not serve this container",
                       f"{want.describe()}: resolver says {reply!r}")


def cmd_status(args: CmdArgs) -> None:
    conf = parse_dns_config(args)
    conf.resolver.request({"op": "status"})  # starts it if it is down; code 50 if it cannot
