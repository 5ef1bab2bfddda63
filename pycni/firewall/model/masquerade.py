"""Masquerade: what `bridge` hands over with ``ipMasq``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pycni.firewall.model import AttachmentKey, bad, digest

__all__ = ['Masquerade']


def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        # strict=False: IPAM results carry host bits (10.1.0.5/24); the subnet is what counts.
        return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
    except (TypeError, ValueError) as err:
        raise bad("masquerade", "subnet in", cidrs) from err


def _addresses(ips: tuple[str, ...]) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    try:
        return tuple(ipaddress.ip_address(ip) for ip in ips)
    except (TypeError, ValueError) as err:
        raise bad("masquerade", "source address (no prefix allowed) in", ips) from err


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
            raise bad("masquerade", "field type (tuples expected)",
                       (self.network_subnets, self.sources))
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
        subnets (several IPAM ranges) never overwrite each other's exemptions.
        """
        subnets = self.subnets_of(4) + self.subnets_of(6)
        return digest("masq-v1", self.key.network, *subnets)
