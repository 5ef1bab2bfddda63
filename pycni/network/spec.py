"""`network create`'s request -> a validated ``NetworkSpec``, pure (no file, no kernel).

Everything a user can get wrong is refused here, before a byte is written: the name (and a
duplicate), labels and options, subnets (invalid, host bits set, two of one family, overlapping
each other or another network), gateways and IP ranges (outside every subnet, two for one
subnet), the MTU, the bridge name (invalid or another network's). What is taken comes in as
``Taken``, read by the caller from the conf dir and the host.

Options are Docker's and podman's names for the same knobs (``mtu``,
``com.docker.network.driver.mtu``, ``com.docker.network.bridge.name``,
``com.docker.network.bridge.enable_ip_masquerade``, ``com.docker.network.bridge.enable_icc``,
``isolate``); an unknown option is refused rather than silently kept without effect.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pycni.network.names import (
    derive_bridge_name,
    invalid,
    parse_pairs,
    validate_bridge_name,
    validate_network_name,
)
from pycni.network.subnets import (
    AddressPool,
    IPAddress,
    IPNetwork,
    overlapping,
    parse_subnet,
    pick_subnet,
)

__all__ = ["CreateRequest", "NetworkSpec", "SubnetSpec", "Taken", "build_spec"]

_OPTIONS: Final = {
    "mtu": "mtu",
    "com.docker.network.driver.mtu": "mtu",
    "com.docker.network.bridge.name": "bridge",
    "com.docker.network.bridge.enable_ip_masquerade": "ip_masq",
    "com.docker.network.bridge.enable_icc": "icc",
    "isolate": "isolate",
}
_BOOLS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateRequest:
    """What the user asked for, as given on the command line."""

    name: str
    subnets: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    ip_ranges: tuple[str, ...] = ()
    ipv6: bool = False
    internal: bool = False
    mtu: int | None = None
    bridge: str = ""
    labels: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    dns: bool = True  # False: --disable-dns, no name-resolution plugin in the chain


@dataclass(frozen=True, slots=True, kw_only=True)
class Taken:
    """What a new network must not collide with."""

    networks: Mapping[str, str] = field(default_factory=dict)  # name -> conflist path
    subnets: tuple[tuple[IPNetwork, str], ...] = ()  # (subnet, network using it)
    bridges: Mapping[str, str] = field(default_factory=dict)  # bridge -> network using it
    host_prefixes: tuple[IPNetwork, ...] = ()  # routed by, or addresses of, the host
    host_links: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class SubnetSpec:
    subnet: IPNetwork
    gateway: IPAddress
    ip_range: IPNetwork | None = None
    picked: bool = False  # chosen from a pool, not given


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSpec:
    name: str
    bridge: str
    subnets: tuple[SubnetSpec, ...]
    internal: bool = False
    mtu: int | None = None
    ip_masq: bool = True
    isolate: bool = True  # firewall ingressPolicy same-bridge (else open)
    icc: bool = True  # containers of the network reach each other (else port isolation)
    labels: tuple[tuple[str, str], ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    # Plugins chained after `firewall`, before `loopback` (a name-resolution plugin, say).
    extra_plugins: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Knobs:
    mtu: int | None
    bridge: str
    ip_masq: bool
    isolate: bool
    icc: bool


def _bool_option(key: str, value: str) -> bool:
    if value.lower() not in _BOOLS:
        raise invalid(f"invalid option {key}={value!r}", "expected true or false")
    return _BOOLS[value.lower()]


def _mtu(value: str | int, where: str) -> int:
    try:
        mtu = int(value)
    except ValueError as err:
        raise invalid(f"invalid {where} {value!r}", "expected a number") from err
    if not 68 <= mtu <= 65535:
        raise invalid(f"invalid {where} {mtu}", "the MTU must be within 68..65535")
    return mtu


def _knobs(req: CreateRequest, options: Mapping[str, str]) -> _Knobs:
    values: dict[str, Any] = {"mtu": req.mtu, "bridge": req.bridge or None}
    flags = {"mtu": "--mtu", "bridge": "--bridge"}
    for key, value in options.items():
        knob = _OPTIONS.get(key)
        if knob is None:
            raise invalid(f"unsupported option {key!r}", f"known: {', '.join(sorted(_OPTIONS))}")
        if values.get(knob) is not None and str(values[knob]) != value:
            raise invalid(f"option {key}={value} contradicts {flags.get(knob, 'another option')}")
        values[knob] = value if knob in ("mtu", "bridge") else _bool_option(key, value)
    if req.internal and values.get("ip_masq") is True:
        raise invalid("an --internal network cannot masquerade",
                      "drop com.docker.network.bridge.enable_ip_masquerade=true")
    mtu = values.get("mtu")
    return _Knobs(
        mtu=None if mtu is None else _mtu(mtu, "MTU"),
        bridge=str(values.get("bridge") or ""),
        ip_masq=bool(values.get("ip_masq", True)) and not req.internal,
        isolate=bool(values.get("isolate", True)),
        icc=bool(values.get("icc", True)),
    )


def _given_subnets(req: CreateRequest, taken: Taken) -> list[IPNetwork]:
    subnets = [parse_subnet(text) for text in req.subnets]
    for version in (4, 6):
        family = [s for s in subnets if s.version == version]
        if len(family) > 1:
            raise invalid(f"more than one IPv{version} subnet: {', '.join(map(str, family))}",
                          "a network has one IPv4 and at most one IPv6 subnet")
    for subnet in subnets:
        if subnet.prefixlen > subnet.max_prefixlen - 2:
            raise invalid(f"subnet {subnet} is too small", "it must hold a gateway and containers")
        for other, owner in taken.subnets:
            if other.version == subnet.version and other.overlaps(subnet):
                raise invalid(f"subnet {subnet} overlaps {other} of network {owner!r}")
    return subnets


def _placed(items: Sequence[str], subnets: Sequence[IPNetwork], *, what: str,
            parse: Any) -> dict[IPNetwork, Any]:
    """Each gateway or IP range in the one given subnet it belongs to."""
    placed: dict[IPNetwork, Any] = {}
    for text in items:
        value = parse(text)
        home = [s for s in subnets if s.version == value.version and _inside(value, s)]
        if not home:
            given = ", ".join(map(str, subnets)) or "(none given: use --subnet)"
            raise invalid(f"{what} {text} is outside the subnet", f"subnets: {given}")
        if home[0] in placed:
            raise invalid(f"two {what}s for subnet {home[0]}: {placed[home[0]]} and {text}")
        placed[home[0]] = value
    return placed


def _inside(value: IPAddress | IPNetwork, subnet: IPNetwork) -> bool:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value.version == subnet.version and value.subnet_of(subnet)  # type: ignore[arg-type]
    return value in subnet


def _parse_gateway(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError as err:
        raise invalid(f"invalid gateway {text!r}", "expected an IP address") from err


def _check_gateway(subnet: IPNetwork, gateway: IPAddress) -> IPAddress:
    if gateway == subnet.network_address or (
        subnet.version == 4 and gateway == subnet.broadcast_address
    ):
        raise invalid(f"gateway {gateway} is the network or broadcast address of {subnet}")
    return gateway


def _subnet_specs(req: CreateRequest, taken: Taken, pools: Sequence[AddressPool]
                  ) -> tuple[tuple[SubnetSpec, ...], list[str]]:
    """The given subnets with their gateways and ranges, plus the picked ones; warnings."""
    given = _given_subnets(req, taken)
    gateways = _placed(req.gateways, given, what="gateway", parse=_parse_gateway)
    ranges = _placed(req.ip_ranges, given, what="IP range",
                     parse=lambda text: parse_subnet(text, what="IP range"))
    warnings = [f"subnet {s} overlaps {', '.join(map(str, hits))}, routed by the host"
                for s in given if (hits := overlapping(s, taken.host_prefixes))]
    subnets = list(given)
    wanted = [4] + ([6] if req.ipv6 else [])
    avoid = [s for s, _ in taken.subnets] + list(taken.host_prefixes)
    picked = [pick_subnet(pools, avoid, v) for v in wanted if not any(
        s.version == v for s in given)]
    specs = [
        SubnetSpec(
            subnet=s,
            gateway=_check_gateway(s, gateways.get(s, s.network_address + 1)),
            ip_range=ranges.get(s),
            picked=s in picked,
        )
        for s in sorted(subnets + picked, key=lambda s: s.version)
    ]
    return tuple(specs), warnings


def _bridge(name: str, knobs: _Knobs, taken: Taken) -> str:
    if not knobs.bridge:
        return derive_bridge_name(name, {*taken.bridges, *taken.host_links})
    bridge = validate_bridge_name(knobs.bridge)
    owner = taken.bridges.get(bridge)
    if owner is not None:
        raise invalid(f"bridge {bridge} is taken by network {owner!r}")
    return bridge


def build_spec(req: CreateRequest, taken: Taken, pools: Sequence[AddressPool],
               *, extra_plugins: Sequence[Mapping[str, Any]] = ()
               ) -> tuple[NetworkSpec, list[str]]:
    """The network to write, and warnings worth printing; ``CNIError`` (code 7) if the
    request cannot be honoured."""
    name = validate_network_name(req.name)
    if name in taken.networks:
        raise invalid(f"a network named {name!r} already exists", taken.networks[name])
    labels = parse_pairs(req.labels, what="label")
    options = parse_pairs(req.options, what="option")
    knobs = _knobs(req, options)
    subnets, warnings = _subnet_specs(req, taken, pools)
    spec = NetworkSpec(
        name=name,
        bridge=_bridge(name, knobs, taken),
        subnets=subnets,
        internal=req.internal,
        mtu=knobs.mtu,
        ip_masq=knobs.ip_masq,
        isolate=knobs.isolate,
        icc=knobs.icc,
        labels=tuple(labels.items()),
        options=tuple(options.items()),
        extra_plugins=tuple(extra_plugins),
    )
    return spec, warnings
