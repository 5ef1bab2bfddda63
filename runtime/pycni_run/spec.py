"""What one container is, validated completely before anything touches the kernel.

Parsing helpers turn Docker-style option strings (``64m``, ``0.5``, ``8080:80/udp``,
``container:web``) into frozen values; ``validate_spec`` checks the combinations Docker refuses.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Final, Literal

from pycni_run.devices import DeviceRule
from pycni_run.errors import RunError
from pycni_run.idmaps import UsernsOptions
from pycni_run.security import SecurityOptions
from pycni_run.volumes import Mount, validate_mounts

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_NETWORK",
    "HOST_GATEWAY",
    "NETWORK_OF_MODE",
    "ContainerSpec",
    "DnsOptions",
    "Limits",
    "NetMode",
    "NetworkRequest",
    "PortMapping",
    "new_container_id",
    "parse_cpus",
    "parse_env",
    "parse_memory",
    "parse_net",
    "parse_pids_limit",
    "parse_port",
    "parse_publish",
    "validate_name",
    "validate_spec",
]

DEFAULT_IMAGE: Final = "busybox"
MIN_MEMORY: Final = 6 * 1024 * 1024  # Docker's floor
# Docker's ceiling (an int64 of bytes): a larger number is a typo, not a limit; the kernel
# would overflow on it or clamp it to "unlimited" silently.
MAX_MEMORY: Final = 2**63 - 1
MAX_PIDS: Final = 2**63 - 1
CPU_PERIOD_US: Final = 100_000

# Docker's four modes -> the CNI network (conf/) that implements each one.
ModeKind = Literal["bridge", "none", "host", "container"]
NETWORK_OF_MODE: Final[dict[str, str]] = {
    "bridge": "pycni",
    "none": "none",
    "host": "host",
    "container": "container",
}
DEFAULT_NETWORK: Final = NETWORK_OF_MODE["bridge"]
HOST_GATEWAY: Final = "host-gateway"  # --add-host NAME:host-gateway = the first network's gateway

_NAME_RE: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_MAX_NAME: Final = 63
_UNITS: Final = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_PROTOCOLS: Final = ("tcp", "udp", "sctp")
_ENV_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class NetMode:
    kind: ModeKind
    peer: str = ""  # the NAME of container:NAME

    def __str__(self) -> str:
        return f"container:{self.peer}" if self.kind == "container" else self.kind

    @property
    def network(self) -> str:
        return NETWORK_OF_MODE[self.kind]

    @property
    def new_netns(self) -> bool:
        return self.kind in ("bridge", "none")


@dataclass(frozen=True, slots=True, kw_only=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def to_cni(self) -> dict[str, object]:
        """One entry of the ``portMappings`` capability (CONVENTIONS.md)."""
        doc: dict[str, object] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            doc["hostIP"] = self.host_ip
        return doc

    def __str__(self) -> str:
        host = f"{self.host_ip}:" if self.host_ip else ""
        return f"{host}{self.host_port}->{self.container_port}/{self.protocol}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkRequest:
    """One CNI network a container is attached to, and what it asks of it (``netspec``)."""

    name: str  # the network's (conflist's) name
    ips: tuple[str, ...] = ()  # static addresses: at most one IPv4 and one IPv6
    mac: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsOptions:
    """``--dns``, ``--dns-search``, ``--dns-option``, ``--add-host`` (``netspec``)."""

    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (name, address or HOST_GATEWAY)

    @property
    def wants_host_gateway(self) -> bool:
        return any(address == HOST_GATEWAY for _, address in self.extra_hosts)

    @property
    def resolver_set(self) -> bool:
        return bool(self.servers or self.search or self.options)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    memory: int | None = None  # bytes
    cpus: float | None = None
    pids: int | None = None
    # The device allowlist (OCI's linux.resources.devices), in order; None = left as inherited.
    devices: tuple[DeviceRule, ...] | None = None

    @property
    def cpu_quota_us(self) -> int | None:
        return None if self.cpus is None else round(self.cpus * CPU_PERIOD_US)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerSpec:
    name: str
    id: str
    command: tuple[str, ...]
    image: str = DEFAULT_IMAGE
    rootfs: str = ""  # --rootfs DIR: the overlay's lower dir instead of an image
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""  # "" = the image's WorkingDir, else /
    hostname: str = ""
    net: NetMode = field(default_factory=lambda: NetMode("bridge"))
    # --net=bridge's networks in attachment order (the first is eth0 and holds the default
    # route); () = the default network. See ``requested_networks``.
    networks: tuple[NetworkRequest, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    dns: DnsOptions = field(default_factory=DnsOptions)
    limits: Limits = field(default_factory=Limits)
    detach: bool = False
    auto_remove: bool = False
    interactive: bool = False
    tty: bool = False
    init: bool = False
    security: SecurityOptions = field(default_factory=SecurityOptions)
    entrypoint: tuple[str, ...] | None = None  # --entrypoint: replaces the image's (and Cmd)
    image_id: str = ""  # the loaded image IMAGE names ("" = busybox, built in, or --rootfs)
    user: str = ""  # --user, else the image's User: NAME|UID[:GROUP|GID]; "" = root
    mounts: tuple[Mount, ...] = ()  # -v and --tmpfs
    read_only: bool = False  # --read-only: the rootfs mounted read-only
    publish_all: bool = False  # -P: every port the image exposes, on a free host port
    userns: UsernsOptions = field(default_factory=UsernsOptions)  # --userns, --uidmap, --gidmap

    @property
    def builtin_image(self) -> bool:
        """busybox or --rootfs: no image config (the command line gives the command)."""
        return bool(self.rootfs) or self.image == DEFAULT_IMAGE

    @property
    def requested_networks(self) -> tuple[NetworkRequest, ...]:
        """The CNI networks to attach, in order: the mode's own network for none, host and
        container:NAME."""
        if self.net.kind != "bridge":
            return (NetworkRequest(name=self.net.network),)
        return self.networks or (NetworkRequest(name=DEFAULT_NETWORK),)


def new_container_id() -> str:
    return secrets.token_hex(32)


def validate_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name) or len(name) > _MAX_NAME:
        raise RunError(
            f"invalid container name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 63 chars"
        )
    return name


def parse_memory(text: str) -> int:
    match = re.fullmatch(r"(\d+)([bkmg]?)", text.strip().lower())
    if not match:
        raise RunError(f"invalid --memory {text!r}: use a number with an optional b, k, m or g")
    value = int(match.group(1)) * _UNITS[match.group(2)]
    if value < MIN_MEMORY:
        raise RunError(f"invalid --memory {text!r}: the minimum is 6m")
    if value > MAX_MEMORY:
        raise RunError(f"invalid --memory {text!r}: more than {MAX_MEMORY} bytes")
    return value


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RunError(f"invalid --cpus {text!r}: not a number") from None
    available = os.cpu_count() or 1
    if not 0.01 <= value <= available:
        raise RunError(f"invalid --cpus {text!r}: must be between 0.01 and {available}")
    return value


def parse_pids_limit(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        raise RunError(f"invalid --pids-limit {text!r}: not an integer") from None
    if value > MAX_PIDS:
        raise RunError(f"invalid --pids-limit {text!r}: more than {MAX_PIDS}")
    return None if value <= 0 else value  # Docker: 0 or -1 = unlimited


def parse_net(text: str) -> NetMode:
    if text in ("bridge", "none", "host"):
        return NetMode(text)  # type: ignore[arg-type]  # narrowed by the membership test
    if text == "default":
        return NetMode("bridge")
    if text.startswith("container:"):
        return NetMode("container", validate_name(text.partition(":")[2]))
    raise RunError(f"invalid --net {text!r}: use bridge, none, host or container:NAME")


def _port_number(text: str, what: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise RunError(f"invalid {what} {text!r} in -p: must be 1-65535")
    return int(text)


def _port_range(text: str, what: str) -> range:
    """``N`` or ``N-M``."""
    low, sep, high = text.partition("-")
    first = _port_number(low, what)
    last = _port_number(high, what) if sep else first
    if last < first:
        raise RunError(f"invalid {what} range {text!r} in -p: the end is below the start")
    return range(first, last + 1)


def _split_publish(text: str) -> tuple[str, str, str, str]:
    """``[hostIP:]hostPorts:containerPorts[/proto]`` -> (host IP, host, container, proto)."""
    spec, _, proto = text.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in _PROTOCOLS:
        raise RunError(f"invalid protocol {proto!r} in -p {text!r}: use tcp, udp or sctp")
    host_ip = ""
    if spec.startswith("["):
        host_ip, _, spec = spec[1:].partition("]")
        spec = spec.removeprefix(":")
    parts = spec.split(":")
    if len(parts) == 3 and not host_ip:
        host_ip, parts = parts[0], parts[1:]
    if len(parts) != 2:
        raise RunError(f"invalid -p {text!r}: use [hostIP:]hostPort:containerPort[/proto]")
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise RunError(f"invalid host IP {host_ip!r} in -p {text!r}") from None
    return host_ip, parts[0], parts[1], proto


def parse_publish(text: str) -> tuple[PortMapping, ...]:
    """``[hostIP:]hostPort[-end]:containerPort[-end][/proto]`` (IPv6 host IPs in brackets):
    one mapping per port, ranges of equal length pair up in order."""
    host_ip, host_text, container_text, proto = _split_publish(text)
    hosts = _port_range(host_text, "host port")
    containers = _port_range(container_text, "container port")
    if len(hosts) != len(containers):
        if len(containers) == 1:
            raise RunError(f"-p {text!r}: a host port range for one container port (Docker "
                           "picks any free port of the range) is not supported; give a range "
                           "of container ports as long as the host range, or one host port")
        raise RunError(f"invalid -p {text!r}: the host range has {len(hosts)} ports, the "
                       f"container range {len(containers)}; they must be of equal length")
    return tuple(
        PortMapping(host_port=h, container_port=c, protocol=proto, host_ip=host_ip)
        for h, c in zip(hosts, containers, strict=True)
    )


def parse_port(text: str) -> PortMapping:
    """One ``[hostIP:]hostPort:containerPort[/proto]`` mapping (no ranges)."""
    mappings = parse_publish(text)
    if len(mappings) != 1:
        raise RunError(f"invalid -p {text!r}: one port expected, not a range")
    return mappings[0]


def parse_env(
    items: list[str], inherit: dict[str, str] | None = None
) -> tuple[tuple[str, str], ...]:
    """``-e K=V`` sets; ``-e K`` copies K from the caller's environment (Docker)."""
    source = os.environ if inherit is None else inherit
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not _ENV_KEY_RE.fullmatch(key):
            raise RunError(f"invalid -e {item!r}: {key!r} is not a variable name")
        if sep:
            env[key] = value
        elif key in source:
            env[key] = source[key]
    return tuple(env.items())


