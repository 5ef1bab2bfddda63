"""The masquerade layout in ``table inet pycni``, as pure command builders and a checker.

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
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

from pycni.firewall import nft_json as nj
from pycni.firewall.model import Masquerade

__all__ = [
    "BASE_CHAIN",
    "MAPS",
    "SRCNAT_PRIO",
    "base_rules",
    "chain_name",
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
_KEY_TYPES: Final = {4: "ipv4_addr", 6: "ipv6_addr"}
_PROTO: Final = {4: "ip", 6: "ip6"}
_MULTICAST: Final = ("224.0.0.0/4", "ff00::/8")

Cmd = nj.Cmd


def chain_name(m: Masquerade) -> str:
    return f"masq-{m.key.network_tag}-{m.chain_tag}"


def _chain_prefix(network_tag: str) -> str:
    return f"masq-{network_tag}-"


def _jump(chain: str) -> dict[str, Any]:
    return {"jump": {"target": chain}}


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
    """Table, maps and both chains, rewritten whole: idempotent and safe to race.

    ``add`` of an existing table/map/chain is a no-op; flushing a chain and re-adding its rules
    inside the same transaction is atomic, and a chain's rules depend only on its name.
    """
    cmds = [nj.add_table()]
    cmds += [nj.add_map(MAPS[v], key_type=_KEY_TYPES[v], value_type="verdict") for v in (4, 6)]
    cmds += [nj.add_base_chain(BASE_CHAIN, kind="nat", hook="postrouting", prio=SRCNAT_PRIO),
             nj.flush_chain(BASE_CHAIN)]
    cmds += [nj.add_rule(BASE_CHAIN, expr) for expr in base_rules()]
    chain = chain_name(m)
    cmds += [nj.add_chain(chain), nj.flush_chain(chain)]
    cmds += [nj.add_rule(chain, expr) for expr in network_rules(m)]
    return cmds


def _sources(m: Masquerade) -> list[tuple[int, str]]:
    return [(v, ip) for v in (4, 6) for ip in m.sources_of(v)]


def create_elements(m: Masquerade) -> list[Cmd]:
    """The fast path: insert the elements, failing if any address is already mapped or the
    network's chain does not exist yet. Pure inserts commit without an RCU grace period."""
    chain, label = chain_name(m), m.key.label
    return [nj.create_element(MAPS[v], ip, _jump(chain), comment=label) for v, ip in _sources(m)]


def setup_blind(m: Masquerade) -> list[Cmd]:
    """Full layout, then add-delete-add per address: replaces a same-valued element whatever
    its comment (a retried ADD, or a leftover of a crashed attachment) without reading first."""
    chain, label = chain_name(m), m.key.label
    cmds = ensure_layout(m)
    for v, ip in _sources(m):
        cmds += [nj.add_element(MAPS[v], ip, _jump(chain), comment=label),
                 nj.delete_element(MAPS[v], ip),
                 nj.add_element(MAPS[v], ip, _jump(chain), comment=label)]
    return cmds


def setup_informed(m: Masquerade, state: nj.TableState) -> list[Cmd]:
    """Full layout, deleting whatever element holds one of our addresses (even one jumping to
    another network's chain, which the blind add refuses), then adding ours."""
    chain, label = chain_name(m), m.key.label
    cmds = ensure_layout(m)
    for v, ip in _sources(m):
        if any(str(e.key) == ip for e in state.elements_of(MAPS[v])):
            cmds.append(nj.delete_element(MAPS[v], ip))
        cmds.append(nj.add_element(MAPS[v], ip, _jump(chain), comment=label))
    return cmds


def _masq_elements(state: nj.TableState) -> list[nj.Element]:
    return [e for e in state.elements if e.container in MAPS.values()]


def teardown_commands(state: nj.TableState, label: str) -> list[Cmd]:
    """Delete every element carrying the attachment's label (addresses are not needed)."""
    owned = [e for e in _masq_elements(state) if e.comment == label]
    return [nj.delete_element(e.container, e.key) for e in owned]


def gc_commands(state: nj.TableState, network_tag: str, keep: Collection[str]) -> list[Cmd]:
    """Delete the network's elements whose label is not in ``keep``, then the network's chains
    no remaining element jumps to (a chain's rules go with it)."""
    ours = f"{network_tag}-"

    def stale(e: nj.Element) -> bool:
        return e.container in MAPS.values() and (e.comment or "").startswith(ours) \
            and e.comment not in keep

    drop = [e for e in state.elements if stale(e)]
    still = {nj.verdict_target(e.value) for e in state.elements if not stale(e)}
    prefix = _chain_prefix(network_tag)
    return [nj.delete_element(e.container, e.key) for e in drop] + [
        nj.delete_chain(c.name) for c in state.chains
        if c.name.startswith(prefix) and c.name not in still
    ]


def check_layout(state: nj.TableState) -> list[str]:
    """The maps and the base chain every attachment's element depends on."""
    missing = [name for name in MAPS.values() if name not in state.containers]
    if missing:
        return [f"nftables: map {', '.join(missing)} missing from table {nj.FAMILY} {nj.TABLE}"]
    base = state.chain(BASE_CHAIN)
    if base is None or (base.kind, base.hook) != ("nat", "postrouting"):
        return [f"nftables: base chain {BASE_CHAIN} missing or not a nat postrouting hook"]
    if list(base.rules) != [tuple(r) for r in base_rules()]:
        return [f"nftables: chain {BASE_CHAIN} does not hold exactly the vmap rules"]
    return []


def _check_chains(state: nj.TableState, m: Masquerade) -> list[str]:
    problems = check_layout(state)
    chain = state.chain(chain_name(m))
    if chain is None:
        problems.append(f"nftables: chain {chain_name(m)} missing")
    elif list(chain.rules) != [tuple(r) for r in network_rules(m)]:
        problems.append(f"nftables: chain {chain_name(m)} has unexpected rules")
    return problems


def _check_elements(state: nj.TableState, m: Masquerade) -> list[str]:
    problems: list[str] = []
    chain, label = chain_name(m), m.key.label
    for v, ip in _sources(m):
        found = [e for e in state.elements_of(MAPS[v]) if str(e.key) == ip]
        if not found:
            problems.append(f"nftables: no masquerade element for {ip} in map {MAPS[v]}")
        elif found[0].comment != label:
            problems.append(f"nftables: element {ip} is labelled {found[0].comment}, not {label}")
        elif nj.verdict_target(found[0].value) != chain:
            problems.append(f"nftables: element {ip} does not jump to {chain}")
    wanted = {ip for _, ip in _sources(m)}
    problems += [f"nftables: stale element {e.key} of this attachment in map {e.container}"
                 for e in _masq_elements(state) if e.comment == label and str(e.key) not in wanted]
    return problems


def check_state(state: nj.TableState, m: Masquerade) -> list[str]:
    """What differs from the state ``setup`` makes for ``m``; empty when all is in place."""
    layout = check_layout(state)
    if layout:
        return layout
    return _check_chains(state, m) + _check_elements(state, m)
