"""The firewall driver: what a plugin gets from ``select()``, and how the driver is chosen.

A plugin calls ``select(name)`` once and uses the one ``Firewall`` it gets, a facet per
feature (``masquerade``, ``forward``, ``portmap``, ``macspoof``): exactly one technology, so
pycni never writes rules to both nftables and iptables (field failure #9: rules split across
the two are invisible to whoever looks at the other), and never port mappings to another one
than masquerade. Auto-detection (nftables if it works here, else iptables, else none) runs
once per process, on the first use of a facet that depends on it.

A new backend is one subpackage (a driver class with these facets, an engine and a layout
module per feature) and one line in ``_DRIVERS``. A new feature (a DNS redirect, say) is one
facet Protocol here, a property on each driver and a layout module per subpackage.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Final, Protocol

from pycni.cni.errors import CNIError, ErrorCode

if TYPE_CHECKING:  # only named in annotations: a plugin imports the models it uses itself
    from pycni.firewall.model import AttachmentKey
    from pycni.firewall.model.forward import Forward
    from pycni.firewall.model.macspoof import MacSpoofCheck
    from pycni.firewall.model.masquerade import Masquerade
    from pycni.firewall.model.portmap import PortMap

__all__ = [
    "BACKEND_NAMES",
    "Firewall",
    "ForwardFacet",
    "MacspoofFacet",
    "MasqueradeFacet",
    "PortmapFacet",
    "detect",
    "first_usable",
    "make",
    "nftables_macspoof",
    "select",
    "validate_backend_name",
]

# name -> (module, driver class): imported only when chosen (a plugin's start-up pays for
# neither engine until it acts).
_DRIVERS: Final = {
    "nftables": ("pycni.firewall.nftables", "NftablesDriver"),
    "iptables": ("pycni.firewall.iptables", "IptablesDriver"),
    "none": ("pycni.firewall.none", "NoneDriver"),
}
BACKEND_NAMES: Final = tuple(_DRIVERS)

log = logging.getLogger(__name__)


class MasqueradeFacet(Protocol):
    """Masquerade of container addresses. Calls are idempotent and each is one transaction."""

    def setup(self, m: Masquerade, /) -> None:
        """Masquerade ``m.sources``; a repeated call (ADD retried after a crash) adds nothing."""

    def teardown(self, key: AttachmentKey, /) -> None:
        """Remove everything made for ``key``, found by key; already gone is success."""

    def check(self, m: Masquerade, /) -> list[str]:
        """Problems with the state ``setup(m)`` makes; empty when it is intact."""
        ...

    def gc(self, network: str, valid: Collection[tuple[str, str]], /) -> list[str]:
        """Remove the state of every attachment of ``network`` whose ``(container id, ifname)``
        is not in ``valid``; return the errors met (continuing past them)."""
        ...

    def status(self) -> str | None:
        """None if usable here, else the reason it is not."""
        ...

    def check_layout(self) -> list[str]:
        """Problems with the shared state every attachment's masquerade depends on (table,
        base chain, hook jump): what a flushed ruleset loses. Empty when it is in place."""
        ...


class ForwardFacet(Protocol):
    """Forward acceptance and isolation (``model.Forward`` says what is decided)."""

    def setup(self, f: Forward, /) -> None:
        """Accept ``f``'s traffic (and punch the holes it needs); a repeat adds nothing."""

    def teardown(self, key: AttachmentKey, /) -> None:
        """Remove the attachment's state, found by key; already gone is success."""

    def check(self, f: Forward, /) -> list[str]:
        """Problems with the state ``setup(f)`` makes; empty when intact."""
        ...

    def gc(self, network: str, valid: Collection[tuple[str, str]], /) -> list[str]:
        """Remove the state of attachments of ``network`` not in ``valid``; the errors met."""
        ...

    def status(self) -> str | None:
        """None when existing attachments are served, else why (forward DROP without our
        hole, or the driver unusable)."""
        ...


