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

from collections.abc import Collection
from typing import Any, Final

from pycni.firewall.model import AttachmentKey, Masquerade
from pycni.firewall.nftables import nftjson as nj
from pycni.firewall.nftables.elements import Entry, Owned, missing_maps, verdict_maps
from pycni.firewall.nftables.engine import NftRunner, NftTable

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
    "setup_informed",
    "teardown_commands",
]

BASE_CHAIN: Final = "masq-postrouting"
MAPS: Final = {4: "masq4", 6: "masq6"}
SRCNAT_PRIO: Final = 100  # nft's "srcnat"
_HOOK: Final = nj.Hook(kind="nat", hook="postrouting", prio=SRCNAT_PRIO)
_PROTO: Final = {4: "ip", 6: "ip6"}
_MULTICAST: Final = ("224.0.0.0/4", "ff00::/8")
_OWNED: Final = Owned(nj.PYCNI, frozenset(MAPS.values()), chain_prefix="masq-")

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


def ensure_layout(m: Masquerade) -> list[Cmd]:
    """Table, maps and both chains, rewritten whole: idempotent and safe to race."""
    return [nj.add_table(), *verdict_maps(MAPS),
            *nj.rewrite_chain(BASE_CHAIN, base_rules(), hook=_HOOK),
            *nj.rewrite_chain(chain_name(m), network_rules(m))]


def _entries(m: Masquerade) -> list[Entry]:
    jump = {"jump": {"target": chain_name(m)}}
    return [(MAPS[v], ip, jump) for v in (4, 6) for ip in m.sources_of(v)]


def create_elements(m: Masquerade) -> list[Cmd]:
    """The fast path: fails if any address is already mapped or the network's chain is new."""
    return _OWNED.create(_entries(m), m.key.label)


def setup_blind(m: Masquerade) -> list[Cmd]:
    return _OWNED.replace_blind(ensure_layout(m), _entries(m), m.key.label)


def setup_informed(m: Masquerade, state: nj.TableState) -> list[Cmd]:
    return _OWNED.replace_informed(ensure_layout(m), _entries(m), m.key.label, state)


def teardown_commands(state: nj.TableState, label: str) -> list[Cmd]:
    return _OWNED.teardown(state, label)


def gc_commands(state: nj.TableState, network_tag: str, keep: Collection[str]) -> list[Cmd]:
    return _OWNED.gc(state, network_tag, keep)


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
    for container, ip, _ in _entries(m):
        found = [e for e in state.elements_of(container) if str(e.key) == ip]
        if not found:
            problems.append(f"nftables: no masquerade element for {ip} in map {container}")
        elif found[0].comment != label:
            problems.append(f"nftables: element {ip} is labelled {found[0].comment}, not {label}")
        elif nj.verdict_target(found[0].value) != chain:
            problems.append(f"nftables: element {ip} does not jump to {chain}")
    wanted = {ip for _, ip, _ in _entries(m)}
    problems += [f"nftables: stale element {e.key} of this attachment in map {e.container}"
                 for e in _OWNED.labelled(state, label) if str(e.key) not in wanted]
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


class NftMasquerade:
    """``MasqueradeFacet`` on nftables, in the network namespace of the calling thread."""

    def __init__(self, runner: NftRunner | None = None) -> None:
        self._nft = NftTable(nj.PYCNI, runner)

    def setup(self, m: Masquerade) -> None:
        if m.sources:
            self._nft.setup("masquerade", m.key.label, insert=lambda: create_elements(m),
                            replace=lambda: setup_blind(m),
                            informed=lambda state: setup_informed(m, state))

    def teardown(self, key: AttachmentKey) -> None:
        self._nft.apply(lambda state: teardown_commands(state, key.label))

    def check(self, m: Masquerade) -> list[str]:
        return self._nft.check(lambda state: check_state(state, m)) if m.sources else []

    def gc(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        return self._nft.gc("nftables masquerade", network, valid, gc_commands)

    def status(self) -> str | None:
        return self._nft.status()

    def check_layout(self) -> list[str]:
        return self._nft.check(check_layout)
