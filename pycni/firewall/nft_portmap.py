"""The port-mapping layout in its own table ``inet pycni_portmap``: pure builders and a checker.

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

import ipaddress
from collections.abc import Collection, Iterable
from typing import Any, Final

from pycni.firewall import nft_json as nj
from pycni.firewall.portmap_model import DnatTarget, PortMap

__all__ = [
    "BASE_CHAINS",
    "DNAT_MAPS",
    "FAMILY",
    "HAIRPIN_MAPS",
    "TABLE",
    "check_state",
    "create_elements",
    "delete_elements",
    "ensure_layout",
    "gc_commands",
    "hairpin_chain",
    "hairpin_rules",
    "list_table",
    "list_tables",
    "owned_elements",
    "setup_blind",
    "setup_informed",
    "static_rules",
    "table_in",
    "teardown_commands",
]

FAMILY: Final = "inet"
TABLE: Final = "pycni_portmap"
DNAT_CHAIN: Final = "hostports"
DSTNAT_PRIO: Final = -100
SRCNAT_PRIO: Final = 100
# (family, with host address) -> stem of the map pair "<stem>_addr", "<stem>_port"
DNAT_MAPS: Final = {(4, True): "dnat4_ip", (4, False): "dnat4",
                    (6, True): "dnat6_ip", (6, False): "dnat6"}
_DNAT_MAP_NAMES: Final = frozenset(f"{stem}_{part}" for stem in DNAT_MAPS.values()
                                   for part in ("addr", "port"))
HAIRPIN_MAPS: Final = {4: "hairpin4", 6: "hairpin6"}
BASE_CHAINS: Final = {"prerouting": ("prerouting", DSTNAT_PRIO),
                      "output": ("output", DSTNAT_PRIO),
                      "postrouting": ("postrouting", SRCNAT_PRIO)}
_ADDR: Final = {4: "ipv4_addr", 6: "ipv6_addr"}
_PROTO: Final = {4: "ip", 6: "ip6"}
_NFPROTO: Final = {4: "ipv4", 6: "ipv6"}
_LOCALHOST: Final = "127.0.0.0/8"

Cmd = dict[str, Any]


def _where(**fields: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **fields}


def list_table() -> Cmd:
    return {"list": {"table": {"family": FAMILY, "name": TABLE}}}


def list_tables() -> Cmd:
    return {"list": {"tables": None}}


def table_in(doc: dict[str, Any]) -> bool:
    return any(
        isinstance(o, dict) and o.get("table", {}).get("family") == FAMILY
        and o["table"].get("name") == TABLE for o in doc.get("nftables", [])
    )


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


def _add_map(name: str, key_types: list[str], value: str) -> Cmd:
    return {"add": {"map": _where(name=name, type=key_types, map=value)}}


def _add_chain(name: str, hook: tuple[str, int] | None = None) -> Cmd:
    if hook is None:
        return {"add": {"chain": _where(name=name)}}
    return {"add": {"chain": _where(name=name, type="nat", hook=hook[0], prio=hook[1],
                                    policy="accept")}}


def _rewrite_chain(name: str, rules: Iterable[list[Any]],
                   hook: tuple[str, int] | None = None) -> list[Cmd]:
    """Create-or-keep, flush, re-add: atomic within the transaction, and idempotent."""
    return [_add_chain(name, hook), {"flush": {"chain": _where(name=name)}},
            *({"add": {"rule": _where(chain=name, expr=expr)}} for expr in rules)]


def _maps() -> list[Cmd]:
    cmds = []
    for (version, with_addr), name in DNAT_MAPS.items():
        key = ([_ADDR[version]] if with_addr else []) + ["inet_proto", "inet_service"]
        cmds += [_add_map(f"{name}_addr", key, _ADDR[version]),
                 _add_map(f"{name}_port", key, "inet_service")]
    cmds += [_add_map(name, [_ADDR[v], "inet_proto", "inet_service"], "verdict")
             for v, name in HAIRPIN_MAPS.items()]
    return cmds


def ensure_layout(pm: PortMap) -> list[Cmd]:
    """Table, maps, static chains and the network's hairpin chain, rewritten whole."""
    cmds = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}, *_maps()]
    rules = static_rules()
    cmds += _rewrite_chain(DNAT_CHAIN, rules[DNAT_CHAIN])
    for name, hook in BASE_CHAINS.items():
        cmds += _rewrite_chain(name, rules[name], hook)
    if pm.masquerades:
        cmds += _rewrite_chain(hairpin_chain(pm), hairpin_rules(pm))
    return cmds


def _dnat_key(t: DnatTarget) -> Any:
    head = [t.host_addr] if t.host_addr else []
    return {"concat": [*head, t.protocol, t.host_port]}


def _elements(pm: PortMap) -> list[tuple[str, Any, Any]]:
    """(map, key, value) of every element of ``pm``."""
    out: list[tuple[str, Any, Any]] = []
    for t in pm.targets():
        stem = DNAT_MAPS[(t.version, t.host_addr is not None)]
        out += [(f"{stem}_addr", _dnat_key(t), t.container_ip),
                (f"{stem}_port", _dnat_key(t), t.container_port)]
    jump = {"jump": {"target": hairpin_chain(pm)}}
    out += [(HAIRPIN_MAPS[v], {"concat": list(k)}, jump)
            for v in (4, 6) for k in pm.hairpin_keys(v)]
    return out


