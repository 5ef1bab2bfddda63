"""`pycni reconcile`: put back every firewall rule pycni's state says should exist.

After someone flushes the ruleset (``nft flush ruleset``, a firewalld reload, an
nftables.service restart: field failure #11), the attachments are still there, their rules
are not. The source of truth is the runtime's results cache (libcni's format: each entry
holds the network's conflist bytes, the netns, CNI args, capability args and the chain's
result). For each cached attachment with a result, each plugin of its conflist that owns
firewall state has its ADD-side firewall setup re-run through the driver's facets, with the
attachment key and the cached result, exactly as ADD built it:

- ``bridge`` with ``ipMasq``: the masquerade element (and the network's chain);
- ``portmap``: the DNAT/hairpin elements, from the host-port registry's record of what the
  attachment published (the record and reservations live on tmpfs, untouched by a flush);
- ``firewall``: the forward accept/isolation elements.

Each restore is a teardown by attachment key followed by the setup, so running reconcile on
intact rules changes nothing and running it twice is harmless. Entries without a result (an
ADD in progress or crashed) are skipped: GC owns those. Kernel state that a ruleset flush does
not touch (links, addresses, qdiscs, sysctls) is not reconciled. Runs in the caller's netns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pycni.cni import cache
from pycni.cni.conf import NetworkConfigList, parse_conflist
from pycni.cni.errors import CNIError
from pycni.cni.invoke import build_plugin_config
from pycni.cni.skel import CmdArgs
from pycni.cni.types import PluginRequest, Result
from pycni.firewall import AttachmentKey, Masquerade, Registry, select

__all__ = ["ReconcileReport", "cached_attachments", "reconcile"]


@dataclass
class ReconcileReport:
    restored: list[str] = field(default_factory=list)  # "<network>/<cid>/<ifname> <what>"
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def cached_attachments(cache_dir: str) -> list[tuple[str, cache.CachedAttachment | None]]:
    """Every entry of the results cache, whatever its network; corrupt ones as None."""
    directory = os.path.join(cache_dir, "results")
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    paths = [os.path.join(directory, n) for n in names if not n.startswith(".tmp-")]
    return [(path, cache.read(path)) for path in paths]


def _args(
    conflist: NetworkConfigList, plugin: dict[str, object], entry: cache.CachedAttachment
) -> CmdArgs:
    """The ADD request this plugin got, rebuilt from the cache (prevResult: the final result)."""
    stdin = build_plugin_config(
        conflist, plugin, capability_args=entry.capability_args, prev_result=entry.result
    )
    return CmdArgs(
        command="ADD",
        container_id=entry.container_id,
        netns=entry.netns,
        ifname=entry.ifname,
        cni_args=dict(entry.cni_args),
        stdin=stdin,
        config=PluginRequest.from_dict(json.loads(stdin)),
    )


def _masquerade(args: CmdArgs, key: AttachmentKey, result: Result) -> str | None:
    from pycni.plugins.bridge_conf import parse_bridge_config

    conf = parse_bridge_config(args)
    ips = [ip for ip in result.ips if ip.family in (4, 6)]
    if not conf.ip_masq or not ips:
        return None
    masquerade = select(conf.ip_masq_backend).masquerade
    masquerade.teardown(key)
    masquerade.setup(
        Masquerade(
            key=key,
            network_subnets=tuple(dict.fromkeys(ip.network for ip in ips)),
            sources=tuple(ip.ip for ip in ips),
        )
    )
    return "masquerade"


def _portmap(args: CmdArgs, key: AttachmentKey, result: Result) -> str | None:
    from pycni.plugins.portmap_conf import parse_for_teardown

    conf = parse_for_teardown(args)
    record = Registry(conf.data_dir).load(key.label)
    if record is None:
        return None  # nothing was published (or its DEL ran)
    portmap = select(record.backend or conf.backend).portmap
    portmap.teardown(key, record.portmap)
    portmap.setup(record.portmap)
    return "portmap"


def _forward(args: CmdArgs, key: AttachmentKey, result: Result) -> str | None:
    from pycni.plugins.firewall import forward_of
    from pycni.plugins.firewall_conf import parse_firewall_config

    conf = parse_firewall_config(args)
    if not result.ips:
        return None
    forward = select(conf.backend).forward
    forward.teardown(key)
    forward.setup(forward_of(key, conf, result))  # what the ADD made, internal too
    return "forward"


_RESTORERS: dict[str, Callable[[CmdArgs, AttachmentKey, Result], str | None]] = {
    "bridge": _masquerade,
    "portmap": _portmap,
    "firewall": _forward,
}


def _restore_entry(entry: cache.CachedAttachment, report: ReconcileReport) -> None:
    what = f"{entry.network}/{entry.container_id}/{entry.ifname}"
    if entry.result is None:
        report.skipped.append(f"{what}: ADD in progress or crashed (GC owns it)")
        return
    conflist = parse_conflist(entry.config, source=what)
    result = Result.from_dict(entry.result)
    key = AttachmentKey(
        network=entry.network, container_id=entry.container_id, ifname=entry.ifname
    )
    for plugin in conflist.plugins:
        restore = _RESTORERS.get(str(plugin.get("type")))
        if restore is None:
            continue
        try:
            done = restore(_args(conflist, dict(plugin), entry), key, result)
        except CNIError as err:
            report.errors.append(f"{what} {plugin.get('type')}: {err}")
            continue
        if done:
            report.restored.append(f"{what} {done}")


def reconcile(cache_dir: str = cache.DEFAULT_CACHE_DIR) -> ReconcileReport:
    """Restore the firewall state of every cached attachment; errors are collected."""
    report = ReconcileReport()
    for path, entry in cached_attachments(cache_dir):
        if entry is None:
            report.skipped.append(f"{path}: unreadable cache entry")
            continue
        try:
            _restore_entry(entry, report)
        except CNIError as err:
            report.errors.append(f"{path}: {err}")
    return report
