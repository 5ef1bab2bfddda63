"""What every nftables feature shares, written once: labelled elements, the builders of its
three setup writes, teardown and GC by label, and the facet's calls.

Each feature keeps one element per container thing (an address, a published port, a bridge
port) in sets or maps of a table it owns, commented with the attachment label, and
per-network chains the elements jump to. So an ADD is element inserts whatever the number of
containers (field failure #17), and DEL and GC find an attachment's elements by label, never
by live addresses. ``Layout`` says which sets/maps and chains are the feature's, how its
shared state is (re)built and which elements a spec has, and builds the commands (pure,
unit-tested); ``NftFacet`` runs them through the engine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final, Generic, Protocol, TypeVar

from pycni.firewall.model import AttachmentKey
from pycni.firewall.nftables import nftjson as nj
from pycni.firewall.nftables.engine import NftRunner, NftTable

__all__ = [
    "Entry",
    "Layout",
    "NftFacet",
    "address_layout",
    "missing_maps",
    "same_key",
]

# (set or map, key, value or None for a set element)
Entry = tuple[str, Any, Any]

_ADDR_TYPES: Final = {4: "ipv4_addr", 6: "ipv6_addr"}


class Keyed(Protocol):
    @property
    def key(self) -> AttachmentKey: ...


class Addressed(Keyed, Protocol):
    def sources_of(self, version: int, /) -> tuple[str, ...]: ...


class GcCommands(Protocol):
    def __call__(self, state: nj.TableState, network_tag: str,
                 keep: Collection[str]) -> list[nj.Cmd]: ...


S = TypeVar("S", bound=Keyed)
A = TypeVar("A", bound=Addressed)
Builders = tuple[
    Callable[[S], list[nj.Cmd]],
    Callable[[S], list[nj.Cmd]],
    Callable[[S], list[nj.Cmd]],
    Callable[[S, nj.TableState], list[nj.Cmd]],
    Callable[[nj.TableState, str], list[nj.Cmd]],
    GcCommands,
]


def _verdict_maps(maps: Mapping[int, str], table: nj.Table = nj.PYCNI) -> list[nj.Cmd]:
    """One ``<address> : verdict`` map per IP version (``add`` of an existing one is a no-op)."""
    return [nj.add_map(name, key_type=_ADDR_TYPES[v], value_type="verdict", table=table)
            for v, name in maps.items()]


def same_key(key: Any) -> Any:
    """A key as nft lists it back (addresses canonical, concatenations as tuples)."""
    if isinstance(key, Mapping) and "concat" in key:
        return tuple(same_key(part) for part in key["concat"])
    if isinstance(key, str):
        try:
            return str(ipaddress.ip_address(key))
        except ValueError:
            return key
    return key


def missing_maps(state: nj.TableState, names: Iterable[str], table: nj.Table) -> list[str]:
    missing = [n for n in names if n not in state.containers]
    if missing:
        return [f"nftables: map {', '.join(missing)} missing from table {table.family} "
                f"{table.name}"]
    return []


class Layout(Generic[S]):
    """A feature's elements: its sets/maps (``containers``) in ``table``, the prefix of its
    per-network chains (``<chain_prefix><network tag>-...``; empty when it has none), the
    commands that rebuild the shared state a spec's elements depend on (``ensure``: table,
    sets/maps, chains, rewritten whole, so idempotent and safe to race) and the elements of a
    spec (``entries``). Its methods build commands only (pure, unit-tested). A plain class, as
    ``nftjson.Table`` is, for the same reason."""

    __slots__ = ("chain_prefix", "containers", "ensure", "entries", "kind", "table")

    def __init__(self, table: nj.Table, containers: frozenset[str], *,
                 ensure: Callable[[S], list[nj.Cmd]], entries: Callable[[S], list[Entry]],
                 chain_prefix: str = "", kind: str = "maps") -> None:
        self.table, self.containers, self.chain_prefix = table, containers, chain_prefix
        self.ensure, self.entries, self.kind = ensure, entries, kind

    def listing(self) -> nj.Cmd:
        """What lists the containers (``kind``: all maps, or all sets) with their elements:
        all a teardown reads."""
        return nj.list_containers(self.kind, self.table)

    def element(self, verb: str, entry: Entry, label: str | None = None) -> nj.Cmd:
        container, key, value = entry
        return nj.element(verb, container, key, value, comment=label, table=self.table)

    def delete(self, container: str, key: Any) -> nj.Cmd:
        return nj.delete_element(container, key, table=self.table)

    def of(self, state: nj.TableState) -> list[nj.Element]:
        return [e for e in state.elements if e.container in self.containers]

    def labelled(self, state: nj.TableState, label: str) -> list[nj.Element]:
        return [e for e in self.of(state) if e.comment == label]

    def create_elements(self, spec: S) -> list[nj.Cmd]:
        """The fast path: pure inserts, failing if any key exists or the layout is missing.
        Pure inserts queue nothing for destruction: no RCU grace period at the context's free."""
        return [self.element("create", e, spec.key.label) for e in self.entries(spec)]

    def setup_fresh(self, spec: S) -> list[nj.Cmd]:
        """The layout made from nothing and the elements added: on a fresh host (or this
        feature's first use of its table) the cheap write; fails if any of it exists."""
        return [*nj.first_write(self.ensure(spec)),
                *(self.element("add", e, spec.key.label) for e in self.entries(spec))]

    def setup_blind(self, spec: S) -> list[nj.Cmd]:
        """The layout, then add-delete-add per element: replaces a same-valued element
        whatever its comment (a retried ADD, a crashed attachment's leftover) without reading."""
        cmds, label = self.ensure(spec), spec.key.label
        for e in self.entries(spec):
            cmds += [self.element("add", e, label), self.delete(e[0], e[1]),
                     self.element("add", e, label)]
        return cmds

    def setup_informed(self, spec: S, state: nj.TableState) -> list[nj.Cmd]:
        """The layout, deleting whatever element holds one of our keys (even one with another
        value, which the blind add refuses), then adding ours."""
        cmds, label = self.ensure(spec), spec.key.label
        for e in self.entries(spec):
            container, key, _ = e
            if any(same_key(x.key) == same_key(key) for x in state.elements_of(container)):
                cmds.append(self.delete(container, key))
            cmds.append(self.element("add", e, label))
        return cmds

    def delete_elements(self, spec: S) -> list[nj.Cmd]:
        """Exactly the spec's elements, without reading (the write fails if one is absent)."""
        return [self.delete(container, key) for container, key, _ in self.entries(spec)]

    def teardown_commands(self, state: nj.TableState, label: str) -> list[nj.Cmd]:
        """Every element carrying the attachment's label (addresses are not needed)."""
        return [self.delete(e.container, e.key) for e in self.labelled(state, label)]

    def gc_commands(self, state: nj.TableState, network_tag: str,
                    keep: Collection[str]) -> list[nj.Cmd]:
        """The network's elements whose label is not in ``keep``, then the network's chains no
        remaining element jumps to (a chain's rules go with it)."""
        ours = f"{network_tag}-"

        def stale(e: nj.Element) -> bool:
            return e.container in self.containers and (e.comment or "").startswith(ours) \
                and e.comment not in keep

        cmds = [self.delete(e.container, e.key) for e in state.elements if stale(e)]
        if not self.chain_prefix:
            return cmds
        still = {nj.verdict_target(e.value) for e in state.elements if not stale(e)}
        prefix = f"{self.chain_prefix}{network_tag}-"
        return cmds + [nj.delete_chain(c.name, table=self.table) for c in state.chains
                       if c.name.startswith(prefix) and c.name not in still]

    def builders(self) -> Builders[S]:
        """``ensure_layout``, ``create_elements``, ``setup_blind``, ``setup_informed``,
        ``teardown_commands``, ``gc_commands``: what a feature module names its builders."""
        return (self.ensure, self.create_elements, self.setup_blind, self.setup_informed,
                self.teardown_commands, self.gc_commands)


