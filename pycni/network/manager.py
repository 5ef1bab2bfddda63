"""The network manager's operations: create, list, inspect, remove, prune.

Create and remove hold the conf dir's lock from the first read to the last write, so what a
create checks (names, subnets, bridges) is still true when it writes. A removal hides the
conflist first (no new ADD can start), DELs the attachments when forced, runs GC through the
chain with no valid attachment (every plugin drops what it keeps for the network: firewall
chains, masquerade, port and bandwidth state, IPAM reservations), then deletes the bridge, the
IPAM directory and the bridge's lock file, and the conflist last. If it must stop, the conflist
is put back: the same `rm` can be run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycni.cni.errors import CNIError, ErrorCode
from pycni.network import store
from pycni.network.attachments import (
    Attachment,
    container_names,
    count_attachments,
    list_attachments,
)
from pycni.network.config import NetworkSettings
from pycni.network.names import BUILTIN_NETWORKS, invalid
from pycni.network.store import StoredNetwork

if TYPE_CHECKING:  # imported where used: `ls` pays for neither
    from pycni.cni.invoke import Invoker
    from pycni.network.spec import CreateRequest, Taken
    from pycni.network.view import NetworkView

__all__ = [
    "Failures",
    "NetworkInUse",
    "NetworkSummary",
    "create_network",
    "inspect_networks",
    "list_networks",
    "prune_networks",
    "remove_networks",
]


# (network name, what went wrong) for each network a multi-name command could not handle
Failures = list[tuple[str, CNIError]]


class NetworkInUse(CNIError):
    """``rm`` without ``--force`` of a network with attachments; names them."""

    def __init__(self, name: str, attached: Sequence[Attachment]) -> None:
        labels = sorted({a.label for a in attached})
        super().__init__(ErrorCode.INVALID_NETWORK_CONFIG,
                         f"network {name} has {len(attached)} attachment(s)",
                         f"containers {', '.join(labels)}; disconnect them or use --force")
        self.attached = tuple(attached)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSummary:
    network: StoredNetwork
    attachments: int


# ---------------------------------------------------------------------------------- create


def _taken(networks: Sequence[StoredNetwork]) -> Taken:
    from pycni.network import hostnet  # pyroute2: only for the commands that need the kernel
    from pycni.network.spec import Taken

    return Taken(
        networks={n.name: n.path for n in networks},
        subnets=tuple((s, n.name) for n in networks for s in n.view.networks()),
        bridges={n.view.bridge: n.name for n in networks if n.view.bridge},
        host_prefixes=hostnet.host_prefixes(),
        host_links=hostnet.host_links(),
    )


def _validate_rendered(doc: dict[str, object], path: str) -> None:
    """The plugins' own parsers agree with what is about to be written."""
    from pycni.cni.conf import conflist_from_doc
    from pycni.ipam.config import parse_ipam_config

    conflist = conflist_from_doc(doc, json.dumps(doc).encode(), path)
    parse_ipam_config(conflist.plugins[0]["ipam"], cni_version=conflist.cni_version)


def create_network(settings: NetworkSettings, req: CreateRequest
                   ) -> tuple[StoredNetwork, list[str]]:
    """Write the network's conflist; it and the warnings worth printing."""
    from pycni.network.render import dns_plugin, render_conflist
    from pycni.network.spec import build_spec

    extra = [dns_plugin(domain=settings.dns_domain, run_dir=settings.dns_run_dir)] \
        if req.dns else []
    os.makedirs(settings.conf_dir, mode=0o755, exist_ok=True)
    with store.locked(settings.conf_dir):
        networks = store.load_networks(settings.conf_dir)
        spec, warnings = build_spec(req, _taken(networks), settings.pools(), extra_plugins=extra)
        doc = render_conflist(spec, ipam_data_dir=settings.ipam_data_dir,
                              firewall_backend=settings.firewall_backend)
        path = store.conflist_path(settings.conf_dir, spec.name)
        _validate_rendered(doc, path)
        created = store.load_network(store.write_new(settings.conf_dir, spec.name, doc))
    return created, warnings


# ---------------------------------------------------------------------------- ls, inspect


def list_networks(settings: NetworkSettings) -> list[NetworkSummary]:
    networks = store.load_networks(settings.conf_dir)
    counts = count_attachments(settings.cache_dir, {n.name for n in networks})
    return [NetworkSummary(network=n, attachments=counts.get(n.name, 0)) for n in networks]


def inspect_networks(settings: NetworkSettings, names: Sequence[str]
                     ) -> list[tuple[StoredNetwork, list[Attachment]]]:
    networks = store.load_networks(settings.conf_dir)
    found = [store.find_network(networks, name, settings.conf_dir) for name in names]
    known = container_names(settings.state_dir)
    return [(n, _with_dns_names(n, list_attachments(settings.cache_dir, n.name, names=known)))
            for n in found]


