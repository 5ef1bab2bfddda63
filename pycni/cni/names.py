"""The protocol's name rules: container ids, interface names, network names (spec §2).

Kept apart from the skeleton so that what reads conflists or cache entries (``conf``, the
network manager) checks names without importing the skeleton and every result type.
"""

from __future__ import annotations

import os
import re
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode

__all__ = ["validate_container_id", "validate_ifname", "validate_network_name"]

_CONTAINER_ID_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_MAX_NAME_BYTES: Final = 255  # a network name becomes a path component
_MAX_IFNAME: Final = 15  # IFNAMSIZ - 1


def _byte_len(value: str) -> int:
    """Length in bytes as the kernel sees it (env strings carry undecodable bytes as surrogates)."""
    try:
        return len(os.fsencode(value))
    except UnicodeEncodeError:  # a lone surrogate from JSON: count it, never crash on it
        return len(value.encode(errors="surrogatepass"))


def validate_container_id(value: str) -> None:
    if not value:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "CNI_CONTAINERID is empty")
    # fullmatch, not match: "$" also matches before a trailing newline ("abc\n" would pass).
    if not _CONTAINER_ID_RE.fullmatch(value) or _byte_len(value) > _MAX_NAME_BYTES:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT,
            "invalid CNI_CONTAINERID",
            f"{value!r} must match {_CONTAINER_ID_RE.pattern} and be at most 255 bytes",
        )


def validate_ifname(value: str) -> None:
    problem = ""
    if not value:
        problem = "is empty"
    elif _byte_len(value) > _MAX_IFNAME:  # IFNAMSIZ counts bytes, not characters
        problem = f"is longer than {_MAX_IFNAME} characters"
    elif value in (".", ".."):
        problem = "may not be . or .."
    elif any(c in value for c in "/:%\0") or any(c.isspace() for c in value):
        # '%': the kernel takes "eth%d" as a template and names the link eth0, eth1...
        problem = "may not contain '/', ':', '%', NUL or whitespace"
    if problem:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "invalid CNI_IFNAME", f"{value!r} {problem}")


def validate_network_name(value: str) -> None:
    """The network name becomes a directory and file name: keep it one safe path component."""
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\0" in value
        or _byte_len(value) > _MAX_NAME_BYTES
        or not _CONTAINER_ID_RE.fullmatch(value)  # not match: "$" passes a trailing newline
    ):
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "invalid network name",
            f"{value!r} must match {_CONTAINER_ID_RE.pattern} and be at most 255 bytes",
        )
