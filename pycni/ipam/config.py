"""Parse and validate a host-local ``ipam`` object into frozen dataclasses.

Everything is checked here, before any file is touched: every error is a ``CNIError`` with
code 7 (invalid network config) whose message names the offending field, e.g.
``invalid ipam.ranges[0][1].rangeStart``, and whose details say what is wrong with the value.

Addresses use the stdlib ``ipaddress`` module rather than netaddr: it covers everything
host-local needs (parsing, containment, int conversion) and imports in ~1.5 ms against
netaddr's ~25-50 ms, which every plugin invocation would pay.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from pycni.cni._fields import GoKeys, decode_keys, path_problem
from pycni.cni.errors import CNIError, ErrorCode

__all__ = [
    "DEFAULT_DATA_DIR",
    "HostLocalConfig",
    "IPAddress",
    "IPNetwork",
    "IPRange",
    "RouteSpec",
    "load_config",
    "parse_ip",
    "parse_ipam_config",
    "parse_list",
    "validate_network_name",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# tmpfs, deliberately not the reference's /var/lib/cni/networks: containers do not survive a
# reboot, so reservations must not either; on a persistent disk every unclean shutdown leaks
# addresses until the range is exhausted (field problem #1 in the reference notes).
DEFAULT_DATA_DIR: Final = "/run/pycni/ipam"

# Keys as the reference's Go structs name them (host-local's IPAMConfig with its embedded
# Range, RangeSet entries, types.Route), matched as Go matches them: go-cni's ipRanges arrive
# as Subnet/RangeStart/RangeEnd/Gateway. A key of the ipam object, a range or a route that
# matches none is refused (code 2); the request's other keys are the parent plugin's.
_RANGE_NAMES: Final = ("subnet", "rangeStart", "rangeEnd", "gateway")
_IPAM_KEYS: Final = GoKeys(
    (*_RANGE_NAMES, "type", "name", "ranges", "routes", "dataDir", "resolvConf")
)
_RANGE_KEYS: Final = GoKeys(_RANGE_NAMES)
_RUNTIME_KEYS: Final = GoKeys(("ips", "ipRanges"))
_REQUEST_KEYS: Final = GoKeys(("ipam", "runtimeConfig", "cniVersion"))

_NAME_MAX: Final = 255  # NAME_MAX of Linux file systems: the network name is a directory name
_ROUTE_INT_LIMITS: Final = {
    "mtu": 2**32 - 1,
    "advmss": 2**32 - 1,
    "priority": 2**32 - 1,
    "table": 2**32 - 1,
    "scope": 255,
}
_ROUTE_KEYS: Final = GoKeys(("dst", "gw", *_ROUTE_INT_LIMITS))


@dataclass(frozen=True, slots=True, kw_only=True)
class IPRange:
    """One range of a range set: allocate from ``range_start``..``range_end`` (inclusive)."""

    subnet: IPNetwork
    range_start: IPAddress
    range_end: IPAddress
    gateway: IPAddress

    @property
    def version(self) -> int:
        return self.subnet.version

    def contains(self, ip: IPAddress) -> bool:
        """True if ``ip`` lies between range_start and range_end (the reference's rule)."""
        return ip.version == self.version and int(self.range_start) <= int(ip) <= int(
            self.range_end
        )

    def __str__(self) -> str:
        return f"{self.range_start}-{self.range_end}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpec:
    """A route handed back verbatim in the result (CNI 1.1 fields included)."""

    dst: IPNetwork
    gw: IPAddress | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HostLocalConfig:
    """A validated host-local config: one address is allocated per range set."""

    range_sets: tuple[tuple[IPRange, ...], ...]
    routes: tuple[RouteSpec, ...] = ()
    data_dir: str = DEFAULT_DATA_DIR
    resolv_conf: str | None = None


def _invalid(field: str, reason: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid {field}", reason)


def _mapping(value: object, field: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _invalid(field, f"must be an object, not {type(value).__name__}")
    return value


def _object(value: object, field: str, keys: GoKeys, what: str) -> Mapping[str, object]:
    """An object whose keys are all in ``keys`` (matched as Go matches them), spelt so."""
    return decode_keys(_mapping(value, field), keys, where=f"{field}.", refuse=what)


def parse_list(value: object, field: str) -> Sequence[object]:
    """``value`` as a list; an invalid-config error naming ``field`` if it is not one."""
    if not isinstance(value, list | tuple):
        raise _invalid(field, f"must be a list, not {type(value).__name__}")
    return value


def _absent(value: object) -> bool:
    # Go's net.IP decodes "" as nil, so the reference treats an empty string as "not given".
    return value is None or value == ""


def _canonical(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 becomes IPv4, as the reference's canonicalizeIP does."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_ip(value: object, field: str, *, allow_prefix: bool = False) -> IPAddress:
    """An address from a string; with ``allow_prefix`` an ``ip/prefix`` gives its address."""
    if not isinstance(value, str):
        raise _invalid(field, f"must be a string, not {type(value).__name__}")
    try:
        if allow_prefix and "/" in value:
            ip: IPAddress = ipaddress.ip_interface(value).ip
        else:
            ip = ipaddress.ip_address(value)
    except ValueError as err:
        raise _invalid(field, f"{value!r} is not an IP address") from err
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise _invalid(field, f"{value!r}: a scoped address cannot be allocated")
    return _canonical(ip)


def _parse_cidr(value: object, field: str, *, strict: bool) -> IPNetwork:
    """A network from ``addr/prefix``; ``strict`` refuses host bits instead of masking them."""
    if not isinstance(value, str) or "/" not in value:
        raise _invalid(field, f"{value!r} is not a CIDR (address/prefix)")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError as err:
        raise _invalid(field, f"{value!r} is not a CIDR (address/prefix)") from err
    if strict and iface.ip != iface.network.network_address:
        raise _invalid(field, f"{value} has host bits set; the network is {iface.network}")
    return iface.network


def _parse_subnet(value: object, field: str) -> IPNetwork:
    subnet = _parse_cidr(value, field, strict=True)
    if subnet.max_prefixlen - subnet.prefixlen < 2:
        raise _invalid(field, f"network {subnet} too small to allocate from")
    return subnet


def _default_end(subnet: IPNetwork) -> IPAddress:
    # IPv4 keeps the broadcast address out; IPv6 has none, so its last address is usable.
    last = subnet.broadcast_address
    return last - 1 if subnet.version == 4 else last


def _ip_in_subnet(
    raw: Mapping[str, object], key: str, subnet: IPNetwork, path: str
) -> IPAddress | None:
    value = raw.get(key)
    if _absent(value):
        return None
    field = f"{path}.{key}"
    ip = parse_ip(value, field)
    if ip.version != subnet.version or ip not in subnet:
        raise _invalid(field, f"{ip} is not inside subnet {subnet}")
    if ip == subnet.network_address:
        raise _invalid(field, f"{ip} is the network address of {subnet}")
    if subnet.version == 4 and ip == subnet.broadcast_address:
        raise _invalid(field, f"{ip} is the broadcast address of {subnet}")
    return ip


def _parse_range(value: object, path: str) -> IPRange:
    """One range; ``path`` is where it sits in the input, used in every message."""
    raw = _object(value, path, _RANGE_KEYS, "a range key")
    subnet = _parse_subnet(raw.get("subnet"), f"{path}.subnet")
    start = _ip_in_subnet(raw, "rangeStart", subnet, path)
    end = _ip_in_subnet(raw, "rangeEnd", subnet, path)
    gateway = _ip_in_subnet(raw, "gateway", subnet, path)
    # Defaults of the reference: start and gateway at .1 (the iterator skips the gateway, so
    # the first address handed out is .2), end at broadcast-1 (IPv4) or the last address.
    start = subnet.network_address + 1 if start is None else start
    end = _default_end(subnet) if end is None else end
    gateway = subnet.network_address + 1 if gateway is None else gateway
    if int(start) > int(end):
        raise _invalid(f"{path}.rangeStart", f"{start} is after rangeEnd {end}")
    return IPRange(subnet=subnet, range_start=start, range_end=end, gateway=gateway)


# Parsed range sets with the input path each came from, for messages.
_PathedSets: TypeAlias = Sequence[tuple[str, tuple[IPRange, ...]]]


def _range_path(set_path: str, j: int) -> str:
    # The legacy top-level range is reported by its own keys ("ipam.subnet"), not an index.
    return set_path if set_path == "ipam" else f"{set_path}[{j}]"


def _parse_range_set(value: object, path: str) -> tuple[IPRange, ...]:
    items = parse_list(value, path)
    if not items:
        raise _invalid(path, "empty range set")
    ranges = tuple(_parse_range(item, _range_path(path, j)) for j, item in enumerate(items))
    for j, rng in enumerate(ranges[1:], start=1):
        if rng.version != ranges[0].version:
            raise _invalid(f"{path}[{j}]", "all ranges of a range set must be of the same family")
    return ranges


def _raw_range_sets(
    ipam: Mapping[str, object], runtime_config: Mapping[str, object] | None
) -> list[tuple[str, object]]:
    """(path, raw set) in allocation order: ipRanges, then legacy top level, then ranges."""
    sets: list[tuple[str, object]] = []
    rc = runtime_config or {}
    ip_ranges = rc.get("ipRanges")
    if not _absent(ip_ranges):
        path = "runtimeConfig.ipRanges"
        sets += [(f"{path}[{i}]", s) for i, s in enumerate(parse_list(ip_ranges, path))]
    if not _absent(ipam.get("subnet")):
        sets.append(("ipam", [{k: ipam[k] for k in _RANGE_NAMES if k in ipam}]))
    else:
        for key in ("rangeStart", "rangeEnd", "gateway"):
            if not _absent(ipam.get(key)):
                raise _invalid(f"ipam.{key}", "given without ipam.subnet")
    ranges = ipam.get("ranges")
    if not _absent(ranges):
        sets += [(f"ipam.ranges[{i}]", s) for i, s in enumerate(parse_list(ranges, "ipam.ranges"))]
    if not sets:
        raise _invalid("ipam.ranges", "no IP ranges specified")
    return sets


def _check_overlaps(sets: _PathedSets) -> None:
    """No two ranges overlap, within or across sets: sorted by start, each must begin after
    the previous one ends (an overlap anywhere shows up between neighbours)."""
    flat = [(rng, _range_path(p, j)) for p, rs in sets for j, rng in enumerate(rs)]
    flat.sort(key=lambda item: (item[0].version, int(item[0].range_start)))
    for (prev, prev_path), (rng, path) in itertools.pairwise(flat):
        if prev.version == rng.version and int(rng.range_start) <= int(prev.range_end):
            raise _invalid(path, f"range {rng} overlaps {prev_path} ({prev})")


def _check_families(sets: _PathedSets, cni_version: str | None) -> None:
    # Results before 0.3.0 carry one ip4 and one ip6 only (the reference refuses the same).
    if cni_version not in ("0.1.0", "0.2.0"):
        return
    for family in (4, 6):
        paths = [p for p, rs in sets if rs[0].version == family]
        if len(paths) > 1:
            raise _invalid(paths[1], f"cniVersion {cni_version} allows one IPv{family} range set")


def _route_int(raw: Mapping[str, object], key: str, path: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    limit = _ROUTE_INT_LIMITS[key]
    # bool is an int in Python but never a valid number in JSON config.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _invalid(f"{path}.{key}", f"{value!r} is not an integer in 0..{limit}")
    return value


def _parse_route(value: object, path: str) -> RouteSpec:
    raw = _object(value, path, _ROUTE_KEYS, "a route key")
    # Host bits in dst are masked: the kernel refuses them, the intent is plain.
    dst = _parse_cidr(raw.get("dst"), f"{path}.dst", strict=False)
    gw = None if _absent(raw.get("gw")) else parse_ip(raw.get("gw"), f"{path}.gw")
    if gw is not None and gw.version != dst.version:
        raise _invalid(f"{path}.gw", f"{gw} is not of the same family as dst {dst}")
    ints = {key: _route_int(raw, key, path) for key in _ROUTE_INT_LIMITS}
    return RouteSpec(dst=dst, gw=gw, **ints)


def _parse_routes(value: object) -> tuple[RouteSpec, ...]:
    if value is None:
        return ()
    items = parse_list(value, "ipam.routes")
    return tuple(_parse_route(item, f"ipam.routes[{i}]") for i, item in enumerate(items))


def _parse_path(value: object, field: str, default: str | None) -> str | None:
    if _absent(value):
        return default
    if not isinstance(value, str):
        raise _invalid(field, f"must be a string, not {type(value).__name__}")
    problem = path_problem(value)  # NUL, relative, a '..' component, overlong
    if problem:
        raise _invalid(field, problem)
    return value


def validate_network_name(name: object) -> str:
    """The network name becomes a directory under dataDir: it must be one safe path component."""
    if not isinstance(name, str) or not name:
        raise _invalid("name", "the network name must be a non-empty string")
    if name in (".", "..") or "/" in name or "\0" in name:
        raise _invalid("name", f"{name!r} is not usable as a directory name")
    if len(name.encode("utf-8", "surrogateescape")) > _NAME_MAX:
        raise _invalid("name", f"longer than {_NAME_MAX} bytes")
    return name


def parse_ipam_config(
    ipam: object,
    *,
    runtime_config: Mapping[str, object] | None = None,
    cni_version: str | None = None,
) -> HostLocalConfig:
    """Validate the ``ipam`` object (plus ``runtimeConfig.ipRanges``) completely."""
    raw = _object(ipam, "ipam", _IPAM_KEYS, "a host-local ipam key")
    if runtime_config is not None:
        runtime_config = decode_keys(_mapping(runtime_config, "runtimeConfig"), _RUNTIME_KEYS)
    sets = [(p, _parse_range_set(s, p)) for p, s in _raw_range_sets(raw, runtime_config)]
    _check_overlaps(sets)
    _check_families(sets, cni_version)
    data_dir = _parse_path(raw.get("dataDir"), "ipam.dataDir", DEFAULT_DATA_DIR)
    assert data_dir is not None  # a default was given
    return HostLocalConfig(
        range_sets=tuple(rs for _, rs in sets),
        routes=_parse_routes(raw.get("routes")),
        data_dir=data_dir,
        resolv_conf=_parse_path(raw.get("resolvConf"), "ipam.resolvConf", None),
    )


def load_config(netconf: Mapping[str, object]) -> HostLocalConfig:
    """The host-local config from a whole request config (``ipam``, ``runtimeConfig``...)."""
    netconf = decode_keys(netconf, _REQUEST_KEYS)
    rc = netconf.get("runtimeConfig")
    version = netconf.get("cniVersion")
    return parse_ipam_config(
        netconf.get("ipam"),
        runtime_config=None if rc is None else _mapping(rc, "runtimeConfig"),
        cni_version=version if isinstance(version, str) else None,
    )