def _elem(verb: str, map_name: str, key: Any, value: Any, label: str) -> Cmd:
    item = [{"elem": {"val": key, "comment": label}}, value]
    return {verb: {"element": _where(name=map_name, elem=[item])}}


def _delete(map_name: str, key: Any) -> Cmd:
    return {"delete": {"element": _where(name=map_name, elem=[key])}}


def create_elements(pm: PortMap) -> list[Cmd]:
    """The fast path: pure inserts, failing if a key exists or the layout is missing."""
    return [_elem("create", m, k, v, pm.key.label) for m, k, v in _elements(pm)]


def setup_blind(pm: PortMap) -> list[Cmd]:
    """Whole layout, then add-delete-add per element: replaces a same-valued leftover."""
    cmds = ensure_layout(pm)
    for m, k, v in _elements(pm):
        cmds += [_elem("add", m, k, v, pm.key.label), _delete(m, k),
                 _elem("add", m, k, v, pm.key.label)]
    return cmds


def _norm(key: Any) -> Any:
    """A key as nft lists it back (addresses canonical), for comparisons."""
    if isinstance(key, dict) and "concat" in key:
        return tuple(_norm(part) for part in key["concat"])
    if isinstance(key, str):
        try:
            return str(ipaddress.ip_address(key))
        except ValueError:
            return key
    return key


def setup_informed(pm: PortMap, state: nj.TableState) -> list[Cmd]:
    """Whole layout, deleting whatever holds one of our keys (a leftover with another
    value, which the blind add refuses), then adding ours."""
    cmds = ensure_layout(pm)
    for m, k, v in _elements(pm):
        if any(_norm(e.key) == _norm(k) for e in state.elements_of(m)):
            cmds.append(_delete(m, k))
        cmds.append(_elem("add", m, k, v, pm.key.label))
    return cmds


def delete_elements(pm: PortMap) -> list[Cmd]:
    """Delete exactly ``pm``'s elements, without reading (fails if one is absent)."""
    return [_delete(m, k) for m, k, _ in _elements(pm)]


def _ours(e: nj.Element) -> bool:
    return e.container in _DNAT_MAP_NAMES or e.container in HAIRPIN_MAPS.values()


def owned_elements(state: nj.TableState, label: str) -> list[nj.Element]:
    return [e for e in state.elements if _ours(e) and e.comment == label]


def teardown_commands(state: nj.TableState, label: str) -> list[Cmd]:
    return [_delete(e.container, e.key) for e in owned_elements(state, label)]


def gc_commands(state: nj.TableState, network_tag: str, keep: Collection[str]) -> list[Cmd]:
    """Delete the network's elements whose label is not in ``keep``, then the network's
    hairpin chains no remaining element jumps to."""
    prefix = f"{network_tag}-"

    def stale(e: nj.Element) -> bool:
        return _ours(e) and (e.comment or "").startswith(prefix) and e.comment not in keep

    drop = [e for e in state.elements if stale(e)]
    still = {nj.verdict_target(e.value) for e in state.elements if not stale(e)}
    chains = [c.name for c in state.chains
              if c.name.startswith(f"hp-{network_tag}-") and c.name not in still]
    return [_delete(e.container, e.key) for e in drop] + [
        {"delete": {"chain": _where(name=name)}} for name in chains
    ]


# ------------------------------------------------------------------------------ CHECK


def _check_chains(state: nj.TableState, pm: PortMap) -> list[str]:
    problems = []
    hooks = {name: hook for name, (hook, _) in BASE_CHAINS.items()}
    wanted = dict(static_rules())
    if pm.masquerades:
        wanted[hairpin_chain(pm)] = hairpin_rules(pm)
    for name, rules in wanted.items():
        chain = state.chain(name)
        if chain is None:
            problems.append(f"nftables: chain {name} missing from {FAMILY} {TABLE}")
        elif name in hooks and (chain.kind, chain.hook) != ("nat", hooks[name]):
            problems.append(f"nftables: chain {name} is not a nat {hooks[name]} hook")
        elif list(chain.rules) != [tuple(r) for r in rules]:
            problems.append(f"nftables: chain {name} has unexpected rules")
    return problems


def check_state(state: nj.TableState, pm: PortMap) -> list[str]:
    """What differs from the state ``setup`` makes for ``pm``; empty when all is in place."""
    names = [*sorted(_DNAT_MAP_NAMES), *HAIRPIN_MAPS.values()]
    missing = [n for n in names if n not in state.containers]
    if missing:
        return [f"nftables: map {', '.join(missing)} missing from table {FAMILY} {TABLE}"]
    problems = _check_chains(state, pm)
    label = pm.key.label
    wanted = {(m, _norm(k)): _norm(v) for m, k, v in _elements(pm)}
    have = {(e.container, _norm(e.key)): e for e in state.elements if _ours(e)}
    for (m, key), value in wanted.items():
        found = have.get((m, key))
        shown = " . ".join(str(p) for p in key)
        if found is None:
            problems.append(f"nftables: no element {shown} in map {m}")
        elif found.comment != label:
            problems.append(f"nftables: element {shown} of {m} is labelled {found.comment}")
        elif _norm(found.value) != value:
            problems.append(f"nftables: element {shown} of {m} maps to {found.value}")
    problems += [f"nftables: stale element {e.key} of this attachment in {e.container}"
                 for e in owned_elements(state, label) if (e.container, _norm(e.key)) not in wanted]
    return problems
