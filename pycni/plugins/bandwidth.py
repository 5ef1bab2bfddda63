"""`bandwidth`: rate limits for a veth attachment, as a chained CNI plugin (reference §2.5).

The host end of the container's veth is found through the container interface's peer index.
- ingress (into the container): a tbf root qdisc on the host veth, whose egress *is* the
  container's ingress;
- egress (out of the container): what the container sends arrives on the host veth's ingress;
  an ingress qdisc there redirects all of it (u32 match-all, mirred egress redirect) to an ifb
  device whose root tbf shapes it. The ifb is named from a hash of the attachment and carries
  an alias naming its network, so DEL and GC find it in the kernel without any state file.
  The alias takes a second request (the kernel ignores it in the one that creates the ifb):
  a failed second request deletes the ifb again, and an ifb of the attachment's own name
  without any alias (a crash between the two) is that attachment's to DEL or replace.

No limits configured: the result passes through with no kernel call at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import sys
from collections.abc import Callable, Iterator
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode, LinkNotFound, NetNSNotFound
from pycni.cni.skel import CmdArgs
from pycni.cni.types import Interface, Result
from pycni.failpoints import failpoint
from pycni.net import links, tc, veth_pair
from pycni.net.ipr import IPR, open_ipr
from pycni.plugins.bandwidth_conf import BandwidthConfig, Limit, parse_bandwidth_config

__all__ = ["cmd_add", "cmd_check", "cmd_del", "cmd_gc", "ifb_alias", "ifb_name", "owns_ifb"]

IFB_PREFIX: Final = "bwp"
_IFNAME_MAX: Final = 15
ALIAS_PREFIX: Final = "pycni-bandwidth"
_ALIAS_MAX: Final = tc.IFALIAS_MAX


def ifb_name(network: str, container_id: str, ifname: str) -> str:
    """``bwp`` + hex(sha512(attachment)), 15 characters: stable, so DEL needs no state."""
    digest = hashlib.sha512(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()
    return (IFB_PREFIX + digest)[:_IFNAME_MAX]


def _network_tag(network: str) -> str:
    return f"{ALIAS_PREFIX} net={hashlib.sha256(network.encode()).hexdigest()[:16]} "


def ifb_alias(network: str, container_id: str, ifname: str) -> str:
    """The ifb's IFLA_IFALIAS: a fixed-length network tag GC matches on, then the attachment
    for humans (cut to the 254 bytes the kernel takes, after the tag; names are ASCII, so
    cutting is safe)."""
    return (_network_tag(network) + f"{network}/{container_id}/{ifname}")[:_ALIAS_MAX]


def owns_ifb(alias: str, network: str) -> bool:
    """True if an ifb with ``alias`` was made by this plugin for ``network``."""
    return alias.startswith(_network_tag(network))


def _ours_by_name(ifb: tc.IfbInfo, network: str) -> bool:
    """An ifb found under the attachment's own derived name is ours if it carries our
    network's tag, or no alias at all: an ADD that died between creating and naming it."""
    return not ifb.alias or owns_ifb(ifb.alias, network)


def _names(args: CmdArgs) -> tuple[str, str]:
    return (
        ifb_name(args.network, args.container_id, args.ifname),
        ifb_alias(args.network, args.container_id, args.ifname),
    )


def _require_prev(args: CmdArgs) -> Result:
    prev = args.config.prev_result
    if prev is None:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "bandwidth must be called as a chained plugin",
            "the request has no prevResult",
        )
    return prev


def _tbf(limit: Limit, tick: float) -> tc.Tbf:
    return tc.tbf_for(rate=limit.rate_bytes, burst=limit.burst_bytes, tick=tick)


