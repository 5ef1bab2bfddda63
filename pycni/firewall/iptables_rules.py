"""Pure text for the iptables fallback: parse ``iptables-save -t nat``, build restore scripts.

Layout in the nat table (per IP version, with ``ip6tables`` for IPv6)::

    -A POSTROUTING -m comment --comment pycni -j PYCNI-POSTROUTING
    -A PYCNI-POSTROUTING -s 10.88.0.2/32 -m comment --comment <label> -j PYCNI-M-<net>-<chain>
    -A PYCNI-M-<net>-<chain> -d 10.88.0.0/16 -j RETURN       # one chain per network (+subnets)
    -A PYCNI-M-<net>-<chain> -d 224.0.0.0/4 -j RETURN
    -A PYCNI-M-<net>-<chain> -j MASQUERADE

One rule per container address, tagged with the attachment label, so DEL and GC find it by
key. The scripts are for ``iptables-restore --noflush``: one exec applies all of them at once.
Declaring ``:CHAIN`` there creates the chain but also *flushes* an existing one, so the
builders declare only chains that are missing or that they rewrite whole; hence the caller
reads the table first and holds a lock from the read to the write.
"""

from __future__ import annotations

import ipaddress
import itertools
import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from pycni.firewall import xtables
from pycni.firewall.model import Masquerade

__all__ = [
    "JUMP_COMMENT",
    "TOP_CHAIN",
    "Rule",
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


@dataclass(frozen=True)
class Rule:
    """One ``-A`` line of iptables-save, with the few parts pycni looks at."""

    chain: str
    line: str
    source: str | None = None
    dest: str | None = None
    comment: str | None = None
    target: str | None = None

    @property
    def delete_line(self) -> str:
        """The same rule spec as a ``-D`` command (iptables-restore matches it exactly)."""
        return "-D" + self.line[2:]


@dataclass(frozen=True)
class SaveState:
    chains: frozenset[str] = frozenset()
    rules: tuple[Rule, ...] = ()

    def rules_of(self, chain: str) -> list[Rule]:
        return [r for r in self.rules if r.chain == chain]


def _parse_rule(line: str) -> Rule:
    tokens = shlex.split(line)
    parts: dict[str, str] = {}
    negated = False
    for flag, value in itertools.pairwise(tokens):
        if flag == "!":
            negated = True
            continue
        if flag in ("-s", "-d", "--comment", "-j"):
            # A negated match is never one of ours; keep it distinguishable.
            parts[flag] = f"!{value}" if negated else value
        negated = False
    return Rule(chain=tokens[1], line=line, source=parts.get("-s"), dest=parts.get("-d"),
                comment=parts.get("--comment"), target=parts.get("-j"))


def parse_save(text: str) -> SaveState:
    """The nat table of an ``iptables-save -t nat`` dump."""
    dump = xtables.parse_save(text, "nat")
    return SaveState(chains=dump.chains, rules=tuple(_parse_rule(line) for line in dump.rule_lines))


def _host(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    return f"{addr}/{addr.max_prefixlen}"


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
    declared = [f":{chain} - [0:0]" for chain in declare]
    body = list(lines)
    if not declared and not body:
        return None
    return "\n".join(["*nat", *declared, *body, "COMMIT", ""])


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
        host = _host(ip)
        existing = [r for r in state.rules_of(TOP_CHAIN) if _norm_dest(r.source) == host]
        if len(existing) == 1 and (existing[0].comment, existing[0].target) == (label, chain):
            continue
        lines += [r.delete_line for r in existing]  # a duplicate or someone else's leftover
        lines.append(f"-A {TOP_CHAIN} -s {host} -m comment --comment {label} -j {chain}")
    return _script(declare, lines)


def teardown_script(state: SaveState, label: str) -> str | None:
    return _script((), (r.delete_line for r in state.rules_of(TOP_CHAIN) if r.comment == label))


def gc_script(state: SaveState, network_tag: str, keep: Collection[str]) -> str | None:
    """Delete the network's rules not labelled with a ``keep`` label, then its unused chains."""
    ours = f"{network_tag}-"
    top = state.rules_of(TOP_CHAIN)
    drop = [r for r in top if (r.comment or "").startswith(ours) and r.comment not in keep]
    dropped = {id(r) for r in drop}
    still = {r.target for r in top if id(r) not in dropped}
    prefix = _network_prefix(network_tag)
    unused = sorted(c for c in state.chains if c.startswith(prefix) and c not in still)
    lines = [r.delete_line for r in drop]
    lines += [line for c in unused for line in (f"-F {c}", f"-X {c}")]
    return _script((), lines)


def check_state(state: SaveState, m: Masquerade, version: int) -> list[str]:
    tool = "iptables" if version == 4 else "ip6tables"
    problems: list[str] = []
    if not any(r.target == TOP_CHAIN for r in state.rules_of("POSTROUTING")):
        problems.append(f"{tool}: POSTROUTING does not jump to {TOP_CHAIN}")
    chain, label = network_chain(m), m.key.label
    if not _chain_matches(state, chain, network_chain_rules(m, version)):
        problems.append(f"{tool}: chain {chain} missing or has unexpected rules")
    mine = [r for r in state.rules_of(TOP_CHAIN) if r.comment == label]
    for ip in m.sources_of(version):
        hits = [r for r in mine if _norm_dest(r.source) == _host(ip) and r.target == chain]
        if len(hits) != 1:
            problems.append(f"{tool}: {len(hits)} masquerade rules for {ip}, expected 1")
    wanted = {_host(ip) for ip in m.sources_of(version)}
    problems += [f"{tool}: stale rule of this attachment: {r.line}"
                 for r in mine if _norm_dest(r.source) not in wanted]
    return problems
