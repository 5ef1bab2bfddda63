"""The network manager's settings: built-in defaults < ``pycni.yaml`` < environment < flags.

From ``pycni.yaml`` (found by ``pycni.config_file``, the file `pycni-run` reads):

- the ``runtime:`` section's locations, shared with `pycni-run` so both see the same networks:
  ``conf_dir``, ``cni_path``, ``cni_cache_dir``, ``state_dir``;
- the ``network:`` section, the manager's own::

      network:
        default_address_pools:            # Docker's "default-address-pools": picked in order
          - {base: 10.100.0.0/14, size: 24}
        ipv6_pool: {base: fd00:1::/48, size: 64}   # default: a ULA /48 from the machine id
        ipam_data_dir: /run/pycni/ipam    # written as host-local's dataDir (default: its own)
        firewall_backend: nftables        # written into the chain (default: detected per call)
        dns_domain: dns.pycni             # names resolve as NAME and NAME.<dns_domain>
        dns_run_dir: /run/pycni/dns       # the resolver's records and socket (the default)

``NETCONFPATH`` and ``CNI_PATH`` override the conf dir and plugin path, as for cnitool.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pycni.config_file import ConfigFileError, read_section
from pycni.network.names import invalid

if TYPE_CHECKING:  # imported where used: `ls` needs no pools (nor the IPAM config they use)
    from pycni.network.subnets import AddressPool

__all__ = ["DEFAULT_DNS_DOMAIN", "NetworkSettings", "load_settings", "machine_seed"]

_MACHINE_ID_FILES: Final = ("/etc/machine-id", "/var/lib/dbus/machine-id")
_RUNTIME_KEYS: Final = {"conf_dir": "conf_dir", "cni_path": "cni_path",
                        "cni_cache_dir": "cache_dir", "state_dir": "state_dir"}
_NETWORK_KEYS: Final = ("default_address_pools", "ipv6_pool", "ipam_data_dir", "firewall_backend",
                        "dns_domain", "dns_run_dir")
_STRING_KEYS: Final = ("ipam_data_dir", "firewall_backend", "dns_domain", "dns_run_dir")
# Names resolve as NAME and NAME.dns.pycni (podman's networks use dns.podman; Docker's, none).
DEFAULT_DNS_DOMAIN: Final = "dns.pycni"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSettings:
    conf_dir: str = "/etc/cni/net.d"
    cni_path: tuple[str, ...] = ("/opt/cni/bin",)
    cache_dir: str = "/var/lib/cni"
    state_dir: str = "/run/pycni"  # pycni-run's, for container names
    ipam_data_dir: str = ""
    address_pools: tuple[AddressPool, ...] = ()  # () = subnets.DEFAULT_POOLS
    ipv6_pool: AddressPool | None = None
    firewall_backend: str | None = None
    dns_domain: str = DEFAULT_DNS_DOMAIN  # the domain of the networks `create` makes
    dns_run_dir: str = ""  # written as the pycni-dns plugin's runDir ("": its default)
    timeout: float = 60.0  # seconds per plugin call (rm --force, prune)

    def pools(self) -> tuple[AddressPool, ...]:
        """The IPv4 pools, then the IPv6 one."""
        from pycni.network.subnets import DEFAULT_POOLS, ula_pool

        return (*(self.address_pools or DEFAULT_POOLS),
                self.ipv6_pool or ula_pool(machine_seed()))


def machine_seed() -> bytes:
    """What the default ULA prefix derives from: the machine id, else the host name."""
    for path in _MACHINE_ID_FILES:
        try:
            with open(path, "rb") as f:
                seed = f.read().strip()
        except OSError:
            continue
        if seed:
            return seed
    import socket

    return socket.gethostname().encode()


def _paths(value: Any, where: str) -> tuple[str, ...]:
    items = value.split(os.pathsep) if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(p, str) for p in items):
        raise invalid(f"{where}: cni_path must be a list of directories")
    return tuple(p for p in items if p)


def _runtime_values(section: Mapping[str, Any], where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, field_name in _RUNTIME_KEYS.items():
        value = section.get(key)
        if value is None:
            continue
        if key == "cni_path":
            values[field_name] = _paths(value, where)
        elif isinstance(value, str) and value:
            values[field_name] = value
        else:
            raise invalid(f"{where}: runtime.{key} must be a non-empty string")
    return values


def _network_values(section: Mapping[str, Any], where: str) -> dict[str, Any]:
    from pycni.network.subnets import parse_pool

    unknown = sorted(set(section) - set(_NETWORK_KEYS))
    if unknown:
        raise invalid(f"{where}: unknown network setting {unknown[0]!r}",
                      f"known: {', '.join(_NETWORK_KEYS)}")
    values: dict[str, Any] = {}
    pools = section.get("default_address_pools")
    if pools is not None:
        if not isinstance(pools, list) or not pools:
            raise invalid(f"{where}: network.default_address_pools must be a non-empty list")
        parsed = [parse_pool(p, where=f"{where} network.default_address_pools") for p in pools]
        if any(p.base.version != 4 for p in parsed):
            raise invalid(f"{where}: network.default_address_pools are IPv4 (see ipv6_pool)")
        values["address_pools"] = tuple(parsed)
    if section.get("ipv6_pool") is not None:
        pool = parse_pool(section["ipv6_pool"], where=f"{where} network.ipv6_pool")
        if pool.base.version != 6:
            raise invalid(f"{where}: network.ipv6_pool must be an IPv6 prefix")
        values["ipv6_pool"] = pool
    for key in _STRING_KEYS:
        value = section.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise invalid(f"{where}: network.{key} must be a non-empty string")
        if value is not None:
            values[key] = value
    return values


def _check(settings: NetworkSettings) -> NetworkSettings:
    if settings.firewall_backend is not None:
        from pycni.firewall import validate_backend_name

        validate_backend_name(settings.firewall_backend, field="network.firewall_backend")
    for key in ("ipam_data_dir", "dns_run_dir"):
        if getattr(settings, key) and not os.path.isabs(getattr(settings, key)):
            raise invalid(f"network.{key} must be an absolute path")
    if settings.dns_domain != DEFAULT_DNS_DOMAIN:  # `ls` compiles no name pattern
        from pycni.dns.names import name_problem

        problem = name_problem(settings.dns_domain)
        if problem:
            raise invalid(f"network.dns_domain {settings.dns_domain!r} {problem}")
    return settings


def load_settings(path: Path | None, *, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> NetworkSettings:
    """Defaults, then the file at ``path`` (if any), ``NETCONFPATH``/``CNI_PATH`` from
    ``env``, then ``overrides`` (flags; ``None`` values are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values |= _runtime_values(read_section(path, "runtime"), str(path))
            values |= _network_values(read_section(path, "network"), str(path))
        except ConfigFileError as err:
            raise invalid(str(err)) from err
    env = env or {}
    if env.get("NETCONFPATH"):
        values["conf_dir"] = env["NETCONFPATH"]
    if env.get("CNI_PATH"):
        values["cni_path"] = _paths(env["CNI_PATH"], "CNI_PATH")
    values |= {k: v for k, v in (overrides or {}).items() if v is not None}
    return _check(dataclasses.replace(NetworkSettings(), **values))
