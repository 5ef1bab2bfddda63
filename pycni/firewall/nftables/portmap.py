"""Port mappings on nftables: the layout in its own table ``inet pycni_portmap``, its builders
and checker, and the facet the driver hands out.

::

    table inet pycni_portmap {
        # per family (4, 6) and kind ("" any local address, "_ip" one host address):
        map dnat4_addr    { type inet_proto . inet_service : ipv4_addr }
        map dnat4_port    { type inet_proto . inet_service : inet_service }
        map dnat4_ip_addr { type ipv4_addr . inet_proto . inet_service : ipv4_addr }
        map dnat4_ip_port { type ipv4_addr . inet_proto . inet_service : inet_service }
        ... dnat6_*, the same with ipv6_addr
        map hairpin4 { type ipv4_addr . inet_proto . inet_service : verdict }
        map hairpin6 { type ipv6_addr . inet_proto . inet_service : verdict }
        chain prerouting  { type nat hook prerouting priority dstnat;
                            fib daddr type local jump hostports }
        chain output      { type nat hook output priority dstnat;
                            fib daddr type local jump hostports }
        chain hostports {                                   # static: never grows
            dnat ip to ip daddr . meta l4proto . th dport map @dnat4_ip_addr
                                       : ip daddr . meta l4proto . th dport map @dnat4_ip_port
            meta nfproto ipv4 dnat ip to meta l4proto . th dport map @dnat4_addr
                                       : meta l4proto . th dport map @dnat4_port
            ... the same for ipv6
        }
        chain postrouting { type nat hook postrouting priority srcnat;
            ct status dnat ip daddr . meta l4proto . th dport vmap @hairpin4
            ct status dnat ip6 daddr . meta l4proto . th dport vmap @hairpin6
        }
        chain hp-<network tag>-<chain tag> {               # one per network (+subnets, options)
            ip saddr 10.88.0.0/16 masquerade                # hairpin (snat)
            ip saddr 127.0.0.0/8 masquerade                 # 127.0.0.1:hostPort (snat)
            masquerade                                       # masqAll
        }
    }
    elements, each commented "<network tag>-<attachment tag>":
        dnat4_addr { tcp . 8080 : 10.88.0.5 }  dnat4_port { tcp . 8080 : 80 }   # per mapping
        hairpin4 { 10.88.0.5 . tcp . 80 : jump hp-... }     # one per container port

Address and port live in two maps with the same key, written in the same transaction,
because nft 1.0.6 (Debian 12) cannot create a map with concatenated data from JSON (it makes
a set and then crashes on the first element); two hash lookups per new connection cost
nothing that matters.

One mapping is one element, so an ADD is one transaction of inserts whatever the number of
containers or ports already published (field failure #17). The hairpin map is keyed by the
post-DNAT tuple, so only connections DNATed to a mapped container port are ever masqueraded.

Why a table of its own rather than ``inet pycni``: the bridge's DEL and GC list ``inet
pycni`` whole; tens of thousands of port elements there would make every bridge DEL pay for
them. Here the two layouts are read, versioned and removed independently.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from pycni.firewall.model import AttachmentKey
from pycni.firewall.model.portmap import DnatTarget, PortMap
from pycni.firewall.nftables import nftjson as nj
from pycni.firewall.nftables.engine import NftError, NftRunner
from pycni.firewall.nftables.feature import Entry, Layout, NftFacet, missing_maps, same_key

__all__ = [
    "BASE_CHAINS",
    "DNAT_MAPS",
    "FAMILY",
    "HAIRPIN_MAPS",
    "TABLE",
    "NftPortmap",
    "check_state",
    "create_elements",
    "delete_elements",
    "ensure_layout",
    "gc_commands",
    "hairpin_chain",
    "hairpin_rules",
    "owned_elements",
    "setup_blind",
    "setup_informed",
    "static_rules",
    "teardown_commands",
]

PORTMAP: Final = nj.Table("inet", "pycni_portmap")
FAMILY: Final = PORTMAP.family
TABLE: Final = PORTMAP.name
DNAT_CHAIN: Final = "hostports"
DSTNAT_PRIO: Final = -100
SRCNAT_PRIO: Final = 100
# (family, with host address) -> stem of the map pair "<stem>_addr", "<stem>_port"
DNAT_MAPS: Final = {(4, True): "dnat4_ip", (4, False): "dnat4",
                    (6, True): "dnat6_ip", (6, False): "dnat6"}
_DNAT_MAP_NAMES: Final = frozenset(f"{stem}_{part}" for stem in DNAT_MAPS.values()
                                   for part in ("addr", "port"))
HAIRPIN_MAPS: Final = {4: "hairpin4", 6: "hairpin6"}
BASE_CHAINS: Final = {"prerouting": nj.Hook("nat", "prerouting", DSTNAT_PRIO),
                      "output": nj.Hook("nat", "output", DSTNAT_PRIO),
                      "postrouting": nj.Hook("nat", "postrouting", SRCNAT_PRIO)}
_ADDR: Final = {4: "ipv4_addr", 6: "ipv6_addr"}
_PROTO: Final = {4: "ip", 6: "ip6"}
_NFPROTO: Final = {4: "ipv4", 6: "ipv6"}
_LOCALHOST: Final = "127.0.0.0/8"

Cmd = nj.Cmd

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------- expressions


def _payload(proto: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": field}}


_L4PROTO: Final = {"meta": {"key": "l4proto"}}
_DPORT: Final = _payload("th", "dport")


def _dnat_rule(version: int, with_addr: bool) -> list[Any]:
    head = [_payload(_PROTO[version], "daddr")] if with_addr else []
    stem = DNAT_MAPS[(version, with_addr)]

    def lookup(part: str) -> dict[str, Any]:
        return {"map": {"key": {"concat": [*head, _L4PROTO, _DPORT]}, "data": f"@{stem}_{part}"}}

    # With "ip daddr" in the key nft adds the nfproto dependency itself (and lists it
    # hidden); without it the match must be explicit, or an IPv6 packet would be looked up
    # in an IPv4 map.
    nfproto = {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}},
                         "right": _NFPROTO[version]}}
    dnat = {"dnat": {"family": _PROTO[version], "addr": lookup("addr"), "port": lookup("port")}}
    return [dnat] if with_addr else [nfproto, dnat]


def _local_jump() -> list[Any]:
    fib = {"fib": {"result": "type", "flags": ["daddr"]}}
    return [{"match": {"op": "==", "left": fib, "right": "local"}},
            {"jump": {"target": DNAT_CHAIN}}]


def _hairpin_vmap(version: int) -> list[Any]:
    key = {"concat": [_payload(_PROTO[version], "daddr"), _L4PROTO, _DPORT]}
    return [{"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
            {"vmap": {"key": key, "data": f"@{HAIRPIN_MAPS[version]}"}}]


def static_rules() -> dict[str, list[list[Any]]]:
    """The rules of the four static chains, as nft lists them back."""
    dnat = [_dnat_rule(v, with_addr) for v in (4, 6) for with_addr in (True, False)]
    return {
        DNAT_CHAIN: dnat,
        "prerouting": [_local_jump()],
        "output": [_local_jump()],
        "postrouting": [_hairpin_vmap(4), _hairpin_vmap(6)],
    }


def hairpin_chain(pm: PortMap) -> str:
    return f"hp-{pm.key.network_tag}-{pm.chain_tag}"


def _saddr_masq(cidr: str) -> list[Any]:
    return [nj.addr_match("saddr", cidr), {"masquerade": None}]


def hairpin_rules(pm: PortMap) -> list[list[Any]]:
    rules: list[list[Any]] = []
    if pm.snat:
        rules += [_saddr_masq(s) for s in pm.subnets]
        rules.append(_saddr_masq(_LOCALHOST))
    if pm.masq_all:
        rules.append([{"masquerade": None}])
    return rules


# ---------------------------------------------------------------------------- commands


def _maps() -> list[Cmd]:
    cmds = []
    for (version, with_addr), name in DNAT_MAPS.items():
        key = ([_ADDR[version]] if with_addr else []) + ["inet_proto", "inet_service"]
        cmds += [nj.add_map(f"{name}_addr", key_type=key, value_type=_ADDR[version],
                            table=PORTMAP),
                 nj.add_map(f"{name}_port", key_type=key, value_type="inet_service",
                            table=PORTMAP)]
    cmds += [nj.add_map(name, key_type=[_ADDR[v], "inet_proto", "inet_service"],
                        value_type="verdict", table=PORTMAP)
             for v, name in HAIRPIN_MAPS.items()]
    return cmds


def ensure_layout(pm: PortMap) -> list[Cmd]:
    """Table, maps, static chains and the network's hairpin chain, rewritten whole."""
    cmds = [nj.add_table(PORTMAP), *_maps()]
    rules = static_rules()
    cmds += nj.rewrite_chain(DNAT_CHAIN, rules[DNAT_CHAIN], table=PORTMAP)
    for name, hook in BASE_CHAINS.items():
        cmds += nj.rewrite_chain(name, rules[name], hook=hook, table=PORTMAP)
    if pm.masquerades:
        cmds += nj.rewrite_chain(hairpin_chain(pm), hairpin_rules(pm), table=PORTMAP)
    return cmds


