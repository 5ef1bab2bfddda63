"""Spec versions: which we speak, how they compare, and the gates per verb."""

from __future__ import annotations

from typing import Final

from pycni.cni import version_answer
from pycni.cni.errors import CNIError, ErrorCode

__all__ = [
    "CURRENT",
    "SUPPORTED",
    "at_least",
    "negotiate",
    "parse",
    "require_supported",
]

# Results can be rendered in all of these (0.1.0/0.2.0, ip4/ip6 results, are not offered);
# defined where the launcher's VERSION answer reads them without imports.
SUPPORTED: Final = version_answer.SUPPORTED
CURRENT: Final = version_answer.CURRENT


def parse(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` -> ``(1, 0, 0)``; anything else is a decoding failure (code 1)."""
    parts = version.split(".") if isinstance(version, str) else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION, "invalid cniVersion", f"{version!r} is not x.y.z"
        )
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def require_supported(version: str, supported: tuple[str, ...] = SUPPORTED) -> str:
    if version not in supported:
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
            "incompatible CNI versions",
            f"config is {version!r}, plugin supports {list(supported)}",
        )
    return version


def negotiate(cni_version: str, cni_versions: tuple[str, ...] = ()) -> str:
    """The highest version we support out of ``cniVersion`` and ``cniVersions`` (spec §1).

    Like libcni, entries newer than ours are ignored rather than refused.
    """
    candidates = [v for v in (cni_version, *cni_versions) if v]
    for v in candidates:
        parse(v)
    usable = [v for v in candidates if v in SUPPORTED]
    if not usable:
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
            "no supported cniVersion in the network configuration",
            f"offered {candidates}, supported {list(SUPPORTED)}",
        )
    return max(usable, key=parse)
