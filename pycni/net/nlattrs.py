"""A netlink reply cut down to the attributes a caller reads, before pyroute2 decodes it.

The kernel answers RTM_GETLINK with the whole link: ~40 attributes, among them both counter
blocks, every IPv6 setting and statistic (IFLA_AF_SPEC), XDP and, for a bridge, ~40 bridge
options. pyroute2 decodes every one of them eagerly: ~0.35 ms a link on this VM, of a ~0.5 ms
lookup; an ADD of the default chain looks up a few links, bandwidth's DEL two more. A caller
that reads a handful of attributes (``links.LinkInfo``) has the message rebuilt with only
those, and pyroute2's own message class decodes that. Only the attribute headers (length,
type) are read here; the values are pyroute2's to decode.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

__all__ = ["Wanted", "attribute_types", "trimmed"]

_NLA: Final = struct.Struct("=HH")  # length, type
_NLA_TYPE: Final = 0x3FFF  # the type without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_NLMSG_LENGTH: Final = struct.Struct("=I")

# Attribute types to keep, each with the types to keep inside it (None: all of it).
Wanted: TypeAlias = Mapping[int, frozenset[int] | None]


def attribute_types(cls: Any, names: Mapping[str, tuple[str, ...]]) -> Wanted:
    """``Wanted`` from attribute names of pyroute2 message class ``cls`` (its ``nla_map``), each
    with the names of the nested attributes to keep (empty: all of it)."""
    table = _table(cls)
    wanted: dict[int, frozenset[int] | None] = {}  # a Wanted being built
    for name, inner in names.items():
        number, form = table[name]
        if inner:
            nested = _table(getattr(cls, form))  # a nested attribute's class is named by it
            wanted[number] = frozenset(nested[n][0] for n in inner)
        else:
            wanted[number] = None
    return wanted


def _table(cls: Any) -> dict[str, tuple[int, str]]:
    """Attribute name -> (type, format) of a pyroute2 class: ``nla_map`` entries are
    ``(name, format)`` at their type's position, or ``(type, name, format)``."""
    out = {}
    for position, entry in enumerate(cls.nla_map):
        if isinstance(entry[0], int):
            out[entry[1]] = (entry[0], entry[2])
        else:
            out[entry[0]] = (position, entry[1])
    return out


def trimmed(message: bytes, header_size: int, wanted: Wanted) -> bytes:
    """``message`` (the netlink header, a fixed part of ``header_size`` bytes, then attributes)
    with only the ``wanted`` attributes, in their order, and its length set to match."""
    body = message[:header_size] + _kept(memoryview(message)[header_size:], wanted)
    return _NLMSG_LENGTH.pack(len(body)) + body[_NLMSG_LENGTH.size :]


def _kept(data: memoryview, wanted: Wanted) -> bytes:
    out = []
    offset = 0
    while offset + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, offset)
        if length < _NLA.size or offset + length > len(data):
            break  # malformed: pyroute2 gets what was well-formed before it
        if (kind & _NLA_TYPE) in wanted:
            inner = wanted[kind & _NLA_TYPE]
            if inner is None:
                out.append(bytes(data[offset : offset + length]) + bytes(-length % 4))
            else:
                value = _kept(data[offset + _NLA.size : offset + length], dict.fromkeys(inner))
                out.append(_NLA.pack(_NLA.size + len(value), kind) + value)
        offset += (length + 3) & ~3
    return b"".join(out)