def _with_dns_names(network: StoredNetwork, attached: list[Attachment]) -> list[Attachment]:
    """Each attachment with the names its record in the network's resolver holds (none
    where names do not resolve; an unreadable record is said on stderr and shows none)."""
    if network.view.dns is None:
        return attached
    from pycni.dns.records import DEFAULT_RUN_DIR, RecordStore, Registration

    records = RecordStore(network.view.dns.run_dir or DEFAULT_RUN_DIR)
    named = []
    for attachment in attached:
        label = Registration(network=network.name, container_id=attachment.container_id,
                             ifname=attachment.ifname).label
        try:
            record = records.load(label)
        except CNIError as err:
            print(f"warning: network {network.name}: {err}", file=sys.stderr)
            record = None
        named.append(dataclasses.replace(attachment, dns_names=record.names if record else ()))
    return named


# ----------------------------------------------------------------------------- rm, prune


def _removable(network: StoredNetwork) -> StoredNetwork:
    if network.name in BUILTIN_NETWORKS:
        raise invalid(f"network {network.name} is built in and cannot be removed")
    if not network.view.managed:
        raise invalid(f"network {network.name} was not created by `pycni network create`",
                      f"remove {network.path} yourself if you mean to")
    return network


def _attached(settings: NetworkSettings, network: StoredNetwork) -> list[Attachment]:
    return list_attachments(settings.cache_dir, network.name,
                            names=container_names(settings.state_dir))


def _disconnect(invoker: Invoker, network: StoredNetwork,
                attached: Sequence[Attachment]) -> None:
    """DEL every attachment; all are tried, the failures reported together."""
    from pycni.network.attach import detach

    errors = []
    for attachment in attached:
        try:
            detach(invoker, network, attachment)
        except CNIError as err:
            errors.append(f"DEL {attachment.label}/{attachment.ifname}: {err}")
    if errors:
        raise CNIError(ErrorCode.INTERNAL, f"cannot disconnect every container of {network.name}",
                       "; ".join(errors))


def _remove_host_state(view: NetworkView) -> None:
    """The bridge (and its lock file) and the IPAM directory; already gone is fine."""
    import shutil

    from pycni.ipam.config import DEFAULT_DATA_DIR
    from pycni.lockfile import network_lock_path
    from pycni.network import hostnet

    if view.bridge:
        hostnet.remove_bridge(view.bridge)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(network_lock_path("bridge", view.bridge))
    if view.ipam_driver == "host-local":
        shutil.rmtree(os.path.join(view.ipam_data_dir or DEFAULT_DATA_DIR, view.name),
                      ignore_errors=True)


def _teardown(settings: NetworkSettings, network: StoredNetwork,
              attached: Sequence[Attachment]) -> None:
    from pycni.cni.invoke import Invoker
    from pycni.plugins.runner import FORKED

    invoker = Invoker(path=settings.cni_path, cache_dir=settings.cache_dir,
                      timeout=settings.timeout, runner=FORKED)
    _disconnect(invoker, network, attached)
    invoker.gc(network.conflist, [])  # every plugin drops what it keeps for the network
    _remove_host_state(network.view)


def _remove_one(settings: NetworkSettings, network: StoredNetwork, *, force: bool) -> None:
    attached = _attached(settings, network)
    if attached and not force:
        raise NetworkInUse(network.name, attached)
    hidden = store.withdraw(network)
    try:
        # An ADD that read the conflist before it was hidden has cached its entry by now.
        attached = _attached(settings, network)
        if attached and not force:
            raise NetworkInUse(network.name, attached)
        _teardown(settings, network, attached)
    except BaseException:
        store.restore(hidden, network)
        raise
    os.unlink(hidden)


def _each(names: Sequence[str], act: Callable[[str], None]) -> Failures:
    """Run ``act`` for every name, not stopping at a failure; the (name, error) met."""
    failures: Failures = []
    for name in names:
        try:
            act(name)
        except CNIError as err:
            failures.append((name, err))
    return failures


def remove_networks(settings: NetworkSettings, names: Sequence[str], *, force: bool = False,
                    removed: Callable[[str], None] = lambda _name: None) -> Failures:
    """Remove each network (``removed`` is told each success); the failures."""
    def remove(name: str) -> None:
        with store.locked(settings.conf_dir):
            networks = store.load_networks(settings.conf_dir)
            network = _removable(store.find_network(networks, name, settings.conf_dir))
            _remove_one(settings, network, force=force)
        removed(name)

    return _each(names, remove)


def prune_networks(settings: NetworkSettings, *,
                   removed: Callable[[str], None] = lambda _name: None) -> Failures:
    """Remove every network `pycni network create` made that has no attachment."""
    unused = [s.network.name for s in list_networks(settings)
              if s.network.view.managed and not s.attachments]
    return remove_networks(settings, unused, removed=removed)
