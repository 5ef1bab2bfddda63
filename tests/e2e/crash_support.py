"""Leak oracles shared by the crash-consistency, soak and reconcile tests.

Everything pycni leaves on a host for an attachment, read back independently of the plugins:
IPAM files and index entries, host veths, ifbs, nft map elements and per-attachment chains,
results-cache entries and host-port reservations. ``leaks`` lists what is there beyond the
attachments a test expects to be alive.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycni.firewall.model import AttachmentKey
from pycni.ipam.store import attachment_key, parse_owner
from tests.e2e.bridge_support import Sandbox, bridge_conflist, link_names, nsexec

NETWORK = "testnet"
PYCNI_TABLES = ("pycni", "pycni_portmap")


def full_conflist(sandbox: Sandbox, hostports: Path, *, name: str = NETWORK) -> dict[str, Any]:
    """The default chain (bridge+host-local -> portmap -> bandwidth -> firewall), private dirs."""
    conf = bridge_conflist(name=name, data_dir=sandbox.data_dir, hairpinMode=True)
    conf["plugins"] += [
        {"type": "portmap", "capabilities": {"portMappings": True}, "dataDir": str(hostports)},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        {"type": "firewall"},
    ]
    return conf


def capability_args(port: int) -> dict[str, Any]:
    """A TCP and a UDP mapping (UDP exercises the conntrack flush) and both shaping paths."""
    return {
        "portMappings": [
            {"hostPort": port, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": port, "containerPort": 53, "protocol": "udp"},
        ],
        "bandwidth": {
            "ingressRate": 8_000_000,
            "ingressBurst": 160_000,
            "egressRate": 8_000_000,
            "egressBurst": 160_000,
        },
    }


@dataclass(frozen=True, slots=True)
class HostState:
    ips: dict[str, str]  # IP file -> its owner line(s)
    index: frozenset[str]  # by-attachment entry names
    veths: frozenset[str]
    ifbs: frozenset[str]
    nft_elements: tuple[str, ...]  # "table/map: element" of pycni's tables
    nft_chains: frozenset[str]  # non-base chains of pycni's tables
    cache: frozenset[str]
    reservations: frozenset[str]  # host-port registry files (records and port claims)


def _nft_json(host_ns: str) -> list[dict[str, Any]]:
    out = nsexec(host_ns, "nft", "-j", "list", "ruleset")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout or '{"nftables": []}')["nftables"])


def _nft_state(host_ns: str) -> tuple[tuple[str, ...], frozenset[str]]:
    elements: list[str] = []
    chains: set[str] = set()
    for obj in _nft_json(host_ns):
        for kind in ("map", "set"):
            body = obj.get(kind)
            if body and body.get("table") in PYCNI_TABLES:
                elements += [f"{body['table']}/{body['name']}: {e}" for e in body.get("elem", [])]
        chain = obj.get("chain")
        # Base chains carry a hook; the others are per-network or per-attachment chains.
        if chain and chain.get("table") in PYCNI_TABLES and "hook" not in chain:
            chains.add(f"{chain['table']}/{chain['name']}")
    return tuple(sorted(elements)), frozenset(chains)


def _files(root: Path) -> frozenset[str]:
    if not root.exists():
        return frozenset()
    return frozenset(
        str(Path(d, f).relative_to(root)) for d, _, files in os.walk(root) for f in files
    )


def host_state(sandbox: Sandbox, hostports: Path, network: str = NETWORK) -> HostState:
    ipam = sandbox.data_dir / network
    ips = {n: (ipam / n).read_bytes().decode() for n in sandbox.allocations(network)}
    index_dir = ipam / "by-attachment"
    index = (
        frozenset(p.name for p in index_dir.iterdir() if not p.name.startswith("."))
        if index_dir.exists()
        else frozenset()
    )
    links = link_names(sandbox.host_ns)
    elements, chains = _nft_state(sandbox.host_ns)
    return HostState(
        ips=ips,
        index=index,
        veths=frozenset(n for n in links if n.startswith("veth")),
        ifbs=frozenset(n for n in links if n.startswith("bwp")),
        nft_elements=elements,
        nft_chains=chains,
        cache=frozenset(n for n in _files(sandbox.cache_dir) if "/.tmp-" not in n),
        reservations=frozenset(n for n in _files(hostports) if not n.endswith("/lock")),
    )


def leaks(
    sandbox: Sandbox,
    hostports: Path,
    alive: Collection[str] = (),
    *,
    network: str = NETWORK,
    ifname: str = "eth0",
) -> list[str]:
    """What is on the host that no attachment in ``alive`` (container ids) accounts for."""
    state = host_state(sandbox, hostports, network)
    keys = [AttachmentKey(network=network, container_id=c, ifname=ifname) for c in alive]
    tags = {k.tag for k in keys}
    found: list[str] = []
    found += [
        f"IP {ip} ({owner.strip()!r})"
        for ip, owner in state.ips.items()
        if parse_owner(owner) not in {(c, ifname) for c in alive}
    ]
    live_index = {attachment_key(c, ifname) for c in alive}
    found += [f"IPAM index entry {n}" for n in state.index - live_index]
    found += [f"veth {n}" for n in state.veths if n not in _veths(network, alive, ifname)]
    found += [f"ifb {n}" for n in state.ifbs if n not in _ifbs(network, alive, ifname)]
    live_ips = {ip for ip, owner in state.ips.items() if ip not in _leaked_ips(found)}
    found += [
        f"nft element {e}"
        for e in state.nft_elements
        if not any(ip in e for ip in live_ips) and not any(t in e for t in tags)
    ]
    # No chain is per attachment: masq-, fwd- and hp-<network tag>-<subnet tag> are shared by
    # the network's attachments and stay with it by design. An attachment owns map elements.
    found += [
        f"cache entry {n}"
        for n in state.cache
        if not any(n.endswith(f"{network}-{c}-{ifname}") for c in alive)
    ]
    found += [
        f"host-port reservation {n}"
        for n in state.reservations
        if not any(k.label in n or _reservation_owned(hostports, n, k.label) for k in keys)
    ]
    return found


def _leaked_ips(found: Iterable[str]) -> set[str]:
    return {f.split()[1] for f in found if f.startswith("IP ")}


def _veths(network: str, alive: Collection[str], ifname: str) -> set[str]:
    from pycni.cni.skel import CmdArgs
    from pycni.cni.types import PluginRequest
    from pycni.plugins.bridge import host_veth_name

    config = PluginRequest.from_dict({"cniVersion": "1.1.0", "name": network, "type": "bridge"})
    return {
        host_veth_name(CmdArgs(command="ADD", container_id=c, ifname=ifname, config=config))
        for c in alive
    }


def _ifbs(network: str, alive: Collection[str], ifname: str) -> set[str]:
    from pycni.plugins.bandwidth import ifb_name

    return {ifb_name(network, c, ifname) for c in alive}


def _reservation_owned(hostports: Path, relative: str, label: str) -> bool:
    try:
        return (hostports / relative).read_text().strip() == label
    except OSError:
        return False
