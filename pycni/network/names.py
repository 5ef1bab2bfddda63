"""Names a user gives a network, its bridge, labels and options: all validated before anything
is written. Every failure is a ``CNIError`` with code 7 (invalid network config) whose message
names what is wrong.

- A network name follows the CNI rule (``^[a-zA-Z0-9][a-zA-Z0-9_.-]*$``, so no ``/`` and no
  ``..``) and is at most ``NAME_MAX`` characters: it becomes part of file names (the conflist,
  ``<network>-<container id>-<ifname>`` in the results cache) limited to 255 bytes.
- The built-in networks and Docker's mode names cannot be created (or removed).
- A derived bridge name is ``pycni-`` and 9 hex characters of the name's hash (15, the
  kernel's limit): the same name always gives the same bridge; a clash takes the next salt.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.names import validate_ifname

__all__ = [
    "BUILTIN_NETWORKS",
    "NAME_MAX",
    "RESERVED_NAMES",
    "derive_bridge_name",
    "invalid",
    "parse_pairs",
    "validate_bridge_name",
    "validate_network_name",
]

BUILTIN_NETWORKS: Final = ("pycni", "none", "host", "container")
# `--net=bridge` means the `pycni` network; `default` is what podman calls its own.
RESERVED_NAMES: Final = (*BUILTIN_NETWORKS, "bridge", "default")
NAME_MAX: Final = 128
_NAME_RE: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
_IFNAMSIZ: Final = 15
_BRIDGE_PREFIX: Final = "pycni-"
_BRIDGE_TRIES: Final = 64


def invalid(msg: str, details: str = "") -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, msg, details)


def validate_network_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise invalid(
            f"invalid network name {name!r}",
            f"it must match {_NAME_RE.pattern} (letters, digits, '_', '.', '-'; no '/')",
        )
    if len(name) > NAME_MAX:
        raise invalid(f"invalid network name {name[:20]}...", f"longer than {NAME_MAX} characters")
    if name in RESERVED_NAMES:
        raise invalid(f"network name {name!r} is reserved",
                      f"built-in or mode names: {', '.join(RESERVED_NAMES)}")
    return name


def validate_bridge_name(name: str) -> str:
    """The kernel's interface name rules (as for ``CNI_IFNAME``)."""
    try:
        validate_ifname(name)
    except CNIError as err:
        raise invalid(f"invalid bridge name {name!r}", err.details) from err
    return name


def _candidate(network: str, salt: int) -> str:
    seed = network if salt == 0 else f"{network}\0{salt}"
    from pycni.digest import sha256_hex

    digest = sha256_hex(seed.encode())
    return _BRIDGE_PREFIX + digest[: _IFNAMSIZ - len(_BRIDGE_PREFIX)]


def derive_bridge_name(network: str, taken: Collection[str]) -> str:
    """The network's bridge: stable for a name, never one in ``taken`` (other networks'
    bridges and the host's links)."""
    for salt in range(_BRIDGE_TRIES):
        name = _candidate(network, salt)
        if name not in taken:
            return name
    raise invalid(f"no free bridge name for network {network!r}", "give one with --bridge")


def parse_pairs(items: Iterable[str], *, what: str) -> dict[str, str]:
    """``K=V`` items (labels, options) in order; a repeated key keeps its last value, as
    Docker does. A key must be non-empty; the value may be empty or contain ``=``."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or key != key.strip():
            raise invalid(f"invalid {what} {item!r}", "expected KEY=VALUE with a non-empty KEY")
        if "\0" in item:
            raise invalid(f"invalid {what} {item!r}", "NUL is not allowed")
        found[key] = value
    return found
