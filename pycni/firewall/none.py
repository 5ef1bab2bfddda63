"""The ``none`` backend: no firewall changes at all (masquerade is left to the host's admin)."""

from __future__ import annotations

from collections.abc import Collection

from pycni.firewall.model import AttachmentKey, Masquerade

__all__ = ["NoneBackend"]


class NoneBackend:
    """``FirewallBackend`` that does nothing and always reports itself usable and intact."""

    name = "none"

    def setup_masquerade(self, m: Masquerade) -> None:
        del m

    def teardown_masquerade(self, key: AttachmentKey) -> None:
        del key

    def check_masquerade(self, m: Masquerade) -> list[str]:
        del m
        return []

    def gc_masquerade(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        del network, valid
        return []

    def status(self) -> str | None:
        return None

    def check_layout(self) -> list[str]:
        return []
