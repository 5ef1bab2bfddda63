"""Masquerade on iptables (the fallback where nftables is not usable): the layout, its restore
scripts and checker (pure text), and the facet.

Layout in the nat table (per IP version, with ``ip6tables`` for IPv6)::

    -A POSTROUTING -m comment --comment pycni -j PYCNI-POSTROUTING
    -A PYCNI-POSTROUTING -s 10.88.0.2/32 -m comment --comment <label> -j PYCNI-M-<net>-<chain>
    -A PYCNI-M-<net>-<chain> -d 10.88.0.0/16 -j RETURN       # one chain per network (+subnets)
    -A PYCNI-M-<net>-<chain> -d 224.0.0.0/4 -j RETURN
    -A PYCNI-M-<net>-<chain> -j MASQUERADE

One rule per container address, tagged with the attachment label, so DEL and GC find it by
key. The scripts are for ``iptables-restore --noflush``: one exec applies all of them at once
(``engine.script`` says why the table is read first, under the lock).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from typing import Final

from pycni.cni.errors import CNIError
from pycni.firewall.iptables import engine
from pycni.firewall.iptables.engine import FIREWALL_LOCK, SaveState, gc_lines, host, script
from pycni.firewall.iptables.feature import TextLayout, XtablesFacet, address_versions
from pycni.firewall.model.masquerade import Masquerade

__all__ = [
    "JUMP_COMMENT",
    "TOP_CHAIN",
    "IptMasquerade",
    "SaveState",
    "check_state",
    "gc_script",
    "network_chain",
    "network_chain_rules",
    "parse_save",
    "setup_script",
    "teardown_script",
]

TOP_CHAIN: Final = "PYCNI-POSTROUTING"
JUMP_COMMENT: Final = "pycni"
_CHAIN_PREFIX: Final = "PYCNI-M-"
_MULTICAST: Final = {4: "224.0.0.0/4", 6: "ff00::/8"}


def network_chain(m: Masquerade) -> str:
    """28 characters, iptables' limit: prefix, 10 hex of the network tag, 9 of the chain tag."""
    return f"{_CHAIN_PREFIX}{m.key.network_tag[:10]}-{m.chain_tag[:9]}"


def _network_prefix(network_tag: str) -> str:
    return f"{_CHAIN_PREFIX}{network_tag[:10]}-"


def parse_save(text: str) -> SaveState:
    """The nat table of an ``iptables-save -t nat`` dump."""
    return engine.parse_save(text, "nat")


def network_chain_rules(m: Masquerade, version: int) -> list[tuple[str | None, str]]:
    """(destination, target) of each rule of the network chain, in order."""
    exempt = [*m.subnets_of(version), _MULTICAST[version]]
    return [(cidr, "RETURN") for cidr in exempt] + [(None, "MASQUERADE")]


def _norm_dest(dest: str | None) -> str | None:
    if dest is None or dest.startswith("!"):
        return dest
    return str(ipaddress.ip_network(dest, strict=False))


def _chain_matches(state: SaveState, chain: str, want: list[tuple[str | None, str]]) -> bool:
    have = [(_norm_dest(r.dest), r.target or "") for r in state.rules_of(chain)]
    return chain in state.chains and have == want


def _script(declare: Iterable[str], lines: Iterable[str]) -> str | None:
    return script("nat", declare, lines)


def _infrastructure(state: SaveState, m: Masquerade, version: int) -> tuple[list[str], list[str]]:
    declare, lines = [], []
    if TOP_CHAIN not in state.chains:
        declare.append(TOP_CHAIN)
    if not any(r.target == TOP_CHAIN for r in state.rules_of("POSTROUTING")):
        lines.append(f"-A POSTROUTING -m comment --comment {JUMP_COMMENT} -j {TOP_CHAIN}")
    chain, want = network_chain(m), network_chain_rules(m, version)
    if not _chain_matches(state, chain, want):
        declare.append(chain)  # creates it, or flushes it for the rewrite below
        lines += [f"-A {chain} -d {d} -j {t}" if d else f"-A {chain} -j {t}" for d, t in want]
    return declare, lines


def setup_script(state: SaveState, m: Masquerade, version: int) -> str | None:
    """What makes ``state`` hold ``m`` for one IP version; None if it already does."""
    declare, lines = _infrastructure(state, m, version)
    chain, label = network_chain(m), m.key.label
    for ip in m.sources_of(version):
        addr = host(ip)
        existing = [r for r in state.rules_of(TOP_CHAIN) if _norm_dest(r.source) == addr]
        if len(existing) == 1 and (existing[0].comment, existing[0].target) == (label, chain):
            continue
        lines += [r.delete_line for r in existing]  # a duplicate or someone else's leftover
        lines.append(f"-A {TOP_CHAIN} -s {addr} -m comment --comment {label} -j {chain}")
    return _script(declare, lines)


def teardown_script(state: SaveState, label: str) -> str | None:
    return _script((), (r.delete_line for r in state.rules_of(TOP_CHAIN) if r.comment == label))


def gc_script(state: SaveState, network_tag: str, keep: Collection[str]) -> str | None:
    """Delete the network's rules not labelled with a ``keep`` label, then its unused chains."""
    return _script((), gc_lines(state.rules_of(TOP_CHAIN), state.chains, network_tag=network_tag,
                                keep=keep, chain_prefix=_network_prefix(network_tag)))


def check_state(state: SaveState, m: Masquerade, version: int) -> list[str]:
    tool = engine.tool_name(version)
    problems: list[str] = []
    if not any(r.target == TOP_CHAIN for r in state.rules_of("POSTROUTING")):
        problems.append(f"{tool}: POSTROUTING does not jump to {TOP_CHAIN}")
    chain, label = network_chain(m), m.key.label
    if not _chain_matches(state, chain, network_chain_rules(m, version)):
        problems.append(f"{tool}: chain {chain} missing or has unexpected rules")
    mine = [r for r in state.rules_of(TOP_CHAIN) if r.comment == label]
    for ip in m.sources_of(version):
        hits = [r for r in mine if _norm_dest(r.source) == host(ip) and r.target == chain]
        if len(hits) != 1:
            problems.append(f"{tool}: {len(hits)} masquerade rules for {ip}, expected 1")
    wanted = {host(ip) for ip in m.sources_of(version)}
    problems += [f"{tool}: stale rule of this attachment: {r.line}"
                 for r in mine if _norm_dest(r.source) not in wanted]
    return problems


_TEXT: Final = TextLayout(table="nat", view=lambda state: state, versions=address_versions,
                          setup=setup_script, teardown=teardown_script, gc=gc_script,
                          check=check_state)


class IptMasquerade(XtablesFacet[Masquerade, SaveState]):
    """``MasqueradeFacet`` on iptables-restore, in the calling thread's network namespace."""

    def __init__(self, *, lock_path: str = FIREWALL_LOCK, lock_timeout: float = 10.0,
                 xtables_wait: int = 5) -> None:
        super().__init__(_TEXT, "iptables masquerade", lock_path=lock_path,
                         lock_timeout=lock_timeout, xtables_wait=xtables_wait)

    def check_layout(self) -> list[str]:
        try:
            state = self._ipt.save(4)
        except CNIError as err:
            return [str(err)]
        if not any(r.target == TOP_CHAIN for r in state.rules_of("POSTROUTING")):
            return [f"iptables: POSTROUTING does not jump to {TOP_CHAIN}"]
        return []
