"""What `portmap` hands to a firewall backend: plain frozen dataclasses, nothing else.

``PortMapping`` is one ``runtimeConfig.portMappings`` entry, validated and normalised.
``PortMap`` is everything one attachment publishes: its key, its mappings, the container's
first IPv4 and IPv6 address (the DNAT targets) and subnets (hairpin sources), and the two
masquerade options. Backends derive every rule or element from it, and tag each with
``key.label`` so DEL and GC find them by the attachment alone.

Host addresses: ``host_ip`` None publishes on every local address of both families;
``0.0.0.0`` / ``::`` publish on every address of that family only (as the reference does);
any other address publishes on that address only (its family only).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.model import TAG_LEN, AttachmentKey

__all__ = [
    "PROTOCOLS",
    "DnatTarget",
    "PortMap",
    "PortMapping",
]

PROTOCOLS: Final = ("tcp", "udp", "sctp")
# Bumped if the per-network hairpin chain's contents ever change (new chains, new names).
_CHAIN_LAYOUT: Final = "hostport-v1"


def _digest(*parts: str) -> str:
    raw = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(raw.encode("ascii")).hexdigest()[:TAG_LEN]


def _bad(what: str, value: object) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"portmap: invalid {what} {value!r}")


@dataclass(frozen=True, slots=True)
class PortMapping:
    """One published port. ``host_ip`` is normalised (None, or a canonical address)."""

    host_ip: str | None
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def __post_init__(self) -> None:
        for name, port in (("hostPort", self.host_port), ("containerPort", self.container_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise _bad(name, port)
        if self.protocol not in PROTOCOLS:
            raise _bad("protocol", self.protocol)
        if self.host_ip is not None:
            try:
                canonical = str(ipaddress.ip_address(self.host_ip))
            except (TypeError, ValueError) as err:
                raise _bad("hostIP", self.host_ip) from err
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
        raise _bad(what, value) from err
    if addr.version != version:
        raise _bad(what, value)
    return str(addr)


def _subnets(cidrs: tuple[str, ...]) -> tuple[str, ...]:
    try:
        nets = {ipaddress.ip_network(c, strict=False) for c in cidrs}
    except (TypeError, ValueError) as err:
        raise _bad("subnet in", cidrs) from err
    ordered = sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return tuple(str(n) for n in ordered)


@dataclass(frozen=True, slots=True, kw_only=True)
class PortMap:
    """Everything one attachment publishes, and how its hairpin/localhost traffic is NATed.

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
            raise _bad("field type (tuples expected)", (self.mappings, self.subnets))
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
        """Names the shared per-network chain of masquerade rules; its contents depend only on
        the network, its subnets and the two options, so the name determines them."""
        flags = f"snat={int(self.snat)},masqAll={int(self.masq_all)}"
        return _digest(_CHAIN_LAYOUT, self.key.network, flags, *self.subnets)

    def host_ports(self, protocol: str) -> tuple[int, ...]:
        return tuple(sorted({m.host_port for m in self.published() if m.protocol == protocol}))
