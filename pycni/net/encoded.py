"""rtnetlink requests as pyroute2 encoded them, kept for the same request again.

pyroute2 makes a request's bytes from its arguments alone: its argument processing and
request filters, then its message classes' encoding, ~0.1 ms of Python a request here (a
warm bridge ADD spent ~1 ms of its ~4 ms in them). Many requests recur unchanged from one
call to the next in a process that serves several (the fork server's reused workers, the
runtime): the same bridge looked up, the same gateway address added to it, a new container's
``eth0`` (index 2) set up and given the same default route. Such a request is encoded once;
each later one is a copy with its own sequence number and port written in.

Only requests whose arguments are plain values (``int``, ``str``, ``bool``, ``None``) are
kept, none naming a namespace: pyroute2 opens a namespace given by name while it encodes
and writes that descriptor's number into the bytes, which would mean another file later.
Dumps are never kept (their replies are matched against a filter built with the request).
"""

from __future__ import annotations

import struct
from collections.abc import Hashable, Mapping
from typing import Any, Final

__all__ = ["MAX_KEPT", "keep", "key", "lookup"]

MAX_KEPT: Final = 256  # requests kept at most; then all of them are forgotten at once
_PLAIN: Final = (int, str, bool, type(None))
_NAMESPACE_KEYS: Final = frozenset({"net_ns_fd", "net_ns_pid", "netns", "target_netnsid"})
_SEQUENCE_AND_PORT: Final = struct.Struct("=II")  # nlmsghdr: length, type, flags, seq, pid
_SEQUENCE_OFFSET: Final = 8

_KEPT: dict[Hashable, bytes] = {}


def key(mode: str, request: tuple[int, int], kwarg: Mapping[str, Any],
        parameters: Mapping[str, Any] | None) -> Hashable | None:
    """What the bytes of this request depend on (``request``: its message type and flags);
    None for one not to keep. A value's type is part of it: ``True`` and ``1`` are equal keys
    but not the same argument to pyroute2."""
    arguments = _plain(kwarg)
    options = _plain(parameters or {})
    if arguments is None or options is None:
        return None
    return mode, request, arguments, options


def _plain(values: Mapping[str, Any]) -> tuple[tuple[str, str, Any], ...] | None:
    items = []
    for name, value in values.items():
        if not isinstance(value, _PLAIN) or name in _NAMESPACE_KEYS:
            return None
        items.append((name, type(value).__name__, value))
    return tuple(sorted(items))


def lookup(request_key: Hashable | None, sequence: int, port: int) -> bytes | None:
    """The kept request's bytes with ``sequence`` and ``port`` in its header; None if none."""
    if request_key is None:
        return None
    data = _KEPT.get(request_key)
    if data is None:
        return None
    copy = bytearray(data)
    _SEQUENCE_AND_PORT.pack_into(copy, _SEQUENCE_OFFSET, sequence, port)
    return bytes(copy)


def keep(request_key: Hashable | None, data: bytes) -> None:
    if request_key is None:
        return
    if len(_KEPT) >= MAX_KEPT:
        _KEPT.clear()
    _KEPT[request_key] = data
