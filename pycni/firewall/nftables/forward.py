"""Forward acceptance and network isolation on nftables (the decision: ``model.Forward``): the
layout in ``table inet pycni``, the holes in other programs' chains, and the facet.

::

    table inet pycni {
        map fwd4 { type ipv4_addr : verdict }   # one element per container address,
        map fwd6 { type ipv6_addr : verdict }   # commented with the attachment label
        chain fwd-hook {                         # static: never grows
            type filter hook forward priority -200; policy accept;
            meta mark set meta mark & 0xffefffff # only our own decision sets the mark
            ip saddr vmap @fwd4                  # from a container: its network's chain
            ip6 saddr vmap @fwd6
            ip daddr vmap @fwd4                  # to a container: its network's chain
            ip6 daddr vmap @fwd6
            meta mark & 0x00100000 == 0x00100000 accept
        }
        chain fwd-<network tag>-<chain tag> {    # one per network (+ subnets, policy)
            ip saddr 10.99.0.0/24 ip daddr 10.99.0.0/24 meta mark set meta mark | 0x00100000 accept
            ip daddr 10.99.0.0/24 ct state established,related meta mark set ... accept
            ip daddr 10.99.0.0/24 ct status dnat meta mark set ... accept
            ip daddr 10.99.0.0/24 meta mark & 0x00100000 == 0x00100000 drop   # same-bridge
            ip saddr 10.99.0.0/24 meta mark set meta mark | 0x00100000 return
        }                                        # internal: the first rule, then
    }                                            # ip saddr <subnet> drop; ip daddr <subnet> drop
    elements: 10.99.0.2 comment "<network tag>-<attachment tag>" : jump fwd-<...>

    # and, in every other forward base chain whose policy is drop (iptables-nft's
    # ip filter FORWARD after Docker's -P FORWARD DROP, an nft "policy drop" chain):
    meta mark & 0x00100000 == 0x00100000 counter accept comment "pycni-forward"   # at the top

Why the hole: an accept ends only the base chain it is in, the next base chain on the hook still
sees the packet and its policy drops it. The hole rule is self-contained (nft cannot jump across
tables) and written in the form iptables-nft parses back (``-m mark --mark ... -m comment``), so
``iptables-save`` of a Docker host stays intact. Pure builders here; I/O in the facet below.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni.errors import CNIError
from pycni.firewall.model.forward import FORWARD_MARK, HOLE_COMMENT, Forward
from pycni.firewall.nftables import nftjson as nj
from pycni.firewall.nftables.engine import ATTEMPTS, NftError, NftRunner
from pycni.firewall.nftables.feature import NftFacet, address_layout, missing_maps

__all__ = [
    "BASE_CHAIN",
    "HOOK_PRIO",
    "MAPS",
    "ForeignChain",
    "NftForward",
    "base_rules",
    "chain_name",
    "check_holes",
    "check_state",
    "create_elements",
    "ensure_layout",
    "foreign_drop_chains",
    "gc_commands",
    "hole_rule",
    "holed",
    "insert_holes",
    "network_rules",
    "setup_blind",
    "setup_fresh",
    "setup_informed",
    "teardown_commands",
]

log = logging.getLogger(__name__)

BASE_CHAIN: Final = "fwd-hook"
# Before mangle (-150) and filter (0): every usual forward chain runs after ours and can see
# the mark. A dropping chain at or below this priority is reported by CHECK and STATUS.
HOOK_PRIO: Final = -200
MAPS: Final = {4: "fwd4", 6: "fwd6"}
_HOOK: Final = nj.Hook(kind="filter", hook="forward", prio=HOOK_PRIO)
_PROTO: Final = {4: "ip", 6: "ip6"}
_HOLE_FAMILIES: Final = ("ip", "ip6", "inet")
_MASK32: Final = 0xFFFFFFFF

Cmd = nj.Cmd


def chain_name(f: Forward) -> str:
    return f"fwd-{f.key.network_tag}-{f.chain_tag}"


# ----------------------------------------------------------------------------- expressions

_MARK: Final = {"meta": {"key": "mark"}}


def _mark_set() -> dict[str, Any]:
    return {"mangle": {"key": _MARK, "value": {"|": [_MARK, FORWARD_MARK]}}}


def _mark_clear() -> dict[str, Any]:
    return {"mangle": {"key": _MARK, "value": {"&": [_MARK, ~FORWARD_MARK & _MASK32]}}}


def _marked() -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"&": [_MARK, FORWARD_MARK]}, "right": FORWARD_MARK}}


def _ct(key: str, right: Any) -> dict[str, Any]:
    return {"match": {"op": "in", "left": {"ct": {"key": key}}, "right": right}}


def base_rules() -> list[list[Any]]:
    def vmap(v: int, field: str) -> list[Any]:
        return [{"vmap": {"key": {"payload": {"protocol": _PROTO[v], "field": field}},
                          "data": f"@{MAPS[v]}"}}]

    return [[_mark_clear()], vmap(4, "saddr"), vmap(6, "saddr"), vmap(4, "daddr"),
            vmap(6, "daddr"), [_marked(), {"accept": None}]]


def network_rules(f: Forward) -> list[list[Any]]:
    """The decision for one network (see ``model.Forward``), per IP version."""
    accept: list[Any] = [_mark_set(), {"accept": None}]
    ingress: list[Any] = [{"drop": None}] if f.isolated else accept
    rules: list[list[Any]] = []
    for v in (4, 6):
        subnets = f.subnets_of(v)
        rules += [[nj.addr_match("saddr", s), nj.addr_match("daddr", d), *accept]
                  for s in subnets for d in subnets]
        if f.internal:  # nothing else in or out
            rules += [[nj.addr_match(way, s), {"drop": None}]
                      for way in ("saddr", "daddr") for s in subnets]
            continue
        for d in subnets:
            to = nj.addr_match("daddr", d)
            rules += [[to, _ct("state", ["established", "related"]), *accept],
                      [to, _ct("status", "dnat"), *accept],
                      [to, _marked(), *ingress]]
        rules += [[nj.addr_match("saddr", s), _mark_set(), {"return": None}] for s in subnets]
    return rules


# ------------------------------------------------------------------------------- our table


_LAYOUT: Final = address_layout(maps=MAPS, base_chain=BASE_CHAIN, hook=_HOOK,
                                base_rules=base_rules, chain_prefix="fwd-",
                                chain_name=chain_name, network_rules=network_rules)
(ensure_layout, create_elements, setup_blind, setup_informed, teardown_commands,
 gc_commands) = _LAYOUT.builders()
setup_fresh = _LAYOUT.setup_fresh


def _check_chains(state: nj.TableState, f: Forward) -> list[str]:
    problems: list[str] = []
    base = state.chain(BASE_CHAIN)
    if base is None or (base.kind, base.hook) != ("filter", "forward"):
        problems.append(f"nftables: base chain {BASE_CHAIN} missing or not a forward hook")
    elif list(base.rules) != [tuple(r) for r in base_rules()]:
        problems.append(f"nftables: chain {BASE_CHAIN} does not hold exactly its rules")
    chain = state.chain(chain_name(f))
    if chain is None:
        problems.append(f"nftables: chain {chain_name(f)} missing")
    elif list(chain.rules) != [tuple(r) for r in network_rules(f)]:
        problems.append(f"nftables: chain {chain_name(f)} has unexpected rules")
    return problems


def check_state(state: nj.TableState, f: Forward) -> list[str]:
    missing = missing_maps(state, MAPS.values(), nj.PYCNI)
    if missing:
        return missing
    problems = _check_chains(state, f)
    chain, label = chain_name(f), f.key.label
    for container, ip, _ in _LAYOUT.entries(f):
        found = [e for e in state.elements_of(container) if str(e.key) == ip]
        if not found:
            problems.append(f"nftables: no forward element for {ip} in map {container}")
        elif found[0].comment != label or nj.verdict_target(found[0].value) != chain:
            problems.append(f"nftables: forward element {ip} is not this attachment's")
    return problems


# ------------------------------------------------------------------ other programs' chains


@dataclass(frozen=True)
class ForeignChain:
    """A forward base chain of another table whose policy drops."""

    family: str
    table: str
    name: str
    prio: int
    holed: bool = False

    @property
    def where(self) -> str:
        return f"{self.family} {self.table} {self.name}"


def _objects(doc: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    return [o[kind] for o in nj.objects(doc) if isinstance(o.get(kind), Mapping)]


def foreign_drop_chains(chains_doc: Mapping[str, Any]) -> list[ForeignChain]:
    """From a ``list chains`` answer: other tables' forward base chains with policy drop."""
    out = []
    for c in _objects(chains_doc, "chain"):
        ours = (c.get("family"), c.get("table")) == (nj.FAMILY, nj.TABLE)
        if c.get("hook") == "forward" and c.get("policy") == "drop" and not ours \
                and c.get("family") in _HOLE_FAMILIES:
            prio = c.get("prio")
            out.append(ForeignChain(family=str(c["family"]), table=str(c.get("table")),
                                    name=str(c.get("name")),
                                    prio=prio if isinstance(prio, int) else 0))
    return out


