"""What the `firewall` plugin hands to a forward backend, and the choice of that backend.

The plugin accepts forwarding to and from the container addresses of a network even where the
host's forward policy is DROP (Docker sets it: field failure #10), and isolates pycni networks
from one another. The decision logic is the same for both backends, written once here:

Per network, a chain (``fwd-<net tag>-<chain tag>`` in nftables, ``PYCNI-F-...`` in iptables)
reached from a lookup of the packet's source address, then of its destination address:

1. source and destination in the network's subnets: **accept** (routed, or bridged through
   br_netfilter);
2. destination in the network, connection already established (a reply): **accept**;
3. destination in the network, connection DNATed (a port published by ``portmap``): **accept**;
4. destination in the network and the packet already marked as coming from a pycni container
   of another network: **drop** for ``ingressPolicy: same-bridge`` (the default),
   **accept** for ``open``;
5. source in the network: set the **forward mark** and return, so that the destination's
   network (if any) decides next; a packet still marked after both lookups is **accepted**.

Anything else (a new connection from outside to an unpublished port, say) is left to the host.

An **internal** network (``internal: true``, `network create --internal`) keeps rule 1 and
replaces the others by a **drop** of whatever comes from or goes to the network: its containers
reach each other and nothing outside it, not even a host that routes back to them, and nothing
outside reaches in (published ports included). Traffic to the host itself (the gateway address
on the bridge) takes the input hook, not this one, and stays.

An nftables accept ends only the base chain it is in: a later base chain on the same hook (the
``ip filter FORWARD`` chain of iptables-nft with Docker's policy DROP, or an nft ``policy drop``
forward chain) still drops. So every accepted packet carries ``FORWARD_MARK``, and each foreign
forward base chain whose policy is drop gets one static rule at its top, ``meta mark &
FORWARD_MARK == FORWARD_MARK accept`` (commented ``HOLE_COMMENT``; iptables-save shows it as
``-m mark --mark 0x100000/0x100000 -m comment --comment pycni-forward -j ACCEPT``). The mark is
cleared at the start of pycni's chain, so only pycni's own decision can set it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Protocol

from pycni.cni.errors import CNIError, ErrorCode
from pycni.digest import sha256_hex
from pycni.firewall.model import TAG_LEN, AttachmentKey, Masquerade

__all__ = [
    "FORWARD_MARK",
    "HOLE_COMMENT",
    "INGRESS_POLICIES",
    "Forward",
    "ForwardBackend",
    "select_forward",
]

# Bit 20 of the packet mark. Clear of kube-proxy (0x4000/0x8000), CNI portmap and netavark
# (0x2000), Cilium (0x0f00) and Weave (0x20000).
FORWARD_MARK: Final = 0x00100000
HOLE_COMMENT: Final = "pycni-forward"
INGRESS_POLICIES: Final = ("open", "same-bridge")
# Bumped if a network chain's contents ever change (old chains stay for old attachments).
_CHAIN_LAYOUT: Final = "fwd-v1"


def _digest(*parts: str) -> str:
    """The same tag scheme as ``model`` (compact JSON array, sha256, 16 hex chars)."""
    raw = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=True)
    return sha256_hex(raw.encode("ascii"))[:TAG_LEN]


@dataclass(frozen=True)
class Forward:
    """Accept forwarding for ``sources`` (the container's IPs, no prefix) within the network's
    ``network_subnets``, with the network's ``ingress_policy`` towards other pycni networks;
    an ``internal`` network forwards nothing in or out."""

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
        # Same validation and normalisation as masquerade (addresses, subnets, tuples).
        self._addressing()

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
        """Names the network's chain: its contents follow from the name alone."""
        subnets = self.subnets_of(4) + self.subnets_of(6)
        # "internal" only when set, so every other network keeps the chain name it had.
        internal = ("internal",) if self.internal else ()
        return _digest(_CHAIN_LAYOUT, self.key.network, self.ingress_policy, *internal, *subnets)


class ForwardBackend(Protocol):
    """Forward acceptance on one firewall backend. Calls are idempotent."""

    @property
    def name(self) -> str: ...

    def setup_forward(self, f: Forward) -> None:
        """Accept ``f``'s traffic (and punch the holes it needs); a repeat adds nothing."""

    def teardown_forward(self, key: AttachmentKey) -> None:
        """Remove the attachment's state, found by key; already gone is success."""

    def check_forward(self, f: Forward) -> list[str]:
        """Problems with the state ``setup_forward(f)`` makes; empty when intact."""
        ...

    def gc_forward(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        """Remove the state of attachments of ``network`` not in ``valid``; the errors met."""
        ...

    def status(self) -> str | None:
        """None when existing attachments are served, else why (forward DROP without our
        hole, or the backend unusable)."""
        ...


class _NoForward:
    name = "none"

    def setup_forward(self, f: Forward) -> None:
        del f

    def teardown_forward(self, key: AttachmentKey) -> None:
        del key

    def check_forward(self, f: Forward) -> list[str]:
        del f
        return []

    def gc_forward(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        del network, valid
        return []

    def status(self) -> str | None:
        return None


def select_forward(name: str | None) -> ForwardBackend:
    """The forward backend on the firewall backend ``select`` picks (the same detection as
    masquerade, done once per process): never rules in both nftables and iptables."""
    from pycni.firewall.base import select

    chosen = select(name).name
    if chosen == "nftables":
        from pycni.firewall.nft_forward import NftForwardBackend

        return NftForwardBackend()
    if chosen == "iptables":
        from pycni.firewall.ipt_forward import IptForwardBackend

        return IptForwardBackend()
    return _NoForward()
