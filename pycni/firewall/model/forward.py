"""Forward: what the `firewall` plugin hands over (the decision it asks for is ``Forward``'s)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.model import AttachmentKey, digest
from pycni.firewall.model.masquerade import Masquerade

__all__ = ['FORWARD_MARK', 'HOLE_COMMENT', 'INGRESS_POLICIES', 'Forward']


# Bit 20 of the packet mark. Clear of kube-proxy (0x4000/0x8000), CNI portmap and netavark
# (0x2000), Cilium (0x0f00) and Weave (0x20000).
FORWARD_MARK: Final = 0x00100000
HOLE_COMMENT: Final = "pycni-forward"
INGRESS_POLICIES: Final = ("open", "same-bridge")


@dataclass(frozen=True)
class Forward:
    """Accept forwarding for ``sources`` (the container's IPs, no prefix) within the network's
    ``network_subnets``, with the network's ``ingress_policy`` towards other pycni networks;
    an ``internal`` network forwards nothing in or out.

    The `firewall` plugin accepts forwarding even where the host's forward policy is DROP
    (Docker sets it: field failure #10) and isolates pycni networks from one another. Per
    network, a chain reached from a lookup of the packet's source address, then of its
    destination address, decides (the same on every driver):

    1. source and destination in the network's subnets: **accept** (routed, or bridged through
       br_netfilter);
    2. destination in the network, connection already established (a reply): **accept**;
    3. destination in the network, connection DNATed (a port published by ``portmap``):
       **accept**;
    4. destination in the network and the packet already marked as coming from a pycni
       container of another network: **drop** for ``same-bridge`` (the default), **accept**
       for ``open``;
    5. source in the network: set ``FORWARD_MARK`` and return, so that the destination's
       network (if any) decides next; a packet still marked after both lookups is accepted.

    Anything else (a new connection from outside to an unpublished port, say) is left to the
    host. An **internal** network (``network create --internal``) keeps rule 1 and replaces the
    others by a **drop** of whatever comes from or goes to the network: nothing outside reaches
    in (published ports included). Traffic to the host itself (the gateway address) takes the
    input hook, not this one, and stays. A driver whose accept does not end every forward base
    chain (nftables) also punches ``HOLE_COMMENT`` rules into other programs' dropping chains.
    """

    key: AttachmentKey
    network_subnets: tuple[str, ...]
    sources: tuple[str, ...]
    ingress_policy: str = "same-bridge"
    internal: bool = False

    def __post_init__(self) -> None:
        if self.ingress_policy not in INGRESS_POLICIES:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"invalid ingressPolicy {self.ingress_policy!r}",
                f"must be one of {', '.join(INGRESS_POLICIES)}",
            )
        self._addressing()  # the same validation and normalisation as masquerade

    def _addressing(self) -> Masquerade:
        return Masquerade(key=self.key, network_subnets=self.network_subnets, sources=self.sources)

    def sources_of(self, version: int) -> tuple[str, ...]:
        return self._addressing().sources_of(version)

    def subnets_of(self, version: int) -> tuple[str, ...]:
        return self._addressing().subnets_of(version)

    @property
    def isolated(self) -> bool:
        return self.ingress_policy != "open"

    @property
    def chain_tag(self) -> str:
        subnets = self.subnets_of(4) + self.subnets_of(6)
        # "internal" only when set, so every other network keeps the chain name it had.
        internal = ("internal",) if self.internal else ()
        return digest("fwd-v1", self.key.network, self.ingress_policy, *internal, *subnets)
