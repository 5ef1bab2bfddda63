"""MacSpoofCheck: what `bridge` hands over with ``macspoofchk``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pycni.firewall.model import AttachmentKey

__all__ = ['MacSpoofCheck']


@dataclass(frozen=True)
class MacSpoofCheck:
    """`bridge`'s ``macspoofchk``: frames entering the bridge from ``port`` (the host veth) must
    carry ``mac`` (the container's) as their source."""

    key: AttachmentKey
    port: str
    mac: str

    @property
    def allowed_key(self) -> dict[str, Any]:
        return {"concat": [self.port, self.mac.lower()]}