def _hole_expr() -> list[Any]:
    return [_marked(), {"counter": {"packets": 0, "bytes": 0}}, {"accept": None}]


def _is_hole(rule: Mapping[str, Any]) -> bool:
    expr = rule.get("expr") or []
    return rule.get("comment") == HOLE_COMMENT and bool(expr) and expr[0] == _marked() \
        and expr[-1] == {"accept": None}


def holed(chain: ForeignChain, chain_doc: Mapping[str, Any]) -> ForeignChain:
    """``chain`` with ``holed`` set from a ``list chain`` answer."""
    found = any(_is_hole(r) for r in _objects(chain_doc, "rule"))
    return ForeignChain(family=chain.family, table=chain.table, name=chain.name,
                        prio=chain.prio, holed=found)


def hole_rule(chain: ForeignChain) -> Cmd:
    """Insert (at the top) the static mark-accept rule into another program's chain."""
    return {"insert": {"rule": {"family": chain.family, "table": chain.table,
                                "chain": chain.name, "expr": _hole_expr(),
                                "comment": HOLE_COMMENT}}}


def insert_holes(chains: Collection[ForeignChain]) -> list[Cmd]:
    return [hole_rule(c) for c in chains if not c.holed]


def check_holes(chains: Collection[ForeignChain]) -> list[str]:
    problems = [f"nftables: forward chain {c.where} drops by policy and has no pycni accept"
                for c in chains if not c.holed]
    problems += [f"nftables: forward chain {c.where} (priority {c.prio}) drops before "
                 f"pycni's chain (priority {HOOK_PRIO}) can mark" for c in chains
                 if c.prio <= HOOK_PRIO]
    return problems


