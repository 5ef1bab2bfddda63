"""The iptables driver, for hosts where nftables is not usable: one engine (``engine``:
iptables-save/-restore under a file lock), one layout module per feature, each imported on
first use. macspoofchk stays nftables' (iptables cannot match a bridge port's source MAC in
pycni); with iptables alone it is refused."""

from __future__ import annotations

import functools

from pycni.firewall.driver import (
    ForwardFacet,
    MacspoofFacet,
    MasqueradeFacet,
    PortmapFacet,
    nftables_macspoof,
)

__all__ = ["IptablesDriver"]


class IptablesDriver:
    """``Firewall`` on iptables-restore; every facet acts in the calling thread's network
    namespace."""

    name = "iptables"

    def status(self) -> str | None:
        from pycni.firewall.iptables.engine import FIREWALL_LOCK, Xtables

        return Xtables("nat", lock_path=FIREWALL_LOCK).status()

    @functools.cached_property
    def masquerade(self) -> MasqueradeFacet:
        from pycni.firewall.iptables.masquerade import IptMasquerade

        return IptMasquerade()

    @functools.cached_property
    def forward(self) -> ForwardFacet:
        from pycni.firewall.iptables.forward import IptForward

        return IptForward()

    @functools.cached_property
    def portmap(self) -> PortmapFacet:
        from pycni.firewall.iptables.portmap import IptPortmap

        return IptPortmap()

    @functools.cached_property
    def macspoof(self) -> MacspoofFacet:
        return nftables_macspoof()
