"""What each network's names are, and what one container may see.

A ``Zone`` is one network's names, built from its attachments' records: ``name`` and, with a
domain, ``name.domain`` -> the addresses of every attachment carrying it (two containers may
share an alias: both answer), and each address's reverse name -> the first name of its
attachment. A ``View`` is what one container netns resolves: the zones of the networks it is
attached to, never others; it carries the cache of wire answers built for it.

Plain strings only (lowercased names without the final dot): the wire format is ``answer``'s.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from pycni.dns.names import normalize
from pycni.dns.records import Registration

__all__ = ["Addresses", "View", "Zone"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Addresses:
    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()

    def __add__(self, other: Addresses) -> Addresses:
        return Addresses(_merge(self.v4, other.v4), _merge(self.v6, other.v6))


def _merge(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))


def _addresses(ips: Iterable[str]) -> Addresses:
    parsed = [ipaddress.ip_address(ip) for ip in ips]
    return Addresses(tuple(str(a) for a in parsed if a.version == 4),
                     tuple(str(a) for a in parsed if a.version == 6))


def _fqdns(reg: Registration) -> list[str]:
    names = [normalize(n) for n in reg.names]
    if reg.domain:
        names += [f"{n}.{reg.domain}" for n in names]
    return names


class Zone:
    """One network's names, updated attachment by attachment."""

    def __init__(self, network: str) -> None:
        self.network = network
        self._regs: dict[str, Registration] = {}
        self._names: dict[str, dict[str, Addresses]] = {}
        self._reverse: dict[str, dict[str, str]] = {}
        self._domains: Counter[str] = Counter()

    def put(self, reg: Registration) -> None:
        self.drop(reg.label)
        self._regs[reg.label] = reg
        addresses = _addresses(reg.ips)
        if reg.domain:
            self._domains[reg.domain] += 1
        for name in _fqdns(reg):
            self._names.setdefault(name, {})[reg.label] = addresses
        if reg.names:
            target = _fqdns(reg)[len(reg.names)] if reg.domain else normalize(reg.names[0])
            for ip in reg.ips:
                pointer = ipaddress.ip_address(ip).reverse_pointer
                self._reverse.setdefault(pointer, {})[reg.label] = target

    def drop(self, label: str) -> Registration | None:
        reg = self._regs.pop(label, None)
        if reg is None:
            return None
        for name in _fqdns(reg):
            _discard(self._names, name, label)
        for ip in reg.ips:
            _discard(self._reverse, ipaddress.ip_address(ip).reverse_pointer, label)
        if reg.domain:
            self._domains[reg.domain] -= 1
            if not self._domains[reg.domain]:
                del self._domains[reg.domain]
        return reg

    def domains(self) -> Iterable[str]:
        return self._domains.keys()

    def lookup(self, name: str) -> Addresses | None:
        found = self._names.get(name)
        if not found:
            return None
        total = Addresses()
        for addresses in found.values():
            total = total + addresses
        return total

    def pointer(self, name: str) -> str | None:
        found = self._reverse.get(name)
        return next(iter(found.values())) if found else None


def _discard(table: dict[str, dict[str, T]], key: str, label: str) -> None:
    entry = table.get(key)
    if entry is not None:
        entry.pop(label, None)
        if not entry:
            del table[key]


@dataclass(eq=False)
class View:
    """What one container netns resolves: its networks' zones, and answers cached for it."""

    zones: tuple[Zone, ...]
    cache: dict[bytes, bytes] = field(default_factory=dict)  # UDP answers (maybe truncated)
    tcp_cache: dict[bytes, bytes] = field(default_factory=dict)

    def forget(self) -> None:
        """Drop cached answers: a zone of this view changed."""
        self.cache.clear()
        self.tcp_cache.clear()

    @property
    def networks(self) -> frozenset[str]:
        return frozenset(z.network for z in self.zones)

    def lookup(self, name: str) -> Addresses | None:
        found = [a for z in self.zones if (a := z.lookup(name)) is not None]
        if not found:
            return None
        total = Addresses()
        for addresses in found:
            total = total + addresses
        return total

    def pointer(self, name: str) -> str | None:
        for zone in self.zones:
            target = zone.pointer(name)
            if target is not None:
                return target
        return None

    def owns(self, name: str) -> bool:
        """True for a name under one of these networks' domains: ours to deny, not to forward."""
        return any(name == d or name.endswith(f".{d}") for z in self.zones for d in z.domains())
