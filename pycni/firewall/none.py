"""The ``none`` driver: no firewall changes at all (masquerade, forwarding and published ports
are left to the host's admin; host ports are still reserved by `portmap`)."""

from __future__ import annotations

import functools
from collections.abc import Collection

from pycni.firewall.driver import MacspoofFacet, nftables_macspoof
from pycni.firewall.model import AttachmentKey

__all__ = ["NoneDriver", "Nothing"]


class Nothing:
    """The masquerade, forward and portmap facet that does nothing and is always usable and
    intact."""

    def setup(self, spec: object, /) -> None:
        del spec

    def teardown(self, key: AttachmentKey, hint: object = None, /) -> None:
        del key, hint

    def check(self, spec: object, /) -> list[str]:
        del spec
        return []

    def gc(self, network: str, valid: Collection[tuple[str, str]], /) -> list[str]:
        del network, valid
        return []

    def status(self) -> str | None:
        return None

    def check_layout(self) -> list[str]:
        return []


class NoneDriver:
    """``Firewall`` that changes nothing; ``macspoof`` is still nftables' (it is asked for
    explicitly with ``macspoofchk``)."""

    name = "none"
    masquerade = forward = portmap = Nothing()

    def status(self) -> str | None:
        return None

    @functools.cached_property
    def macspoof(self) -> MacspoofFacet:
        return nftables_macspoof()
