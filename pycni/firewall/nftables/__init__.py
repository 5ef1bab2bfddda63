"""The nftables driver (the default): one engine (``engine``: libnftables in-process, read,
apply, retry), one layout module per feature, each made on first use so a plugin imports only
the layouts it acts with."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pycni.firewall.driver import ForwardFacet, MacspoofFacet, MasqueradeFacet, PortmapFacet

if TYPE_CHECKING:
    from pycni.firewall.nftables.engine import NftRunner

__all__ = ["NftablesDriver"]


class NftablesDriver:
    """``Firewall`` on nftables; every facet acts in the calling thread's network namespace.
    ``runner`` (tests) replaces libnftables for every facet."""

    name = "nftables"

    def __init__(self, runner: NftRunner | None = None) -> None:
        self._runner = runner

    def status(self) -> str | None:
        from pycni.firewall.nftables.engine import NftTable

        return NftTable(runner=self._runner).status()

    @functools.cached_property
    def masquerade(self) -> MasqueradeFacet:
        from pycni.firewall.nftables.masquerade import NftMasquerade

        return NftMasquerade(self._runner)

    @functools.cached_property
    def forward(self) -> ForwardFacet:
        from pycni.firewall.nftables.forward import NftForward

        return NftForward(self._runner)

    @functools.cached_property
    def portmap(self) -> PortmapFacet:
        from pycni.firewall.nftables.portmap import NftPortmap

        return NftPortmap(self._runner)

    @functools.cached_property
    def macspoof(self) -> MacspoofFacet:
        from pycni.firewall.nftables.macspoof import NftMacspoof

        return NftMacspoof(self._runner)
