"""What every nftables feature does with its elements, written once.

Each feature keeps one element per container thing (an address, a published port, a bridge
port) in sets or maps of a table it owns, commented with the attachment label, and per-network
chains the elements jump to. So an ADD is element inserts whatever the number of containers
(field failure #17), and DEL and GC find an attachment's elements by label, never by live
addresses. ``Owned`` says which sets/maps and chains are the feature's; its methods build the
commands (pure, unit-tested): the three setup writes the engine escalates through, and
teardown and GC from a read of the table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycni.firewall.nftables import nftjson as nj

__all__ = ["Entry", "Owned", "missing_maps", "same_key", "verdict_maps"]

# (set or map, key, value or None for a set element)
Entry = tuple[str, Any, Any]

_ADDR_TYPES: Final = {4: "ipv4_addr", 6: "ipv6_addr"}


def verdict_maps(maps: Mapping[int, str], table: nj.Table = nj.PYCNI) -> list[nj.Cmd]:
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


@dataclass(frozen=True, slots=True)
class Owned:
    """A feature's sets/maps in ``table``, and the prefix of its per-network chains
    (``<chain_prefix><network tag>-...``; empty when it has none)."""

    table: nj.Table
    containers: frozenset[str]
    chain_prefix: str = ""

    def _element(self, verb: str, entry: Entry, label: str | None = None) -> nj.Cmd:
        container, key, value = entry
        return nj.element(verb, container, key, value, comment=label, table=self.table)

    def _delete(self, container: str, key: Any) -> nj.Cmd:
        return nj.delete_element(container, key, table=self.table)

    def create(self, entries: Iterable[Entry], label: str) -> list[nj.Cmd]:
        """The fast path: pure inserts, failing if any key exists or the layout is missing.
        Pure inserts commit without an RCU grace period."""
        return [self._element("create", e, label) for e in entries]

    def replace_blind(self, layout: list[nj.Cmd], entries: Iterable[Entry],
                      label: str) -> list[nj.Cmd]:
        """The layout, then add-delete-add per element: replaces a same-valued element
        whatever its comment (a retried ADD, a crashed attachment's leftover) without reading."""
        cmds = list(layout)
        for e in entries:
            cmds += [self._element("add", e, label), self._delete(e[0], e[1]),
                     self._element("add", e, label)]
        return cmds

    def replace_informed(self, layout: list[nj.Cmd], entries: Iterable[Entry], label: str,
                         state: nj.TableState) -> list[nj.Cmd]:
        """The layout, deleting whatever element holds one of our keys (even one with another
        value, which the blind add refuses), then adding ours."""
        cmds = list(layout)
        for e in entries:
            container, key, _ = e
            if any(same_key(x.key) == same_key(key) for x in state.elements_of(container)):
                cmds.append(self._delete(container, key))
            cmds.append(self._element("add", e, label))
        return cmds

    def delete(self, entries: Iterable[Entry]) -> list[nj.Cmd]:
        """Exactly these elements, without reading (the write fails if one is absent)."""
        return [self._delete(container, key) for container, key, _ in entries]

    def of(self, state: nj.TableState) -> list[nj.Element]:
        return [e for e in state.elements if e.container in self.containers]

    def labelled(self, state: nj.TableState, label: str) -> list[nj.Element]:
        return [e for e in self.of(state) if e.comment == label]

    def teardown(self, state: nj.TableState, label: str) -> list[nj.Cmd]:
        """Every element carrying the attachment's label (addresses are not needed)."""
        return [self._delete(e.container, e.key) for e in self.labelled(state, label)]

    def gc(self, state: nj.TableState, network_tag: str, keep: Collection[str]) -> list[nj.Cmd]:
        """The network's elements whose label is not in ``keep``, then the network's chains no
        remaining element jumps to (a chain's rules go with it)."""
        ours = f"{network_tag}-"

        def stale(e: nj.Element) -> bool:
            return e.container in self.containers and (e.comment or "").startswith(ours) \
                and e.comment not in keep

        drop = [e for e in state.elements if stale(e)]
        cmds = [self._delete(e.container, e.key) for e in drop]
        if not self.chain_prefix:
            return cmds
        still = {nj.verdict_target(e.value) for e in state.elements if not stale(e)}
        prefix = f"{self.chain_prefix}{network_tag}-"
        return cmds + [nj.delete_chain(c.name, table=self.table) for c in state.chains
                       if c.name.startswith(prefix) and c.name not in still]
