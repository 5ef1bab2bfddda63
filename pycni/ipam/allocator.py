"""Pure range-set logic of host-local: which address comes next, where a requested one goes.

No I/O here: the store answers "is this address taken?" and the caller drives the iterator.
The order is the reference plugin's round-robin, so a crash-looping container does not get the
same address again until the whole range set has been used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from pycni.cni.errors import CNIError, ErrorCode
from pycni.ipam.config import IPAddress, IPRange

__all__ = [
    "Allocation",
    "capacity",
    "describe",
    "iter_candidates",
    "make_allocation",
    "place_requested",
    "range_for",
]

RangeSet = Sequence[IPRange]


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """One allocated address: ``address`` is ``ip/prefixlen`` of the range's subnet."""

    address: str
    gateway: str | None
    range_set_index: int

    @property
    def ip(self) -> IPAddress:
        return ipaddress.ip_interface(self.address).ip

    @property
    def version(self) -> int:
        return self.ip.version


def make_allocation(ip: IPAddress, rng: IPRange, index: int) -> Allocation:
    return Allocation(
        address=f"{ip}/{rng.subnet.prefixlen}",
        gateway=str(rng.gateway),
        range_set_index=index,
    )


def describe(range_set: RangeSet) -> str:
    """``start-end,start-end``: how the reference names a range set in its messages."""
    return ",".join(str(rng) for rng in range_set)


def range_for(range_set: RangeSet, ip: IPAddress) -> IPRange | None:
    """The range of the set that holds ``ip`` (between its start and end), if any."""
    return next((rng for rng in range_set if rng.contains(ip)), None)


def capacity(range_set: RangeSet) -> int:
    """How many addresses the set can hand out (gateways inside a range are never given)."""
    total = 0
    for rng in range_set:
        total += int(rng.range_end) - int(rng.range_start) + 1
        total -= rng.contains(rng.gateway)
    return total


def _segments(range_set: RangeSet, last: IPAddress | None) -> list[tuple[IPRange, int, int]]:
    """The set as (range, first, last) int segments, in the order the iterator walks them."""
    order = [(rng, int(rng.range_start), int(rng.range_end)) for rng in range_set]
    if last is None:
        return order
    j = next((i for i, rng in enumerate(range_set) if rng.contains(last)), None)
    if j is None:
        # A stale hint (the ranges changed): start at the first range's start, as on first use.
        return order
    rng, lo, hi = order[j]
    n = int(last)
    head = [(rng, n + 1, hi)] if n < hi else []
    # ... then the following ranges cyclically, ending with the part up to the last one given.
    return [*head, *order[j + 1 :], *order[:j], (rng, lo, n)]


def iter_candidates(
    range_set: RangeSet, last_reserved: IPAddress | None = None
) -> Iterator[tuple[IPAddress, IPRange]]:
    """Every allocatable address of the set once, starting after ``last_reserved``.

    The walk goes to the range's end, wraps to the next range's start (cyclically), skips
    each range's gateway and stops when it is back where it started: last_reserved itself
    comes last. Lazy, so a /64 costs nothing until it is walked.
    """
    for rng, lo, hi in _segments(range_set, last_reserved):
        make = ipaddress.IPv4Address if rng.version == 4 else ipaddress.IPv6Address
        gateway = int(rng.gateway)
        for n in range(lo, hi + 1):
            if n != gateway:
                yield make(n), rng


def _invalid_request(ip: IPAddress, reason: str) -> CNIError:
    # Code 7: the request can never succeed with this config, retrying will not help.
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"requested IP address {ip} {reason}")


def _set_for(range_sets: Sequence[RangeSet], ip: IPAddress) -> tuple[int, IPRange] | None:
    for index, range_set in enumerate(range_sets):
        rng = range_for(range_set, ip)
        if rng is not None:
            return index, rng
    return None


def place_requested(
    range_sets: Sequence[RangeSet], requested: Sequence[IPAddress]
) -> Mapping[int, tuple[IPAddress, IPRange]]:
    """Which range set each requested address belongs to: ``{set index: (ip, range)}``.

    An address must lie inside some range (start..end, as in the reference), must not be
    that range's gateway, and a set takes at most one of them (one address per set).
    """
    placed: dict[int, tuple[IPAddress, IPRange]] = {}
    for ip in requested:
        where = _set_for(range_sets, ip)
        if where is None:
            sets = "; ".join(describe(rs) for rs in range_sets)
            raise _invalid_request(ip, f"is not inside any range set ({sets})")
        index, rng = where
        if ip == rng.gateway:
            raise _invalid_request(ip, f"is the gateway of {rng.subnet}")
        if index in placed:
            other = placed[index][0]
            raise _invalid_request(ip, f"and {other} both fall into range set {index}")
        placed[index] = (ip, rng)
    return placed