def _find_host_veth(host: IPR, args: CmdArgs) -> links.LinkInfo:
    """The host end of the container's veth, by the container interface's peer index."""
    with open_ipr(args.container_netns()) as container:
        inner = links.get_link(container, args.ifname)
    if inner is None:
        raise CNIError(ErrorCode.INTERNAL, f"{args.ifname} not found in {args.netns}")
    if inner.kind != "veth":
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "bandwidth needs a veth attachment",
            f"{args.ifname} is a {inner.kind or 'device without a kind'}",
        )
    peer = veth_pair.find_veth_peer_in(host, inner)
    if peer is None:
        raise CNIError(
            ErrorCode.INTERNAL, f"the host end of {args.ifname} is not in this network namespace"
        )
    return peer


# ---------------------------------------------------------------------------- ADD


@contextlib.contextmanager
def _undo_on_failure() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as undo:
        yield undo
        undo.pop_all()  # success: keep everything


def _remove_leftover_ifb(host: IPR, args: CmdArgs, name: str) -> None:
    """A crashed ADD of this very attachment may have left its ifb: ours, so replace it."""
    existing = tc.get_ifb(host, name)
    if existing is None:
        if links.link_exists(host, name):
            raise CNIError(ErrorCode.INTERNAL, f"link {name} exists and is not an ifb")
        return
    if not _ours_by_name(existing, args.network):
        raise CNIError(
            ErrorCode.INTERNAL,
            f"ifb {name} exists and is not this network's",
            f"its alias is {existing.alias!r}",
        )
    tc.delete_ifb(host, name)


def _setup_egress(
    host: IPR, args: CmdArgs, veth: links.LinkInfo, shape: tc.Tbf, undo: contextlib.ExitStack
) -> tc.IfbInfo:
    name, alias = _names(args)
    _remove_leftover_ifb(host, args, name)
    index = tc.add_ifb(host, name, mtu=veth.mtu)
    undo.callback(tc.delete_ifb, host, name)  # also if naming it fails
    failpoint("bandwidth.add.after_ifb_create")
    ifb = tc.configure_ifb(host, name, index, alias=alias)
    failpoint("bandwidth.add.after_ifb")
    tc.set_tbf(host, ifb.index, shape)  # shaped before any traffic is redirected to it
    failpoint("bandwidth.add.after_ifb_tbf")
    undo.callback(tc.delete_ingress_qdisc, host, veth.index)  # even if only half was made
    tc.setup_redirect(host, veth.index, ifb.index)
    failpoint("bandwidth.add.after_redirect")
    return ifb


def _with_ifb(prev: Result, args: CmdArgs, ifb: tc.IfbInfo | None) -> Result:
    interfaces = prev.interfaces
    if ifb is not None:
        interfaces = (*interfaces, Interface(name=ifb.name, mac=ifb.mac))
    return dataclasses.replace(prev, cni_version=args.cni_version, interfaces=interfaces)


def cmd_add(args: CmdArgs) -> Result:
    conf = parse_bandwidth_config(args)
    prev = _require_prev(args)
    if not conf.limited:
        return _with_ifb(prev, args, None)  # pass-through: no kernel call
    tick = tc.tick_in_usec()
    ingress = _tbf(conf.ingress, tick) if conf.ingress else None
    egress = _tbf(conf.egress, tick) if conf.egress else None
    ifb = None
    with open_ipr() as host, _undo_on_failure() as undo:
        veth = _find_host_veth(host, args)
        failpoint("bandwidth.add.after_find_veth")
        if ingress is not None:
            undo.callback(tc.delete_root_qdisc, host, veth.index)
            tc.set_tbf(host, veth.index, ingress)
            failpoint("bandwidth.add.after_ingress")
        if egress is not None:
            ifb = _setup_egress(host, args, veth, egress, undo)
    return _with_ifb(prev, args, ifb)


# ---------------------------------------------------------------------------- DEL, GC


def _collect(errors: list[str], what: str, step: Callable[[], object]) -> None:
    try:
        step()
    except (NetNSNotFound, LinkNotFound):
        pass  # the container or its veth is gone, and what we put on it with it
    except CNIError as err:
        errors.append(f"{what}: {err}")


