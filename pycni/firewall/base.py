"""The one firewall Protocol and the choice of backend.

A plugin calls ``select(name)`` once and uses what it gets: exactly one backend, so pycni
never writes rules to both nftables and iptables (field failure #9: rules split across the two
are invisible to whoever looks at the other). Auto-detection runs once per process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Iterable
from typing import Final, Protocol

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.model import AttachmentKey, Masquerade

__all__ = [
    "BACKEND_NAMES",
    "FirewallBackend",
    "detect",
    "first_usable",
    "make_backend",
    "select",
    "validate_backend_name",
]

BACKEND_NAMES: Final = ("nftables", "iptables", "none")

log = logging.getLogger(__name__)


class FirewallBackend(Protocol):
    """What every backend offers. Calls are idempotent and each is one transaction."""

    @property
    def name(self) -> str: ...

    def setup_masquerade(self, m: Masquerade) -> None:
        """Masquerade ``m.sources``; a repeated call (ADD retried after a crash) adds nothing."""

    def teardown_masquerade(self, key: AttachmentKey) -> None:
        """Remove everything made for ``key``, found by key; already gone is success."""

    def check_masquerade(self, m: Masquerade) -> list[str]:
        """Problems with the state ``setup_masquerade(m)`` makes; empty when it is intact."""
        ...

    def gc_masquerade(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        """Remove the state of every attachment of ``network`` whose ``(container id, ifname)``
        is not in ``valid``; return the errors met (continuing past them)."""
        ...

    def status(self) -> str | None:
        """None if the backend is usable here, else the reason it is not."""
        ...

    def check_layout(self) -> list[str]:
        """Problems with the shared state every attachment's masquerade depends on (table,
        base chain, hook jump): what a flushed ruleset loses. Empty when it is in place."""
        ...


def validate_backend_name(name: str | None, *, field: str = "ipMasqBackend") -> str | None:
    """Config validation, before any kernel call: None (auto) or one of ``BACKEND_NAMES``."""
    if name is None or name in BACKEND_NAMES:
        return name
    raise CNIError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        f"invalid {field} {name!r}",
        f"must be one of {', '.join(BACKEND_NAMES)} (or absent to auto-detect)",
    )


def make_backend(name: str) -> FirewallBackend:
    """A backend by name; the modules are imported only when chosen (import cost)."""
    validate_backend_name(name)
    if name == "nftables":
        from pycni.firewall.nftables import NftablesBackend

        return NftablesBackend()
    if name == "iptables":
        from pycni.firewall.iptables import IptablesBackend

        return IptablesBackend()
    from pycni.firewall.none import NoneBackend

    return NoneBackend()


def first_usable(candidates: Iterable[FirewallBackend]) -> FirewallBackend | None:
    """The first candidate whose ``status()`` says it is usable; the others' reasons are logged."""
    for backend in candidates:
        reason = backend.status()
        if reason is None:
            return backend
        log.warning("firewall backend %s not usable: %s", backend.name, reason)
    return None


@functools.cache
def detect() -> FirewallBackend:
    """nftables if it works here, else iptables, else none; decided once per process."""
    found = first_usable(make_backend(n) for n in ("nftables", "iptables"))
    if found is None:
        log.warning("no usable firewall backend: masquerade and port mapping are disabled")
        return make_backend("none")
    return found


def select(name: str | None = None) -> FirewallBackend:
    """The backend named in the config, or the auto-detected one when ``name`` is None."""
    chosen = validate_backend_name(name)
    return detect() if chosen is None else make_backend(chosen)