class PortmapFacet(Protocol):
    """Published ports (the host-port reservations are ``hostports``', whatever the driver).
    Each call is idempotent and one transaction (per IP version for iptables)."""

    def setup(self, pm: PortMap, /) -> None:
        """Publish ``pm``; a repeated call (a retried ADD) adds nothing."""

    def teardown(self, key: AttachmentKey, hint: PortMap | None = None, /) -> None:
        """Remove everything of ``key``. ``hint`` (what was published, if known) lets a
        driver delete exactly that without reading; it falls back to finding by key."""

    def check(self, pm: PortMap, /) -> list[str]:
        """Problems with the state ``setup(pm)`` makes; empty when intact."""
        ...

    def gc(self, network: str, valid: Collection[tuple[str, str]], /) -> list[str]:
        """Remove every attachment of ``network`` whose (container id, ifname) is not valid;
        the errors met, continuing past them."""
        ...

    def status(self) -> str | None:
        """None if usable here, else why not."""
        ...


class MacspoofFacet(Protocol):
    """`bridge`'s ``macspoofchk``: frames from a port must carry the container's MAC."""

    def require_available(self) -> None:
        """Code 2 (``UNSUPPORTED_FIELD``) if it cannot be done here: before any change."""

    def setup(self, m: MacSpoofCheck, /) -> None: ...

    def teardown(self, key: AttachmentKey, /) -> None: ...

    def check(self, m: MacSpoofCheck, /) -> list[str]: ...

    def gc(self, network: str, valid: Collection[tuple[str, str]], /) -> list[str]: ...


class Firewall(Protocol):
    """One technology's driver: its name (recorded with what it made), whether it is usable
    here, and a facet per feature, each made on first use."""

    @property
    def name(self) -> str: ...

    def status(self) -> str | None:
        """None if the driver is usable here, else the reason it is not."""
        ...

    @property
    def masquerade(self) -> MasqueradeFacet: ...

    @property
    def forward(self) -> ForwardFacet: ...

    @property
    def portmap(self) -> PortmapFacet: ...

    @property
    def macspoof(self) -> MacspoofFacet: ...


def validate_backend_name(name: str | None, *, field: str = "ipMasqBackend") -> str | None:
    """Config validation, before any kernel call: None (auto) or one of ``BACKEND_NAMES``."""
    if name is None or name in BACKEND_NAMES:
        return name
    raise CNIError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        f"invalid {field} {name!r}",
        f"must be one of {', '.join(BACKEND_NAMES)} (or absent to auto-detect)",
    )


def make(name: str) -> Firewall:
    """The driver of that name; its subpackage is imported only now."""
    validate_backend_name(name)
    module, cls = _DRIVERS[name]
    driver: Firewall = getattr(__import__(module, fromlist=[cls]), cls)()
    return driver


def nftables_macspoof() -> MacspoofFacet:
    """Every driver's macspoof facet: only nftables' bridge family matches a bridge port's
    source MAC in pycni (``ipMasqBackend`` names how masquerade is done, not this)."""
    from pycni.firewall.nftables.macspoof import NftMacspoof

    return NftMacspoof()


def first_usable(candidates: Iterable[Firewall]) -> Firewall | None:
    """The first candidate whose ``status()`` says it is usable; the others' reasons are logged."""
    for driver in candidates:
        reason = driver.status()
        if reason is None:
            return driver
        log.warning("firewall backend %s not usable: %s", driver.name, reason)
    return None


@functools.cache
def _probe() -> Firewall:
    found = first_usable(make(n) for n in ("nftables", "iptables"))
    if found is None:
        log.warning("no usable firewall backend: masquerade and port mapping are disabled")
        return make("none")
    return found


class _Detected:
    """The auto-detected driver, probed on the first use of whatever depends on the
    technology; ``macspoof`` does not (it is nftables' on every driver), so a bridge that
    checks MACs but does not masquerade never probes."""

    @property
    def name(self) -> str:
        return _probe().name

    def status(self) -> str | None:
        return _probe().status()

    @property
    def masquerade(self) -> MasqueradeFacet:
        return _probe().masquerade

    @property
    def forward(self) -> ForwardFacet:
        return _probe().forward

    @property
    def portmap(self) -> PortmapFacet:
        return _probe().portmap

    @functools.cached_property
    def macspoof(self) -> MacspoofFacet:
        return nftables_macspoof()


_DETECTED: Final = _Detected()


def detect() -> Firewall:
    """nftables if it works here, else iptables, else none; decided once per process."""
    return _DETECTED


def select(name: str | None = None) -> Firewall:
    """The driver named in the config, or the auto-detected one when ``name`` is None."""
    chosen = validate_backend_name(name)
    return detect() if chosen is None else make(chosen)
