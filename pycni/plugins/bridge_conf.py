"""The `bridge` plugin's configuration: every key parsed and validated before any kernel call.

Keys follow the reference plugin (containernetworking/plugins bridge, see reference §2.1) with
docker0-style defaults: bridge ``pycni0``, gateway on the bridge, default route, masquerade.
A key we do not implement is refused with code 2 naming it, never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pycni.cni._fields import (
    GoKeys,
    bad,
    check_plugin_keys,
    check_runtime_keys,
    decode_keys,
    opt_bool,
    opt_int,
    opt_str,
)
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import DNS
from pycni.firewall import validate_backend_name

__all__ = ["DEFAULT_BRIDGE", "BridgeConfig", "parse_bridge_config"]

DEFAULT_BRIDGE: Final = "pycni0"

_BRIDGE_KEYS: Final = frozenset(
    {
        "bridge",
        "isGateway",
        "isDefaultGateway",
        "forceAddress",
        "ipMasq",
        "ipMasqBackend",
        "mtu",
        "hairpinMode",
        "promiscMode",
        "vlan",
        "enabledad",
        "macspoofchk",
        "portIsolation",
        "dns",
        "ipam",
    }
)
_NOT_IMPLEMENTED: Final = {
    "vlanTrunk": "VLAN trunks are not implemented (use vlan for an access VLAN)",
    "preserveDefaultVlan": "only meaningful with vlanTrunk, which is not implemented",
    "disableContainerInterface": "not implemented: pycni always brings the container interface up",
}
# Capabilities: the bridge's own (mac) and its IPAM plugin's (host-local's ips and ipRanges),
# which it passes on in the config the IPAM plugin is delegated.
_RUNTIME_KEYS: Final = ("mac", "ips", "ipRanges")
_IPAM_TYPE: Final = GoKeys(("type",))
_MAC_RE: Final = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFNAME_MAX: Final = 15


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeConfig:
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = True
    is_default_gateway: bool = True
    force_address: bool = False
    ip_masq: bool = True
    ip_masq_backend: str | None = None
    mtu: int | None = None
    hairpin_mode: bool = False
    promisc_mode: bool = False
    vlan: int = 0
    enable_dad: bool = False
    mac_spoof_check: bool = False
    port_isolation: bool = False
    dns: DNS = field(default_factory=DNS)
    ipam_type: str = ""
    mac: str | None = None


def _check_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    return check_plugin_keys(
        raw, plugin="bridge", known=_BRIDGE_KEYS, not_implemented=_NOT_IMPLEMENTED
    )


def _bridge_name(raw: Mapping[str, Any]) -> str:
    name = opt_str(raw, "bridge", default=DEFAULT_BRIDGE)
    if (
        len(name) > _IFNAME_MAX
        or not name
        or any(c in name for c in "/:% \t\n\0")  # '%': a kernel name template (br%d)
        or name in (".", "..")
    ):
        raise bad("bridge", f"{name!r} is not a valid interface name")
    return name


def _mtu(raw: Mapping[str, Any]) -> int | None:
    mtu = opt_int(raw, "mtu")
    if mtu is not None and not 68 <= mtu <= 65535:
        raise bad("mtu", f"{mtu} is outside 68..65535")
    return mtu


def _vlan(raw: Mapping[str, Any]) -> int:
    vlan = opt_int(raw, "vlan") or 0
    if not 0 <= vlan <= 4094:
        raise bad("vlan", f"{vlan} is outside 0..4094")
    return vlan


def _mac(args: CmdArgs, runtime: Mapping[str, Any]) -> str | None:
    """Container MAC; later wins, as in the reference:
    CNI_ARGS MAC < args.cni.mac < runtimeConfig.mac."""
    candidates = [
        ("CNI_ARGS MAC", args.cni_args.get("MAC")),
        ("args.cni.mac", args.config.cni_args_section(("mac",)).get("mac")),
        ("runtimeConfig.mac", runtime.get("mac")),
    ]
    chosen = None
    for source, value in candidates:
        if value is None or value == "":
            continue
        if not isinstance(value, str) or not _MAC_RE.match(value):
            raise bad(source, f"{value!r} is not a MAC address")
        if int(value[:2], 16) & 1:
            raise bad(source, f"{value} is a multicast MAC address")
        chosen = value.lower()
    return chosen


def _ipam_type(raw: Mapping[str, Any]) -> str:
    ipam = raw.get("ipam", {})
    if not isinstance(ipam, dict):
        raise bad("ipam", "must be an object")
    kind = decode_keys(ipam, _IPAM_TYPE, where="ipam.").get("type", "")
    if not isinstance(kind, str) or "/" in kind:
        raise bad("ipam.type", f"{kind!r} is not a plugin name")
    return kind


def parse_bridge_config(args: CmdArgs) -> BridgeConfig:
    raw = _check_keys(args.config.raw)
    runtime = check_runtime_keys(args.config.runtime_config, plugin="bridge", known=_RUNTIME_KEYS)
    # Docker-style defaults: gateway on the bridge and a default route through it, unless the
    # config turns the gateway off (then the default route follows it off).
    is_gateway = opt_bool(raw, "isGateway", default=True)
    is_default_gateway = opt_bool(raw, "isDefaultGateway", default=is_gateway)
    is_gateway = is_gateway or is_default_gateway
    hairpin = opt_bool(raw, "hairpinMode")
    promisc = opt_bool(raw, "promiscMode")
    if hairpin and promisc:
        raise bad("promiscMode", "cannot be combined with hairpinMode")
    vlan = _vlan(raw)
    if vlan and is_gateway:
        # The reference routes a VLAN's gateway through a "<bridge>.<vlan>" interface; we
        # have not built that, so say so rather than put the gateway on the wrong VLAN.
        raise CNIError(
            ErrorCode.UNSUPPORTED_FIELD,
            "unsupported field vlan with isGateway",
            "a gateway on an access VLAN is not implemented; set isGateway false for vlan",
        )
    backend = raw.get("ipMasqBackend")
    if backend is not None:
        validate_backend_name(
            backend if isinstance(backend, str) else repr(backend), field="ipMasqBackend"
        )
    return BridgeConfig(
        bridge=_bridge_name(raw),
        # isDefaultGateway implies isGateway, as in the reference.
        is_gateway=is_gateway,
        is_default_gateway=is_default_gateway,
        force_address=opt_bool(raw, "forceAddress"),
        ip_masq=opt_bool(raw, "ipMasq", default=True),
        ip_masq_backend=backend,
        mtu=_mtu(raw),
        hairpin_mode=hairpin,
        promisc_mode=promisc,
        vlan=vlan,
        enable_dad=opt_bool(raw, "enabledad"),
        mac_spoof_check=opt_bool(raw, "macspoofchk"),
        port_isolation=opt_bool(raw, "portIsolation"),
        dns=args.config.dns,
        ipam_type=_ipam_type(raw),
        mac=_mac(args, runtime),
    )
