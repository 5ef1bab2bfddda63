"""The firewall layer: plugins hand plain dataclasses to one driver chosen once.

``select(name)`` gives a ``Firewall`` (nftables by default, iptables where nftables is absent,
or none) with a facet per feature: ``masquerade``, ``forward``, ``portmap``, ``macspoof``.
Plugins import only this package face: the drivers (``driver``), the models (``model``) and
the host-port reservations (``hostports``, loaded when first named: only `portmap` uses them).
A driver's subpackage, its engine and each feature's layout are imported only when used, so a
plugin that never masquerades pays for neither libnftables nor iptables. Drivers never call
netlink and plugins never build rule text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

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
from pycni.firewall.model import (
    INGRESS_POLICIES,
    PROTOCOLS,
    AttachmentKey,
    Forward,
    MacSpoofCheck,
    Masquerade,
    PortMap,
    PortMapping,
    network_tag,
)

# The host-port registry's names (only `portmap` uses them): imported when first named.
_HOSTPORTS: Final = {
    "HOSTPORTS_ROOT": "DEFAULT_ROOT",
    "HostPortConflict": "HostPortConflict",
    "Record": "Record",
    "Registry": "Registry",
    "netns_identity": "netns_identity",
    "overlaps": "overlaps",
}
if TYPE_CHECKING:
    from pycni.firewall.hostports import (
        DEFAULT_ROOT as HOSTPORTS_ROOT,
    )
    from pycni.firewall.hostports import (
        HostPortConflict,
        Record,
        Registry,
        netns_identity,
        overlaps,
    )

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

if not TYPE_CHECKING:  # mypy sees the imports above, so a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        """The host-port registry's names, imported on first use (PEP 562)."""
        if name not in _HOSTPORTS:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from pycni.firewall import hostports

        return getattr(hostports, _HOSTPORTS[name])
