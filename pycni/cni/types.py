"""Typed, frozen views of CNI documents: results (any version) and plugin request configs.

Results are parsed from any supported version and rendered in any supported version with
the spec's conversion rules (reference: cni pkg/types/100 and 040):
- 1.0.0 <-> 1.1.0: same content; fields new in 1.1.0 (interface mtu/socketPath/pciID, route
  mtu/advmss/priority/table/scope) are omitted when rendering an older version.
- 1.x -> 0.3.x/0.4.0: each ip gains ``version`` "4"/"6".
- 0.3.x/0.4.0 -> 1.x: ``version`` is dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycni.cni import version as versions
from pycni.cni._fields import (
    PROTOCOL_KEYS,
    GoKeys,
    bad,
    decode_keys,
    opt_int,
    opt_map,
    opt_str,
    opt_str_list,
    req_str,
)
from pycni.cni.errors import CNIError, ErrorCode

__all__ = [
    "DNS",
    "IPConfig",
    "Interface",
    "PluginRequest",
    "Result",
    "Route",
    "parse_cidr",
    "parse_ip",
]

_V11 = (1, 1, 0)
_V1 = (1, 0, 0)

# The fields of each document as the reference's Go structs name them; keys are matched to
# them as Go matches them (``pycni.cni._fields.GoKeys``). Results are read leniently (another
# plugin's result may carry more), a request's own ``dns`` strictly.
_INTERFACE_KEYS = GoKeys(("name", "mac", "mtu", "sandbox", "socketPath", "pciID"))
_IP_KEYS = GoKeys(("address", "gateway", "interface", "version"))
_ROUTE_KEYS = GoKeys(("dst", "gw", "mtu", "advmss", "priority", "table", "scope"))
_DNS_KEYS = GoKeys(("nameservers", "domain", "search", "options"))
_RESULT_KEYS = GoKeys(("cniVersion", "interfaces", "ips", "routes", "dns"))
_REQUEST_KEYS = GoKeys((*PROTOCOL_KEYS, "ipam", "dns"))
_ARGS_KEYS = GoKeys(("cni",))


def parse_cidr(text: Any, where: str) -> str:
    """Validate an interface address in CIDR form (host bits allowed, ``10.1.0.5/24``)."""
    if not isinstance(text, str) or "/" not in text:
        raise bad(where, f"must be an address in CIDR form, got {text!r}")
    try:
        return str(ipaddress.ip_interface(text))
    except ValueError as err:
        raise bad(where, str(err)) from err


def parse_ip(text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise bad(where, f"must be an IP address, got {text!r}")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as err:
        raise bad(where, str(err)) from err


def _parse_net(text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise bad(where, f"must be a CIDR, got {text!r}")
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError as err:
        raise bad(where, str(err)) from err


@dataclass(frozen=True, slots=True, kw_only=True)
class Interface:
    name: str
    mac: str = ""
    mtu: int | None = None
    sandbox: str = ""
    socket_path: str = ""
    pci_id: str = ""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> Interface:
        doc = decode_keys(doc, _INTERFACE_KEYS, where=where)
        return cls(
            name=req_str(doc, "name", where),
            mac=opt_str(doc, "mac", where),
            mtu=opt_int(doc, "mtu", where),
            sandbox=opt_str(doc, "sandbox", where),
            socket_path=opt_str(doc, "socketPath", where),
            pci_id=opt_str(doc, "pciID", where),
        )

    def to_dict(self, ver: tuple[int, int, int]) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name}
        if self.mac:
            doc["mac"] = self.mac
        if ver >= _V11 and self.mtu is not None:
            doc["mtu"] = self.mtu
        if self.sandbox:
            doc["sandbox"] = self.sandbox
        if ver >= _V11:
            if self.socket_path:
                doc["socketPath"] = self.socket_path
            if self.pci_id:
                doc["pciID"] = self.pci_id
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class IPConfig:
    address: str  # CIDR with host bits: 10.1.0.5/24
    gateway: str | None = None
    interface: int | None = None

    @property
    def family(self) -> int:
        return ipaddress.ip_interface(self.address).version

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def network(self) -> str:
        return str(ipaddress.ip_interface(self.address).network)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> IPConfig:
        doc = decode_keys(doc, _IP_KEYS, where=where)
        gateway = doc.get("gateway")
        return cls(
            address=parse_cidr(doc.get("address"), f"{where}address"),
            gateway=parse_ip(gateway, f"{where}gateway") if gateway else None,
            interface=opt_int(doc, "interface", where),
        )

    def to_dict(self, ver: tuple[int, int, int]) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if ver < _V1:
            doc["version"] = str(self.family)
        if self.interface is not None:
            doc["interface"] = self.interface
        doc["address"] = self.address
        if self.gateway:
            doc["gateway"] = self.gateway
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    dst: str
    gw: str | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    _EXTRA = (
        ("mtu", "mtu"),
        ("advmss", "advmss"),
        ("priority", "priority"),
        ("table", "table"),
        ("scope", "scope"),
    )

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> Route:
        doc = decode_keys(doc, _ROUTE_KEYS, where=where)
        gw = doc.get("gw")
        return cls(
            dst=_parse_net(doc.get("dst"), f"{where}dst"),
            gw=parse_ip(gw, f"{where}gw") if gw else None,
            mtu=opt_int(doc, "mtu", where),
            advmss=opt_int(doc, "advmss", where),
            priority=opt_int(doc, "priority", where),
            table=opt_int(doc, "table", where),
            scope=opt_int(doc, "scope", where),
        )

    def to_dict(self, ver: tuple[int, int, int]) -> dict[str, Any]:
        doc: dict[str, Any] = {"dst": self.dst}
        if self.gw:
            doc["gw"] = self.gw
        if ver >= _V11:
            for attr, key in self._EXTRA:
                value = getattr(self, attr)
                if value is not None:
                    doc[key] = value
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.nameservers or self.domain or self.search or self.options)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str, *, strict: bool = False) -> DNS:
        """``strict``: a key that is none of the four is refused (code 2), as in a request's
        own ``dns``; a result's is read leniently."""
        doc = decode_keys(doc, _DNS_KEYS, where=where, refuse="a DNS key" if strict else None)
        return cls(
            nameservers=opt_str_list(doc, "nameservers", where),
            domain=opt_str(doc, "domain", where),
            search=opt_str_list(doc, "search", where),
            options=opt_str_list(doc, "options", where),
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.nameservers:
            doc["nameservers"] = list(self.nameservers)
        if self.domain:
            doc["domain"] = self.domain
        if self.search:
            doc["search"] = list(self.search)
        if self.options:
            doc["options"] = list(self.options)
        return doc


def _items(doc: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise bad(f"{where}{key}", "must be a list of objects")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """An ADD result. ``cni_version`` is the version it was parsed from or made for."""

    cni_version: str = versions.CURRENT
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "result.") -> Result:
        if not isinstance(doc, dict):
            raise bad(where.rstrip("."), "must be an object")
        doc = decode_keys(doc, _RESULT_KEYS, where=where)
        cni_version = opt_str(doc, "cniVersion", where, default=versions.CURRENT)
        if versions.parse(cni_version) < (0, 3, 0):
            raise CNIError(
                ErrorCode.INCOMPATIBLE_CNI_VERSION,
                "results older than 0.3.0 are not supported",
                f"{where}cniVersion is {cni_version}",
            )
        return cls(
            cni_version=cni_version,
            interfaces=tuple(
                Interface.from_dict(d, f"{where}interfaces[{i}].")
                for i, d in enumerate(_items(doc, "interfaces", where))
            ),
            ips=tuple(
                IPConfig.from_dict(d, f"{where}ips[{i}].")
                for i, d in enumerate(_items(doc, "ips", where))
            ),
            routes=tuple(
                Route.from_dict(d, f"{where}routes[{i}].")
                for i, d in enumerate(_items(doc, "routes", where))
            ),
            dns=DNS.from_dict(opt_map(doc, "dns", where), f"{where}dns."),
        )

    def to_dict(self, cni_version: str | None = None) -> dict[str, Any]:
        """Render in ``cni_version`` (default: the result's own) with the spec's rules."""
        target = cni_version or self.cni_version
        ver = versions.parse(target)
        doc: dict[str, Any] = {"cniVersion": target}
        if self.interfaces:
            doc["interfaces"] = [i.to_dict(ver) for i in self.interfaces]
        if self.ips:
            doc["ips"] = [i.to_dict(ver) for i in self.ips]
        if self.routes:
            doc["routes"] = [r.to_dict(ver) for r in self.routes]
        if self.dns:
            doc["dns"] = self.dns.to_dict()
        return doc

    def interface_index(self, name: str, sandbox: str | None = None) -> int | None:
        for index, iface in enumerate(self.interfaces):
            if iface.name == name and (sandbox is None or iface.sandbox == sandbox):
                return index
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginRequest:
    """The generic part of a plugin's stdin config; plugins parse their own keys from ``raw``."""

    cni_version: str
    name: str
    type: str
    raw: Mapping[str, Any]
    runtime_config: Mapping[str, Any]
    args: Mapping[str, Any]
    ipam: Mapping[str, Any]
    dns: DNS
    prev_result: Result | None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PluginRequest:
        """The protocol's keys matched as Go matches them; ``raw`` is spelt accordingly (the
        plugin's own keys are its to match and check: ``_fields.check_plugin_keys``)."""
        doc = decode_keys(doc, _REQUEST_KEYS)
        prev = doc.get("prevResult")
        opt_map(doc, "capabilities")  # only the runtime reads it, but a non-object is refused
        return cls(
            cni_version=req_str(doc, "cniVersion"),
            name=req_str(doc, "name"),
            type=req_str(doc, "type"),
            raw=doc,
            runtime_config=opt_map(doc, "runtimeConfig"),
            args=opt_map(doc, "args"),
            ipam=opt_map(doc, "ipam"),
            dns=DNS.from_dict(opt_map(doc, "dns"), "dns.", strict=True),
            prev_result=Result.from_dict(prev, "prevResult.") if prev else None,
        )

    def cni_args_section(self, known: Collection[str] = ()) -> Mapping[str, Any]:
        """``args.cni`` (structured per-attachment arguments, CONVENTIONS.md), its ``known``
        keys matched as Go matches them; the others (other plugins' arguments) kept as is."""
        section = decode_keys(self.args, _ARGS_KEYS).get("cni")
        if not isinstance(section, dict):
            return {}
        return decode_keys(section, GoKeys(known), where="args.cni.")
