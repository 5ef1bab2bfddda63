"""`firewall` (chained after `bridge`): forwarding accepted despite a host FORWARD DROP, and
pycni networks isolated from one another.

ADD reads ``prevResult`` (required) and hands the container's addresses and the network's
subnets to the firewall's forward facet (``pycni.firewall.Forward`` explains the rules); the result
passes through unchanged. DEL and GC find the state by attachment key, so they need no
``prevResult`` and work after the container's netns is gone. STATUS reports code 51 when the
host's forward policy would drop the traffic of existing attachments because pycni's accept
rules are missing (Docker restarted and rebuilt its chains, say); the next ADD restores them.
"""

from __future__ import annotations

import sys

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import Result
from pycni.firewall import AttachmentKey, Forward, select
from pycni.plugins.firewall_conf import FirewallConfig, parse_firewall_config

__all__ = ["cmd_add", "cmd_check", "cmd_del", "cmd_gc", "cmd_status", "forward_of"]


def _key(args: CmdArgs) -> AttachmentKey:
    return AttachmentKey(network=args.network, container_id=args.container_id, ifname=args.ifname)


def _previous(args: CmdArgs) -> Result:
    prev = args.config.prev_result
    if prev is None:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"firewall {args.command} needs prevResult",
            "chain firewall after a plugin that assigns addresses (bridge)",
        )
    return prev


def forward_of(key: AttachmentKey, conf: FirewallConfig, result: Result) -> Forward:
    """What the forward facet makes for one attachment (ADD, CHECK, and `pycni reconcile`)."""
    return Forward(
        key=key,
        network_subnets=tuple(dict.fromkeys(ip.network for ip in result.ips)),
        sources=tuple(ip.ip for ip in result.ips),
        ingress_policy=conf.ingress_policy,
        internal=conf.internal,
    )


def _forward(args: CmdArgs, conf: FirewallConfig, prev: Result) -> Forward:
    return forward_of(_key(args), conf, prev)


def cmd_add(args: CmdArgs) -> Result:
    conf = parse_firewall_config(args)
    prev = _previous(args)
    select(conf.backend).forward.setup(_forward(args, conf, prev))
    return prev


def cmd_del(args: CmdArgs) -> None:
    try:
        conf = parse_firewall_config(args)
    except CNIError as err:
        # DEL must not abort the runtime's reverse chain (field failure #2): an ADD refused for
        # its config is rolled back with this same config. The state is found by key anyway.
        print(f"firewall: DEL with the detected backend, config refused: {err}", file=sys.stderr)
        conf = FirewallConfig()
    select(conf.backend).forward.teardown(_key(args))


def cmd_check(args: CmdArgs) -> None:
    conf = parse_firewall_config(args)
    problems = select(conf.backend).forward.check(_forward(args, conf, _previous(args)))
    if problems:
        raise CNIError(ErrorCode.INTERNAL, "firewall CHECK failed", "; ".join(problems))


def cmd_status(args: CmdArgs) -> None:
    conf = parse_firewall_config(args)
    firewall = select(conf.backend)
    unusable = firewall.status()
    if unusable:
        raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "firewall backend unavailable", unusable)
    reason = firewall.forward.status()
    if reason:
        raise CNIError(
            ErrorCode.LIMITED_CONNECTIVITY,
            "the host's forward policy drops traffic of existing containers",
            reason,
        )


def cmd_gc(args: CmdArgs) -> None:
    conf = parse_firewall_config(args)
    errors = select(conf.backend).forward.gc(args.network, args.valid_attachments())
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "firewall GC incomplete", "; ".join(errors))
