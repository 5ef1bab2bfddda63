"""Port mappings: what `portmap` hands over."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from pycni.firewall.model import AttachmentKey, bad, digest

__all__ = ['PROTOCOLS', 'DnatTarget', 'PortMap', 'PortMapping']


PROTOCOLS: Final = ("tcp", "udp", "sctp")


@dataclass(frozen=True, slots=True)
class PortMapping:
    """One ``runtimeConfig.portMappings`` entry, validated; ``host_ip`` is normalised (None, or
    a canonical address). None publishes on every local address of both families; ``0.0.0.0``
    / ``::`` on every address of that family only (as the reference does); any other address
    on that address only."""

    host_ip: str | None
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def __post_init__(self) -> None:
        for name, port in (("hostPort", self.host_port), ("containerPort", self.container_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise bad("portmap", name, port)
        if self.protocol not in PROTOCOLS:
            raise bad("portmap", "protocol", self.protocol)
        if self.host_ip is not None:
            try:
                canonical = str(ipaddress.ip_address(self.host_ip))
            except (TypeError, ValueError) as err:
                raise bad("portmap", "hostIP", self.host_ip) from err
            object.__setattr__(self, "host_ip", canonical)

    @property
    def families(self) -> tuple[int, ...]:
        """The IP versions this mapping publishes on."""
        if self.host_ip is None:
            return (4, 6)
        return (ipaddress.ip_address(self.host_ip).version,)

    @property
    def host_addr(self) -> str | None:
        """The one local address matched, or None for every address (of ``families``)."""
        if self.host_ip is None or ipaddress.ip_address(self.host_ip).is_unspecified:
            return None
        return self.host_ip

    @property
    def reservation(self) -> str:
        """What it claims on the host: ``any``, ``any4``, ``any6`` or one address."""
        if self.host_ip is None:
            return "any"
        if self.host_addr is None:
            return f"any{self.families[0]}"
        return self.host_ip

    def describe(self) -> str:
        where = f"{self.host_ip}:" if self.host_ip else ""
        return f"{where}{self.host_port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class DnatTarget:
    """One DNAT: (version, host address or None, proto, host port) -> container ip:port."""

    version: int
    host_addr: str | None
    protocol: str
    host_port: int
    container_ip: str
    container_port: int


def _ip(value: str | None, version: int, what: str) -> str | None:
    if value is None:
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError as err:
        raise bad("portmap", what, value) from err
    if addr.version != version:
        raise bad("portmap", what, value)
    return str(addr)


def _subnets(cidrs: tuple[str, ...]) -> tuple[str, ...]:
    try:
        nets = {ipaddress.ip_network(c, strict=False) for c in cidrs}
    except (TypeError, ValueError) as err:
        raise bad("portmap", "subnet in", cidrs) from err
    ordered = sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return tuple(str(n) for n in ordered)


@dataclass(frozen=True, slots=True, kw_only=True)
class PortMap:
    """Everything one attachment publishes: its mappings, the container's first IPv4 and IPv6
    address (the DNAT targets) and subnets (hairpin sources), and how its hairpin/localhost
    traffic is NATed.

    ``snat``: masquerade traffic from the container's own subnet (hairpin) and from
    127.0.0.0/8 (``127.0.0.1:hostPort`` on the host). ``masq_all``: masquerade every
    connection to the mapped ports, whatever its source.
    """

    key: AttachmentKey
    mappings: tuple[PortMapping, ...]
    container_ipv4: str | None = None
    container_ipv6: str | None = None
    subnets: tuple[str, ...] = ()
    snat: bool = True
    masq_all: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.mappings, tuple) or not isinstance(self.subnets, tuple):
            raise bad("portmap", "field type (tuples expected)", (self.mappings, self.subnets))
        object.__setattr__(self, "container_ipv4", _ip(self.container_ipv4, 4, "IPv4 address"))
        object.__setattr__(self, "container_ipv6", _ip(self.container_ipv6, 6, "IPv6 address"))
        object.__setattr__(self, "subnets", _subnets(self.subnets))

    def container_ip(self, version: int) -> str | None:
        return self.container_ipv4 if version == 4 else self.container_ipv6

    def targets(self) -> tuple[DnatTarget, ...]:
        """Every DNAT, in mapping order, for each family the container has an address of."""
        out: list[DnatTarget] = []
        for m in self.mappings:
            for version in m.families:
                ip = self.container_ip(version)
                if ip is not None:
                    out.append(DnatTarget(version, m.host_addr, m.protocol, m.host_port, ip,
                                          m.container_port))
        return tuple(out)

    def published(self) -> tuple[PortMapping, ...]:
        """The mappings that produce at least one DNAT (the rest have no address to go to)."""
        have = {v for v in (4, 6) if self.container_ip(v)}
        return tuple(m for m in self.mappings if have.intersection(m.families))

    @property
    def masquerades(self) -> bool:
        return self.snat or self.masq_all

    def hairpin_keys(self, version: int) -> tuple[tuple[str, str, int], ...]:
        """Unique (container ip, proto, container port) of one family: the post-DNAT tuples
        whose connections the network's hairpin chain may masquerade."""
        if not self.masquerades:
            return ()
        keys = ((t.container_ip, t.protocol, t.container_port)
                for t in self.targets() if t.version == version)
        return tuple(dict.fromkeys(keys))

    def subnets_of(self, version: int) -> tuple[str, ...]:
        return tuple(s for s in self.subnets if ipaddress.ip_network(s).version == version)

    @property
    def chain_tag(self) -> str:
        """Names the per-network chain of hairpin masquerade rules (network, subnets, options)."""
        flags = f"snat={int(self.snat)},masqAll={int(self.masq_all)}"
        return digest("hostport-v1", self.key.network, flags, *self.subnets)

    def host_ports(self, protocol: str) -> tuple[int, ...]:
        return tuple(sorted({m.host_port for m in self.published() if m.protocol == protocol}))