def _list_chain_cmd(chain: ForeignChain) -> Cmd:
    return {"list": {"chain": {"family": chain.family, "table": chain.table,
                               "name": chain.name}}}


# ------------------------------------------------------------------------------ the facet


class NftForward(NftFacet[Forward]):
    """``ForwardFacet`` on nftables, in the network namespace of the calling thread."""

    def __init__(self, runner: NftRunner | None = None) -> None:
        super().__init__(_LAYOUT, "forward", runner)

    def foreign_chains(self) -> list[ForeignChain]:
        """Other tables' dropping forward chains, each with whether our hole is in it.

        Two listings: a chain found by the first may be gone by the second (firewalld's
        reload deletes and rebuilds its table), so a failed second listing starts over.
        """
        for attempt in range(1, ATTEMPTS + 1):
            found = foreign_drop_chains(self._nft.run([{"list": {"chains": None}}]))
            try:
                return [holed(c, self._nft.run([_list_chain_cmd(c)])) for c in found]
            except NftError:
                if attempt == ATTEMPTS:
                    raise
                log.debug("a forward chain went away while listed, listing again", exc_info=True)
        raise AssertionError("unreachable")

    def setup(self, f: Forward) -> None:
        holes = insert_holes(self.foreign_chains())
        if not f.sources:
            if holes:
                self._nft.run(holes)
            return
        self._nft.setup(
            "forward", f.key.label, insert=lambda: create_elements(f) + holes,
            fresh=lambda: setup_fresh(f) + holes,
            replace=lambda: setup_blind(f) + holes,
            informed=lambda state: setup_informed(f, state) + insert_holes(self.foreign_chains()))

    def check(self, f: Forward) -> list[str]:
        try:
            state, chains = self._nft.read(), self.foreign_chains()
        except CNIError as err:
            return [f"nftables: cannot read the ruleset: {err}"]
        return (check_state(state, f) if f.sources else []) + check_holes(chains)

    def status(self) -> str | None:
        try:
            state, chains = self._nft.read(), self.foreign_chains()
        except CNIError as err:
            return str(err)
        if not _LAYOUT.of(state):
            return None  # no attachment to serve yet; the next ADD punches what it needs
        problems = check_holes(chains)
        if state.chain(BASE_CHAIN) is None:
            problems.append(f"nftables: base chain {BASE_CHAIN} is missing")
        return "; ".join(problems) or None
