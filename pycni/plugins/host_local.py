"""`host-local` IPAM: addresses from local range sets, state in files (reference layout).

The engine is ``pycni.ipam.hostlocal``; this module maps CNI verbs onto it and builds the
IPAM result (ips with gateways, routes, dns).
"""

from __future__ import annotations

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import DNS, IPConfig, Result, Route
from pycni.ipam import hostlocal
from pycni.ipam.config import HostLocalConfig, load_config
from pycni.ipam.requested import requested_ips

__all__ = ["cmd_add", "cmd_check", "cmd_del", "cmd_gc", "cmd_status", "parse_resolv_conf"]


def _config(args: CmdArgs) -> HostLocalConfig:
    return load_config(args.config.raw)


def parse_resolv_conf(path: str) -> DNS:
    """nameserver/domain/search/options lines of a resolv.conf, as the reference reads them."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise CNIError(
            ErrorCode.IO_FAILURE, f"cannot read ipam.resolvConf {path}", str(err)
        ) from err
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    domain = ""
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            servers.append(values[0])
        elif key == "domain":
            domain = values[0]
        elif key == "search":
            search = values
        elif key == "options":
            options.extend(values)
    return DNS(
        nameservers=tuple(servers), domain=domain, search=tuple(search), options=tuple(options)
    )


def cmd_add(args: CmdArgs) -> Result:
    config = _config(args)
    requested = requested_ips(
        cni_args=dict(args.cni_args),
        args=args.config.args,
        runtime_config=args.config.runtime_config,
    )
    allocations = hostlocal.allocate(
        config,
        network=args.network,
        container_id=args.container_id,
        ifname=args.ifname,
        requested=requested,
    )
    return Result(
        cni_version=args.cni_version,
        ips=tuple(IPConfig(address=a.address, gateway=a.gateway) for a in allocations),
        routes=tuple(
            Route(
                dst=str(r.dst),
                gw=str(r.gw) if r.gw else None,
                mtu=r.mtu,
                advmss=r.advmss,
                priority=r.priority,
                table=r.table,
                scope=r.scope,
            )
            for r in config.routes
        ),
        dns=parse_resolv_conf(config.resolv_conf) if config.resolv_conf else DNS(),
    )


def cmd_del(args: CmdArgs) -> None:
    hostlocal.release(
        _config(args), network=args.network, container_id=args.container_id, ifname=args.ifname
    )


def cmd_check(args: CmdArgs) -> None:
    found = hostlocal.find(
        _config(args), network=args.network, container_id=args.container_id, ifname=args.ifname
    )
    if not found:
        raise CNIError(
            ErrorCode.INTERNAL,
            "host-local CHECK failed",
            f"no address reserved for {args.container_id}/{args.ifname} on {args.network}",
        )


def cmd_status(args: CmdArgs) -> None:
    problem = hostlocal.status(_config(args), network=args.network)
    if problem:
        raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "host-local cannot allocate", problem)


def cmd_gc(args: CmdArgs) -> None:
    errors = hostlocal.gc(_config(args), network=args.network, valid=args.valid_attachments())
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "host-local GC incomplete", "; ".join(errors))
