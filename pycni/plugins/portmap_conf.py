"""The `portmap` plugin's configuration, parsed and validated whole before any kernel call.

Keys follow the reference plugin (reference §2.4): ``snat`` (default true), ``masqAll``
(default false), ``backend``, and the ``portMappings`` capability in ``runtimeConfig``. pycni
adds ``dataDir``, where host-port reservations live. Reference keys pycni does not implement
are refused with code 2 naming them, never silently ignored.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni._fields import (
    GoKeys,
    bad,
    check_plugin_keys,
    check_runtime_keys,
    decode_keys,
    opt_bool,
    opt_str,
    path_problem,
)
from pycni.cni.errors import CNIError
from pycni.cni.skel import CmdArgs
from pycni.firewall import HOSTPORTS_ROOT, PROTOCOLS, PortMapping, validate_backend_name

__all__ = ["PortmapConfig", "parse_for_teardown", "parse_mappings", "parse_portmap_config"]

_PORTMAP_KEYS: Final = frozenset({"snat", "masqAll", "backend", "dataDir"})
_NOT_IMPLEMENTED: Final = {
    "markMasqBit": "pycni needs no packet mark: it masquerades by conntrack's DNAT state and "
    "the post-DNAT tuple",
    "externalSetMarkChain": "pycni needs no packet mark (see markMasqBit)",
    "conditionsV4": "extra match conditions are not implemented",
    "conditionsV6": "extra match conditions are not implemented",
}
_TEARDOWN_KEYS: Final = GoKeys(("dataDir", "backend"))  # what DEL keeps of a bad config
# One portMappings entry; go-cni (containerd's CRI) sends them as HostPort, ContainerPort,
# Protocol and HostIP, which the reference plugin's Go decoder matches case-insensitively.
_MAPPING_KEYS: Final = GoKeys(("hostPort", "containerPort", "protocol", "hostIP"))


@dataclass(frozen=True, slots=True, kw_only=True)
class PortmapConfig:
    mappings: tuple[PortMapping, ...] = ()
    snat: bool = True
    masq_all: bool = False
    backend: str | None = None
    data_dir: str = HOSTPORTS_ROOT


def _check_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    return check_plugin_keys(
        raw, plugin="portmap", known=_PORTMAP_KEYS, not_implemented=_NOT_IMPLEMENTED
    )


def _port(entry: Mapping[str, Any], key: str, where: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise bad(f"{where}.{key}", f"must be an integer in 1..65535, got {value!r}")
    return value


def _mapping(entry: Any, where: str) -> PortMapping:
    if not isinstance(entry, dict):
        raise bad(where, "must be an object")
    entry = decode_keys(entry, _MAPPING_KEYS, where=f"{where}.", refuse="a port mapping key")
    protocol = entry.get("protocol") or "tcp"
    if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
        raise bad(f"{where}.protocol", f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    host_ip = entry.get("hostIP") or None
    if host_ip is not None and not isinstance(host_ip, str):
        raise bad(f"{where}.hostIP", f"must be a string, got {host_ip!r}")
    host_port = _port(entry, "hostPort", where)
    container_port = _port(entry, "containerPort", where)
    try:
        return PortMapping(host_ip, host_port, container_port, protocol.lower())
    except CNIError as err:  # ports and protocol are valid by now: it is the address
        raise bad(f"{where}.hostIP", f"{host_ip!r} is not an IP address") from err


def _check_duplicates(mappings: tuple[PortMapping, ...]) -> None:
    from pycni.firewall import overlaps

    for i, a in enumerate(mappings):
        for b in mappings[:i]:
            if (a.protocol, a.host_port) == (b.protocol, b.host_port) and overlaps(
                a.reservation, b.reservation
            ):
                raise bad(
                    "runtimeConfig.portMappings",
                    f"host port {a.describe()} is mapped twice ({b.describe()})",
                )


def parse_mappings(runtime_config: Mapping[str, Any]) -> tuple[PortMapping, ...]:
    raw = check_runtime_keys(runtime_config, plugin="portmap", known=("portMappings",)).get(
        "portMappings"
    )
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad("runtimeConfig.portMappings", "must be a list")
    mappings = tuple(_mapping(e, f"runtimeConfig.portMappings[{i}]") for i, e in enumerate(raw))
    _check_duplicates(mappings)
    return mappings


def parse_portmap_config(args: CmdArgs) -> PortmapConfig:
    raw = _check_keys(args.config.raw)
    backend = raw.get("backend")
    if backend is not None and not isinstance(backend, str):
        raise bad("backend", f"must be a string, got {backend!r}")
    validate_backend_name(backend, field="backend")
    data_dir = opt_str(raw, "dataDir", default=HOSTPORTS_ROOT)
    problem = path_problem(data_dir)  # NUL, relative, a '..' component, overlong
    if problem:
        raise bad("dataDir", problem)
    return PortmapConfig(
        mappings=parse_mappings(args.config.runtime_config),
        snat=opt_bool(raw, "snat", default=True),
        masq_all=opt_bool(raw, "masqAll"),
        backend=backend,
        data_dir=data_dir,
    )


def parse_for_teardown(args: CmdArgs) -> PortmapConfig:
    """DEL's parse: a config that ADD would refuse must not stop DEL (it would abort the
    runtime's reverse DEL chain and leak whatever the earlier plugins made, field failure
    #2). Whatever is valid is kept; DEL then goes by the attachment's record."""
    try:
        return parse_portmap_config(args)
    except CNIError as err:
        print(
            f"portmap: DEL with an invalid config ({err}); removing by attachment key",
            file=sys.stderr,
        )
    raw = decode_keys(args.config.raw, _TEARDOWN_KEYS)
    data_dir = raw.get("dataDir")
    backend = raw.get("backend")
    return PortmapConfig(
        data_dir=data_dir
        if isinstance(data_dir, str) and path_problem(data_dir) is None
        else HOSTPORTS_ROOT,
        backend=backend if isinstance(backend, str) and _valid_backend(backend) else None,
    )


def _valid_backend(name: str) -> bool:
    try:
        validate_backend_name(name)
    except CNIError:
        return False
    return True