def _dnat_key(t: DnatTarget) -> Any:
    head = [t.host_addr] if t.host_addr else []
    return {"concat": [*head, t.protocol, t.host_port]}


def _entries(pm: PortMap) -> list[Entry]:
    """(map, key, value) of every element of ``pm``."""
    out: list[Entry] = []
    for t in pm.targets():
        stem = DNAT_MAPS[(t.version, t.host_addr is not None)]
        out += [(f"{stem}_addr", _dnat_key(t), t.container_ip),
                (f"{stem}_port", _dnat_key(t), t.container_port)]
    jump = {"jump": {"target": hairpin_chain(pm)}}
    out += [(HAIRPIN_MAPS[v], {"concat": list(k)}, jump)
            for v in (4, 6) for k in pm.hairpin_keys(v)]
    return out


_LAYOUT: Final = Layout(PORTMAP, _DNAT_MAP_NAMES | frozenset(HAIRPIN_MAPS.values()),
                        ensure=ensure_layout, entries=_entries, chain_prefix="hp-")
_, create_elements, setup_blind, setup_informed, teardown_commands, gc_commands = (
    _LAYOUT.builders())
delete_elements, owned_elements = _LAYOUT.delete_elements, _LAYOUT.labelled


# ------------------------------------------------------------------------------ CHECK


