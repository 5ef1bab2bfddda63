"""What plugins hand to a firewall driver: plain frozen dataclasses, nothing else.

Drivers key every host-side artifact by the attachment ``(network, container id, ifname)``,
never by live addresses (which may be gone at DEL time: field failure #3). Names and comments
that reach the kernel are short hex tags derived here, so they are always safe in nft and
iptables syntax whatever the network name contains.

Tags (stable across versions; changing them would orphan existing rules):

- ``network_tag(net)`` = first 16 hex chars of ``sha256('["network","<net>"]')``;
- ``AttachmentKey.tag`` = first 16 hex chars of
  ``sha256('["attachment","<net>","<container id>","<ifname>"]')``;
- ``AttachmentKey.label`` = ``"<network tag>-<attachment tag>"`` (33 chars): the comment every
  rule or element of the attachment carries, so DEL finds it by key and GC finds every
  attachment of one network by the prefix;
- each feature's per-network chain is named by a ``chain_tag`` hashed from a layout word
  (``masq-v1``, ``fwd-v1``, ``hostport-v1``, bumped if a chain's contents ever change, so new
  chains get new names and old ones stay intact for attachments made before), the network and
  whatever decides the chain's rules: the name alone determines the contents.

The strings hashed are compact JSON arrays (``json.dumps(..., separators=(",", ":"))``), which
makes the encoding unambiguous for any strings; the first word separates the hash domains.
64 bits make an accidental collision negligible at any realistic number of containers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni.errors import CNIError, ErrorCode

__all__ = [
    "FORWARD_MARK",
    "HOLE_COMMENT",
    "INGRESS_POLICIES",
    "PROTOCOLS",
    "TAG_LEN",
    "AttachmentKey",
    "DnatTarget",
    "Forward",
    "MacSpoofCheck",
    "Masquerade",
    "PortMap",
    "PortMapping",
    "network_tag",
    "parse_label",
]

TAG_LEN: Final = 16
# Bit 20 of the packet mark. Clear of kube-proxy (0x4000/0x8000), CNI portmap and netavark
# (0x2000), Cilium (0x0f00) and Weave (0x20000).
FORWARD_MARK: Final = 0x00100000
HOLE_COMMENT: Final = "pycni-forward"
INGRESS_POLICIES: Final = ("open", "same-bridge")
PROTOCOLS: Final = ("tcp", "udp", "sctp")


def _digest(*parts: str) -> str:
    raw = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(raw.encode("ascii")).hexdigest()[:TAG_LEN]


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


def _bad(feature: str, what: str, value: object) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{feature}: invalid {what} {value!r}")


def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        # strict=False: IPAM results carry host bits (10.1.0.5/24); the subnet is what counts.
        return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
    except (TypeError, ValueError) as err:
        raise _bad("masquerade", "subnet in", cidrs) from err


def _addresses(ips: tuple[str, ...]) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    try:
        return tuple(ipaddress.ip_address(ip) for ip in ips)
    except (TypeError, ValueError) as err:
        raise _bad("masquerade", "source address (no prefix allowed) in", ips) from err


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
            raise _bad("masquerade", "field type (tuples expected)",
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
        return _digest("masq-v1", self.key.network, *subnets)


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
        return _digest("fwd-v1", self.key.network, self.ingress_policy, *internal, *subnets)


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
                raise _bad("portmap", name, port)
        if self.protocol not in PROTOCOLS:
            raise _bad("portmap", "protocol", self.protocol)
        if self.host_ip is not None:
            try:
                canonical = str(ipaddress.ip_address(self.host_ip))
            except (TypeError, ValueError) as err:
                raise _bad("portmap", "hostIP", self.host_ip) from err
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
        raise _bad("portmap", what, value) from err
    if addr.version != version:
        raise _bad("portmap", what, value)
    return str(addr)


def _subnets(cidrs: tuple[str, ...]) -> tuple[str, ...]:
    try:
        nets = {ipaddress.ip_network(c, strict=False) for c in cidrs}
    except (TypeError, ValueError) as err:
        raise _bad("portmap", "subnet in", cidrs) from err
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
            raise _bad("portmap", "field type (tuples expected)", (self.mappings, self.subnets))
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
        return _digest("hostport-v1", self.key.network, flags, *self.subnets)

    def host_ports(self, protocol: str) -> tuple[int, ...]:
        return tuple(sorted({m.host_port for m in self.published() if m.protocol == protocol}))


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
