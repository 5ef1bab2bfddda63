"""The firewall layer: plugins hand plain dataclasses to one driver chosen once.

``select(name)`` gives a ``Firewall`` (nftables by default, iptables where nftables is absent,
or none) with a facet per feature: ``masquerade``, ``forward``, ``portmap``, ``macspoof``.
Plugins import only this package face: the drivers (``driver``), the models (``model``) and
the host-port reservations (``hostports``). The driver, each model and the registry is
imported when first named, a driver's subpackage, its engine and each feature's layout when
first used: a plugin pays for what it acts with only (one that never masquerades loads neither
libnftables nor iptables). Drivers never call netlink and plugins never build rule text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pycni.firewall.driver import (
        BACKEND_NAMES,
        Firewall,
        ForwardFacet,
        MacspoofFacet,
        MasqueradeFacet,
        PortmapFacet,
        detect,
        select,
        validate_backend_name,
    )
    from pycni.firewall.hostports import (
        HOSTPORTS_ROOT,
        HostPortConflict,
        Record,
        Registry,
        netns_identity,
        overlaps,
    )
    from pycni.firewall.model import AttachmentKey, network_tag
    from pycni.firewall.model.forward import INGRESS_POLICIES, Forward
    from pycni.firewall.model.macspoof import MacSpoofCheck
    from pycni.firewall.model.masquerade import Masquerade
    from pycni.firewall.model.portmap import PROTOCOLS, PortMap, PortMapping

__all__ = [
    "BACKEND_NAMES",
    "HOSTPORTS_ROOT",
    "INGRESS_POLICIES",
    "PROTOCOLS",
    "AttachmentKey",
    "Firewall",
    "Forward",
    "ForwardFacet",
    "HostPortConflict",
    "MacSpoofCheck",
    "MacspoofFacet",
    "Masquerade",
    "MasqueradeFacet",
    "PortMap",
    "PortMapping",
    "PortmapFacet",
    "Record",
    "Registry",
    "detect",
    "netns_identity",
    "network_tag",
    "overlaps",
    "select",
    "validate_backend_name",
]

# Each module with the names it hands on here, imported when one is first named: a plugin pays
# for the driver, the models and the host-port registry it uses only (a frozen dataclass costs
# ~0.5 ms; the driver module and its logging ~5 ms, which pycni-dns, naming models only, saved).
_LAZY: Final = {name: module for module, names in (
    ("driver", ("BACKEND_NAMES", "Firewall", "ForwardFacet", "MacspoofFacet", "MasqueradeFacet",
                "PortmapFacet", "detect", "select", "validate_backend_name")),
    ("model", ("AttachmentKey", "network_tag")),
    ("model.forward", ("INGRESS_POLICIES", "Forward")),
    ("model.macspoof", ("MacSpoofCheck",)),
    ("model.masquerade", ("Masquerade",)),
    ("model.portmap", ("PROTOCOLS", "PortMap", "PortMapping")),
    ("hostports", ("HOSTPORTS_ROOT", "HostPortConflict", "Record", "Registry",
                   "netns_identity", "overlaps")),
) for name in names}

if not TYPE_CHECKING:  # mypy sees the imports above, so a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        """A driver, model or host-port registry name, imported on first use (PEP 562)."""
        if name not in _LAZY:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        # __import__, not importlib.import_module: -X importtime sees only the former
        return getattr(__import__(f"{__name__}.{_LAZY[name]}", fromlist=[name]), name)