def _check_chains(state: nj.TableState, pm: PortMap) -> list[str]:
    problems = []
    wanted = dict(static_rules())
    if pm.masquerades:
        wanted[hairpin_chain(pm)] = hairpin_rules(pm)
    for name, rules in wanted.items():
        chain = state.chain(name)
        hook = BASE_CHAINS.get(name)
        if chain is None:
            problems.append(f"nftables: chain {name} missing from {FAMILY} {TABLE}")
        elif hook is not None and (chain.kind, chain.hook) != ("nat", hook.hook):
            problems.append(f"nftables: chain {name} is not a nat {hook.hook} hook")
        elif list(chain.rules) != [tuple(r) for r in rules]:
            problems.append(f"nftables: chain {name} has unexpected rules")
    return problems


def check_state(state: nj.TableState, pm: PortMap) -> list[str]:
    """What differs from the state ``setup`` makes for ``pm``; empty when all is in place."""
    missing = missing_maps(state, [*sorted(_DNAT_MAP_NAMES), *HAIRPIN_MAPS.values()], PORTMAP)
    if missing:
        return missing
    problems = _check_chains(state, pm)
    label = pm.key.label
    wanted = {(m, same_key(k)): same_key(v) for m, k, v in _entries(pm)}
    have = {(e.container, same_key(e.key)): e for e in _LAYOUT.of(state)}
    for (m, key), value in wanted.items():
        found = have.get((m, key))
        shown = " . ".join(str(p) for p in key)
        if found is None:
            problems.append(f"nftables: no element {shown} in map {m}")
        elif found.comment != label:
            problems.append(f"nftables: element {shown} of {m} is labelled {found.comment}")
        elif same_key(found.value) != value:
            problems.append(f"nftables: element {shown} of {m} maps to {found.value}")
    problems += [f"nftables: stale element {e.key} of this attachment in {e.container}"
                 for e in owned_elements(state, label)
                 if (e.container, same_key(e.key)) not in wanted]
    return problems


# ------------------------------------------------------------------------------ the facet


class NftPortmap(NftFacet[PortMap]):
    """``PortmapFacet`` on nftables, in the calling thread's network namespace. Setup
    escalates through the engine's three writes as masquerade does: pure inserts (any ADD on
    a host where the network has published before); else the whole layout plus add-delete-add
    of each element (first ADD, or a retried one); else read and delete what holds our keys."""

    def __init__(self, runner: NftRunner | None = None) -> None:
        super().__init__(_LAYOUT, "portmap", runner)

    def setup(self, pm: PortMap) -> None:
        if pm.targets():
            self._escalate(pm)

    def teardown(self, key: AttachmentKey, hint: PortMap | None = None) -> None:
        if hint is not None and hint.key == key and hint.targets():
            try:
                self._nft.run(delete_elements(hint))
            except NftError as err:  # not what was published: find the elements by label
                log.debug("exact portmap delete for %s failed: %s", key.label, err.details)
            else:
                return
        super().teardown(key)

    def check(self, pm: PortMap) -> list[str]:
        return self._nft.check(lambda state: check_state(state, pm)) if pm.targets() else []
