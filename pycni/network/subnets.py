"""Address pools and the subnet picker (Docker's "default address pools"), pure logic.

A pool is a ``base`` prefix cut into networks of prefix length ``size``. ``pick_subnet`` walks
the pools in order and returns the first network of that size that overlaps nothing taken:
other networks' subnets and every prefix the host routes or has an address in (VPN and LAN
routes must never be shadowed by a container network). The taken prefixes are merged into
sorted intervals once, and each step of the walk either returns or jumps past one of them, so
a pick costs O(k log k) for k taken prefixes, whatever the size of the pool.

IPv6 pools default to a ULA /48 (RFC 4193: ``fd`` + 40 bits) derived from a stable seed (the
machine id), cut into /64s.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pycni.ipam.config import IPAddress, IPNetwork
from pycni.network.names import invalid

__all__ = [
    "DEFAULT_POOLS",
    "AddressPool",
    "IPAddress",
    "IPNetwork",
    "overlapping",
    "parse_pool",
    "parse_subnet",
    "pick_subnet",
    "ula_pool",
]

# Smallest networks worth making: a gateway and at least two containers.
_MAX_PREFIX: Final = {4: 29, 6: 125}
ULA_SUBNET_SIZE: Final = 64


@dataclass(frozen=True, slots=True)
class AddressPool:
    base: IPNetwork
    size: int

    def __post_init__(self) -> None:
        limit = _MAX_PREFIX[self.base.version]
        if not self.base.prefixlen <= self.size <= limit:
            raise invalid(f"invalid address pool {self.base} size {self.size}",
                          f"size must be between {self.base.prefixlen} and {limit}")

    def __str__(self) -> str:
        return f"{self.base} (/{self.size} each)"


DEFAULT_POOLS: Final = (AddressPool(ipaddress.ip_network("10.100.0.0/14"), 24),)


def parse_subnet(text: str, *, what: str = "subnet") -> IPNetwork:
    """A CIDR in network form: ``10.1.0.5/24`` is refused, naming ``10.1.0.0/24``."""
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as err:
        raise invalid(f"invalid {what} {text!r}", "expected a CIDR such as 10.1.0.0/24") from err
    if "/" not in text:
        raise invalid(f"invalid {what} {text!r}", "the prefix length is missing")
    if iface.ip != iface.network.network_address:
        raise invalid(f"invalid {what} {text!r}",
                      f"host bits are set; did you mean {iface.network}?")
    return iface.network


def parse_pool(doc: Any, *, where: str) -> AddressPool:
    """``{base: CIDR, size: N}`` from the config file."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("base"), str) or \
            not isinstance(doc.get("size"), int) or isinstance(doc.get("size"), bool):
        raise invalid(f"invalid address pool in {where}", "expected {base: CIDR, size: N}")
    return AddressPool(parse_subnet(doc["base"], what=f"pool base in {where}"), doc["size"])


def ula_pool(seed: bytes) -> AddressPool:
    """A /48 under fd00::/8 whose 40-bit global id is a hash of ``seed``, cut into /64s."""
    from pycni.digest import sha256_hex

    global_id = int(sha256_hex(seed)[:10], 16)  # the first 5 bytes
    base = ipaddress.IPv6Network(((0xFD << 120) | (global_id << 80), 48))
    return AddressPool(base, ULA_SUBNET_SIZE)


def overlapping(subnet: IPNetwork, taken: Iterable[IPNetwork]) -> list[IPNetwork]:
    return [t for t in taken if t.version == subnet.version and subnet.overlaps(t)]


def _merged(taken: Iterable[IPNetwork], version: int) -> list[tuple[int, int]]:
    spans = sorted((int(t.network_address), int(t.broadcast_address))
                   for t in taken if t.version == version)
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _first_free(pool: AddressPool, blocked: Sequence[tuple[int, int]]) -> IPNetwork | None:
    bits = pool.base.max_prefixlen
    step = 1 << (bits - pool.size)
    start, end = int(pool.base.network_address), int(pool.base.broadcast_address)
    ends = [hi for _, hi in blocked]
    candidate = start
    while candidate + step - 1 <= end:
        i = bisect.bisect_left(ends, candidate)  # the first blocked span not wholly below
        if i == len(blocked) or blocked[i][0] > candidate + step - 1:
            return ipaddress.ip_network((candidate, pool.size))
        past = blocked[i][1] + 1  # jump past it, to the next aligned network
        candidate = start + -(-(past - start) // step) * step
    return None


def pick_subnet(pools: Sequence[AddressPool], taken: Iterable[IPNetwork], version: int
                ) -> IPNetwork:
    """The first free network of the first pool of ``version`` that has one."""
    taken = list(taken)
    candidates = [p for p in pools if p.base.version == version]
    blocked = _merged(taken, version)
    for pool in candidates:
        found = _first_free(pool, blocked)
        if found is not None:
            return found
    raise invalid(
        f"no free IPv{version} subnet in the address pools",
        f"pools {', '.join(map(str, candidates)) or '(none)'} are exhausted by other networks "
        "and the host's routes; give one with --subnet or add a pool (pycni.yaml, "
        "network.default_address_pools)",
    )