def address_layout(*, maps: Mapping[int, str], base_chain: str, hook: nj.Hook,
                   base_rules: Callable[[], list[list[Any]]], chain_prefix: str,
                   chain_name: Callable[[A], str],
                   network_rules: Callable[[A], list[list[Any]]]) -> Layout[A]:
    """The layout masquerade and forward share in ``table inet pycni``: a verdict map per IP
    version with an element per container address, a static base chain that looks addresses
    up in them, and a chain per network (its name determines its rules) the elements jump
    to. Rewriting the layout is idempotent and safe to race: ``add`` of an existing table, map
    or chain is a no-op, and a flush and re-add of a chain's rules in one transaction is
    atomic."""

    def ensure(a: A) -> list[nj.Cmd]:
        return [nj.add_table(), *_verdict_maps(maps),
                *nj.rewrite_chain(base_chain, base_rules(), hook=hook),
                *nj.rewrite_chain(chain_name(a), network_rules(a))]

    def entries(a: A) -> list[Entry]:
        jump = {"jump": {"target": chain_name(a)}}
        return [(maps[v], ip, jump) for v in (4, 6) for ip in a.sources_of(v)]

    return Layout(nj.PYCNI, frozenset(maps.values()), ensure=ensure, entries=entries,
                  chain_prefix=chain_prefix)


class NftFacet(Generic[S]):
    """The calls every feature's facet makes the same way: setup escalates through the
    engine's three writes, teardown and GC read the table once and go by label. A feature
    adds its CHECK (and whatever else it does differently)."""

    def __init__(self, layout: Layout[S], what: str, runner: NftRunner | None = None) -> None:
        self._layout, self._what = layout, what
        self._nft = NftTable(layout.table, runner)

    def _escalate(self, spec: S) -> None:
        layout = self._layout
        self._nft.setup(self._what, spec.key.label, insert=lambda: layout.create_elements(spec),
                        fresh=lambda: layout.setup_fresh(spec),
                        replace=lambda: layout.setup_blind(spec),
                        informed=lambda state: layout.setup_informed(spec, state))

    def teardown(self, key: AttachmentKey) -> None:
        # The elements alone: the table's chains and rules, one set per network, are not
        # listed (0.47 against 1.16 ms with a few containers, and they grow with networks).
        self._nft.apply(lambda state: self._layout.teardown_commands(state, key.label),
                        listing=self._layout.listing())

    def gc(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        return self._nft.gc(f"nftables {self._what}", network, valid,
                            self._layout.gc_commands)

    def status(self) -> str | None:
        return self._nft.status()
