"""Masquerade on nftables: the layout in ``table inet pycni``, its builders and checker, and the
facet the driver hands out.

::

    table inet pycni {
        map masq4 { type ipv4_addr : verdict }      # one element per container address,
        map masq6 { type ipv6_addr : verdict }      # commented with the attachment label
        chain masq-postrouting {                     # static: never grows
            type nat hook postrouting priority srcnat; policy accept;
            ip saddr vmap @masq4
            ip6 saddr vmap @masq6
        }
        chain masq-<network tag>-<chain tag> {       # one per network (and subnet set)
            ip daddr 10.88.0.0/16 return             # the network's own subnets: not rewritten
            ip daddr 224.0.0.0/4 return              # nor multicast
            ip6 daddr ff00::/8 return
            masquerade
        }
    }
    elements: 10.88.0.2 comment "<network tag>-<attachment tag>" : jump masq-<...>

One container is one map element, so an ADD is one element insert whatever the number of
containers (field failure #17) and the kernel looks a source up in a hash, not a rule list.
Setup escalates through the engine's three writes (``NftTable.setup`` says why); teardown and
GC read the table once and delete by the label (never by live addresses).
"""

from __future__ import annotations

from typing import Any, Final

from pycni.firewall.model.masquerade import Masquerade
from pycni.firewall.nftables import nftjson as nj
from pycni.firewall.nftables.engine import NftRunner
from pycni.firewall.nftables.feature import NftFacet, address_layout, missing_maps

__all__ = [
    "BASE_CHAIN",
    "MAPS",
    "SRCNAT_PRIO",
    "NftMasquerade",
    "base_rules",
    "chain_name",
    "check_layout",
    "check_state",
    "create_elements",
    "ensure_layout",
    "gc_commands",
    "network_rules",
    "setup_blind",
    "setup_fresh",
    "setup_informed",
    "teardown_commands",
]

BASE_CHAIN: Final = "masq-postrouting"
MAPS: Final = {4: "masq4", 6: "masq6"}
SRCNAT_PRIO: Final = 100  # nft's "srcnat"
_HOOK: Final = nj.Hook(kind="nat", hook="postrouting", prio=SRCNAT_PRIO)
_PROTO: Final = {4: "ip", 6: "ip6"}
_MULTICAST: Final = ("224.0.0.0/4", "ff00::/8")

Cmd = nj.Cmd


def chain_name(m: Masquerade) -> str:
    return f"masq-{m.key.network_tag}-{m.chain_tag}"


def base_rules() -> list[list[Any]]:
    return [
        [{"vmap": {"key": {"payload": {"protocol": _PROTO[v], "field": "saddr"}},
                   "data": f"@{MAPS[v]}"}}]
        for v in (4, 6)
    ]


def network_rules(m: Masquerade) -> list[list[Any]]:
    exempt = (*m.subnets_of(4), *m.subnets_of(6), *_MULTICAST)
    return [[nj.addr_match("daddr", cidr), {"return": None}] for cidr in exempt] + [
        [{"masquerade": None}]
    ]


_LAYOUT: Final = address_layout(maps=MAPS, base_chain=BASE_CHAIN, hook=_HOOK,
                                base_rules=base_rules, chain_prefix="masq-",
                                chain_name=chain_name, network_rules=network_rules)
(ensure_layout, create_elements, setup_blind, setup_informed, teardown_commands,
 gc_commands) = _LAYOUT.builders()
setup_fresh = _LAYOUT.setup_fresh


def check_layout(state: nj.TableState) -> list[str]:
    """The maps and the base chain every attachment's element depends on."""
    missing = missing_maps(state, MAPS.values(), nj.PYCNI)
    if missing:
        return missing
    base = state.chain(BASE_CHAIN)
    if base is None or (base.kind, base.hook) != ("nat", "postrouting"):
        return [f"nftables: base chain {BASE_CHAIN} missing or not a nat postrouting hook"]
    if list(base.rules) != [tuple(r) for r in base_rules()]:
        return [f"nftables: chain {BASE_CHAIN} does not hold exactly the vmap rules"]
    return []


def _check_elements(state: nj.TableState, m: Masquerade) -> list[str]:
    problems: list[str] = []
    chain, label = chain_name(m), m.key.label
    for container, ip, _ in _LAYOUT.entries(m):
        found = [e for e in state.elements_of(container) if str(e.key) == ip]
        if not found:
            problems.append(f"nftables: no masquerade element for {ip} in map {container}")
        elif found[0].comment != label:
            problems.append(f"nftables: element {ip} is labelled {found[0].comment}, not {label}")
        elif nj.verdict_target(found[0].value) != chain:
            problems.append(f"nftables: element {ip} does not jump to {chain}")
    wanted = {ip for _, ip, _ in _LAYOUT.entries(m)}
    problems += [f"nftables: stale element {e.key} of this attachment in map {e.container}"
                 for e in _LAYOUT.labelled(state, label) if str(e.key) not in wanted]
    return problems


def check_state(state: nj.TableState, m: Masquerade) -> list[str]:
    """What differs from the state ``setup`` makes for ``m``; empty when all is in place."""
    layout = check_layout(state)
    if layout:
        return layout
    chain = state.chain(chain_name(m))
    if chain is None:
        layout.append(f"nftables: chain {chain_name(m)} missing")
    elif list(chain.rules) != [tuple(r) for r in network_rules(m)]:
        layout.append(f"nftables: chain {chain_name(m)} has unexpected rules")
    return layout + _check_elements(state, m)


class NftMasquerade(NftFacet[Masquerade]):
    """``MasqueradeFacet`` on nftables, in the network namespace of the calling thread."""

    def __init__(self, runner: NftRunner | None = None) -> None:
        super().__init__(_LAYOUT, "masquerade", runner)

    def setup(self, m: Masquerade) -> None:
        if m.sources:
            self._escalate(m)

    def check(self, m: Masquerade) -> list[str]:
        return self._nft.check(lambda state: check_state(state, m)) if m.sources else []

    def check_layout(self) -> list[str]:
        return self._nft.check(check_layout)