def _teardown_veth(host: IPR, args: CmdArgs, ifb_index: int | None) -> None:
    """Take our qdiscs off the host veth if it still exists (usually `bridge` deletes it
    right after us): a redirect to a deleted ifb would drop everything the container sends."""
    if args.netns_handle is None:
        return
    with open_ipr(args.netns_handle) as container:
        inner = links.get_link(container, args.ifname)
    veth = veth_pair.find_veth_peer_in(host, inner) if inner is not None else None
    if veth is None:
        return  # the veth is gone, and our qdiscs with it
    if ifb_index is not None and ifb_index in tc.get_redirect_targets(host, veth.index):
        tc.delete_ingress_qdisc(host, veth.index)
    root = tc.get_root_tbf(host, veth.index)
    if root is not None:
        tc.delete_root_qdisc(host, veth.index)


def cmd_del(args: CmdArgs) -> None:
    """Best-effort and config-independent: the ifb is found by name, the veth by peer index."""
    name, _ = _names(args)
    errors: list[str] = []
    with open_ipr() as host:
        ifb = tc.get_ifb(host, name)
        if ifb is not None and not _ours_by_name(ifb, args.network):
            print(f"bandwidth: leaving {name} alone: alias {ifb.alias!r}", file=sys.stderr)
            ifb = None
        index = ifb.index if ifb is not None else None
        _collect(errors, "host veth qdiscs", lambda: _teardown_veth(host, args, index))
        failpoint("bandwidth.del.after_veth_qdiscs")
        if ifb is not None:
            _collect(errors, f"ifb {name}", lambda: tc.delete_ifb(host, name))
        failpoint("bandwidth.del.after_ifb")
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "bandwidth DEL incomplete", "; ".join(errors))


def cmd_gc(args: CmdArgs) -> None:
    """Remove this network's ifbs whose attachment is not in the valid list."""
    valid = {ifb_name(args.network, cid, ifname) for cid, ifname in args.valid_attachments()}
    errors: list[str] = []
    with open_ipr() as host:
        for ifb in tc.list_ifbs(host):
            if owns_ifb(ifb.alias, args.network) and ifb.name not in valid:
                print(f"bandwidth: GC removes {ifb.name} ({ifb.alias})", file=sys.stderr)
                remove = functools.partial(tc.delete_ifb, host, ifb.name)
                _collect(errors, f"ifb {ifb.name}", remove)
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "bandwidth GC incomplete", "; ".join(errors))


# ---------------------------------------------------------------------------- CHECK


def _compare(what: str, have: tc.Tbf | None, want: tc.Tbf) -> list[str]:
    if have is None:
        return [f"no tbf on {what}"]
    problems = []
    for field in ("rate", "limit", "buffer"):
        got, expected = getattr(have, field), getattr(want, field)
        if got != expected:
            problems.append(f"tbf {field} on {what} is {got}, expected {expected}")
    return problems


def _validate(host: IPR, args: CmdArgs, conf: BandwidthConfig) -> list[str]:
    tick = tc.tick_in_usec()
    veth = _find_host_veth(host, args)
    problems: list[str] = []
    if conf.ingress:
        have = tc.get_root_tbf(host, veth.index)
        problems += _compare(f"host veth {veth.name}", have, _tbf(conf.ingress, tick))
    if conf.egress:
        name, _ = _names(args)
        ifb = tc.get_ifb(host, name)
        if ifb is None:
            return [*problems, f"ifb {name} is missing"]
        have = tc.get_root_tbf(host, ifb.index)
        problems += _compare(f"ifb {name}", have, _tbf(conf.egress, tick))
        if ifb.index not in tc.get_redirect_targets(host, veth.index):
            problems.append(f"host veth {veth.name} does not redirect to {name}")
        if not ifb.up:
            problems.append(f"ifb {name} is down")
    return problems


def cmd_check(args: CmdArgs) -> None:
    conf = parse_bandwidth_config(args)
    _require_prev(args)
    if not conf.limited:
        return
    with open_ipr() as host:
        problems = _validate(host, args, conf)
    if problems:
        raise CNIError(ErrorCode.INTERNAL, "bandwidth CHECK failed", "; ".join(problems))
