"""Which strings may be container names in DNS, and the one spelling the resolver keys them by.

Names are compared case-insensitively (RFC 4343), so they are stored lowercased, without a
final dot. Labels are 1-63 characters of letters, digits, ``-`` and ``_`` (Docker and podman
allow ``_`` in container names), a name at most 253 characters.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["RESOLVER_ADDRESS", "RESOLVER_PORT", "name_problem", "normalize"]

# Docker's choice: an address on the container's own lo (127.0.0.0/8 is local there), so the
# container needs no route to anything and the host gives up no address or port.
RESOLVER_ADDRESS: Final = "127.0.0.11"
RESOLVER_PORT: Final = 53

_LABEL: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_MAX_NAME: Final = 253


def normalize(name: str) -> str:
    """The key of ``name``: lowercased, one final dot dropped."""
    return name.removesuffix(".").lower()


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a DNS name of a container, or None if it can."""
    bare = name.removesuffix(".")
    if not bare:
        return "is empty"
    if len(bare) > _MAX_NAME:
        return f"is longer than {_MAX_NAME} characters"
    for label in bare.split("."):
        if not _LABEL.fullmatch(label):
            return (f"has a label {label!r} that is not 1-63 letters, digits, '-' or '_' "
                    "(not starting or ending with '-')")
    return None