def validate_spec(spec: ContainerSpec) -> None:
    """The combinations Docker refuses, and what this runtime cannot do."""
    validate_name(spec.name)
    if not spec.command and spec.builtin_image and not spec.entrypoint:
        raise RunError("no command given")  # an image's config may still give one
    if spec.workdir and not os.path.isabs(spec.workdir):
        raise RunError(f"invalid -w {spec.workdir!r}: the working directory must be absolute")
    if spec.net.kind == "container":
        if spec.hostname:
            raise RunError("conflicting options: --hostname and --net=container:NAME")
        if spec.net.peer == spec.name:
            raise RunError("a container cannot join its own network namespace")
    if spec.ports and not spec.net.new_netns:
        raise RunError(
            f"conflicting options: -p and --net={spec.net} "
            "(ports are published only for a network namespace of its own)"
        )
    if spec.hostname and (len(spec.hostname) > 64 or "/" in spec.hostname):
        raise RunError(f"invalid --hostname {spec.hostname!r}")
    validate_mounts(spec.mounts)
    _validate_dns(spec.net, spec.dns)
    published = [(p.host_ip, p.host_port, p.protocol) for p in spec.ports]
    if len(set(published)) < len(published):
        raise RunError("-p publishes one host port twice")
    if spec.userns.mode != "host" and not spec.net.new_netns:
        raise RunError(
            f"conflicting options: a user namespace and --net={spec.net} (a container with "
            "its own user namespace needs a network namespace of its own, owned by it)"
        )


def _validate_dns(mode: NetMode, dns: DnsOptions) -> None:
    """Docker's refusals: resolver settings where the container has no resolver file of its
    own to configure, a host gateway where it has no network of its own."""
    if mode.kind == "container" and (dns.resolver_set or dns.extra_hosts):
        raise RunError("conflicting options: --dns*, --add-host and --net=container:NAME "
                       "(the container uses NAME's files)")
    if mode.kind == "host" and dns.resolver_set:
        raise RunError("conflicting options: --dns* and --net=host (the host's resolver)")
    if dns.wants_host_gateway and mode.kind != "bridge":
        raise RunError(f"--add-host NAME:{HOST_GATEWAY} needs a network with a gateway, "
                       f"not --net={mode}")
