"""What plugins hand to a firewall backend: plain frozen dataclasses, nothing else.

Backends key every host-side artifact by the attachment ``(network, container id, ifname)``,
never by live addresses (which may be gone at DEL time: field failure #3). Names and comments
that reach the kernel are short hex tags derived here, so they are always safe in nft and
iptables syntax whatever the network name contains.

Tags (stable across versions; changing them would orphan existing rules):

- ``network_tag(net)`` = first 16 hex chars of ``sha256('["network","<net>"]')``;
- ``AttachmentKey.tag`` = first 16 hex chars of
  ``sha256('["attachment","<net>","<container id>","<ifname>"]')``;
- ``AttachmentKey.label`` = ``"<network tag>-<attachment tag>"`` (33 chars): the comment every
  rule or element of the attachment carries, so DEL finds it by key and GC finds every
  attachment of one network by the prefix.

The strings hashed are compact JSON arrays (``json.dumps(..., separators=(",", ":"))``), which
makes the encoding unambiguous for any strings; the first word separates the hash domains.
64 bits make an accidental collision negligible at any realistic number of containers.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.digest import sha256_hex

__all__ = [
    "TAG_LEN",
    "AttachmentKey",
    "Masquerade",
    "network_tag",
    "parse_label",
]

TAG_LEN: Final = 16
# Bumped if the per-network chain's contents ever change, so new chains get new names and old
# chains stay intact for attachments made before the upgrade.
_CHAIN_LAYOUT: Final = "masq-v1"


def _digest(*parts: str) -> str:
    raw = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=True)
    return sha256_hex(raw.encode("ascii"))[:TAG_LEN]


def network_tag(network: str) -> str:
    """The short, name-safe tag of a network (16 lowercase hex chars)."""
    return _digest("network", network)


def parse_label(label: str) -> tuple[str, str] | None:
    """Split a ``"<network tag>-<attachment tag>"`` label; None if it is not one of ours."""
    net, sep, att = label.partition("-")
    if not sep or not _is_tag(net) or not _is_tag(att):
        return None
    return net, att


def _is_tag(text: str) -> bool:
    return len(text) == TAG_LEN and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class AttachmentKey:
    """One attachment of a container to a network: what every host-side artifact is keyed by."""

    network: str
    container_id: str
    ifname: str

    @property
    def tag(self) -> str:
        return _digest("attachment", self.network, self.container_id, self.ifname)

    @property
    def network_tag(self) -> str:
        return network_tag(self.network)

    @property
    def label(self) -> str:
        """The comment carried by this attachment's rules and elements."""
        return f"{self.network_tag}-{self.tag}"


def _bad(what: str, value: object) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"masquerade: invalid {what} {value!r}")


def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        # strict=False: IPAM results carry host bits (10.1.0.5/24); the subnet is what counts.
        return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
    except (TypeError, ValueError) as err:
        raise _bad("subnet in", cidrs) from err


def _addresses(ips: tuple[str, ...]) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    try:
        return tuple(ipaddress.ip_address(ip) for ip in ips)
    except (TypeError, ValueError) as err:
        raise _bad("source address (no prefix allowed) in", ips) from err


@dataclass(frozen=True)
class Masquerade:
    """Masquerade what the attachment's addresses send outside the network's subnets.

    ``network_subnets``: CIDRs the container's IPs live in; traffic to them is not rewritten.
    ``sources``: the container's IPs (no prefix), IPv4 and/or IPv6.
    """

    key: AttachmentKey
    network_subnets: tuple[str, ...]
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.network_subnets, tuple) or not isinstance(self.sources, tuple):
            raise _bad("field type (tuples expected)", (self.network_subnets, self.sources))
        _networks(self.network_subnets)
        _addresses(self.sources)

    def sources_of(self, version: int) -> tuple[str, ...]:
        """The source addresses of one IP version (4 or 6), normalised, in the given order."""
        ips = (str(a) for a in _addresses(self.sources) if a.version == version)
        return tuple(dict.fromkeys(ips))

    def subnets_of(self, version: int) -> tuple[str, ...]:
        """The exempt subnets of one IP version, normalised to network form, sorted, unique."""
        nets = {n for n in _networks(self.network_subnets) if n.version == version}
        ordered = sorted(nets, key=lambda n: (int(n.network_address), n.prefixlen))
        return tuple(str(n) for n in ordered)

    @property
    def chain_tag(self) -> str:
        """Names the shared chain that holds the exemptions of this network and subnet set.

        The subnets are part of the name, so two attachments of one network with different
        subnets (several IPAM ranges) never overwrite each other's exemptions, and a chain's
        contents are fully determined by its name: re-creating it is always safe.
        """
        subnets = self.subnets_of(4) + self.subnets_of(6)
        return _digest(_CHAIN_LAYOUT, self.key.network, *subnets)
