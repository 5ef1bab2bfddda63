"""What a container asks of the network, from Docker's options, validated before anything runs.

``--network`` (or ``--net``) is repeatable. A mode (``bridge``/``default``, ``none``, ``host``,
``container:NAME``) or a CNI network's name; Docker's long form
``name=NET,ip=IP,ip6=IP6,mac-address=MAC,alias=A`` sets per-network options, and ``--ip``,
``--ip6``, ``--mac-address`` and ``--network-alias`` apply to the first network. ``bridge``
is the ``pycni`` network and may be combined with user networks; ``none``, ``host`` and
``container:NAME`` stand alone. ``--dns``, ``--dns-search``, ``--dns-option`` and
``--add-host NAME:IP`` (``host-gateway``: the first network's gateway) go to the container's
``/etc/resolv.conf`` and ``/etc/hosts``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from pycni_run.errors import RunError
from pycni_run.spec import (
    DEFAULT_NETWORK,
    HOST_GATEWAY,
    DnsOptions,
    NetMode,
    NetworkRequest,
    parse_net,
)

__all__ = ["parse_connect", "parse_dns_options", "parse_networks"]

_MODE_WORDS: Final = ("bridge", "default", "none", "host")
_LONG_KEYS: Final = ("name", "ip", "ip6", "mac-address", "alias")
_DOCKER_ONLY_KEYS: Final = ("driver-opt", "link-local-ip", "gw-priority", "interface-name")
_MAC_RE: Final = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_DOMAIN_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def _address(text: str, version: int, what: str) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise RunError(f"invalid {what} {text!r}: not an IP address") from None
    if ip.version != version:
        raise RunError(f"invalid {what} {text!r}: not an IPv{version} address")
    return str(ip)


def _mac(text: str) -> str:
    if not _MAC_RE.fullmatch(text):
        raise RunError(f"invalid MAC address {text!r}: use six hex pairs, 02:42:ac:11:00:02")
    if int(text[:2], 16) & 1:
        raise RunError(f"invalid MAC address {text!r}: a multicast address")
    return text.lower()


def _alias(text: str) -> str:
    if not _HOSTNAME_RE.fullmatch(text) or len(text) > 253:
        raise RunError(f"invalid network alias {text!r}: letters, digits, '_', '.', '-'")
    return text


def _network_name(text: str) -> str:
    from pycni.cni.errors import CNIError
    from pycni.cni.names import validate_network_name

    try:
        validate_network_name(text)
    except CNIError as err:
        raise RunError(f"invalid --network {text!r}: {err.details}") from None
    return DEFAULT_NETWORK if text in ("bridge", "default") else text


def _long_form(text: str) -> NetworkRequest:
    """``name=NET,ip=IP,ip6=IP6,mac-address=MAC,alias=A[,alias=B]``."""
    values: dict[str, list[str]] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if key in _DOCKER_ONLY_KEYS:
            raise RunError(f"--network {text!r}: {key} is not supported")
        if not sep or key not in _LONG_KEYS or not value:
            raise RunError(f"invalid --network {text!r}: use name=NET[,ip=IP][,ip6=IP6]"
                           "[,mac-address=MAC][,alias=NAME]...")
        if key != "alias" and key in values:
            raise RunError(f"invalid --network {text!r}: {key} given twice")
        values.setdefault(key, []).append(value)
    if "name" not in values:
        raise RunError(f"invalid --network {text!r}: name=NET is missing")
    name = values["name"][0]
    if ":" in name or name in ("none", "host"):
        raise RunError(f"--network {text!r}: per-network options need a CNI network, "
                       f"not the {name.partition(':')[0]} mode")
    ips = [_address(v, 4, "ip") for v in values.get("ip", [])]
    ips += [_address(v, 6, "ip6") for v in values.get("ip6", [])]
    return NetworkRequest(name=_network_name(name), ips=tuple(ips),
                          mac=_mac(values["mac-address"][0]) if "mac-address" in values else "",
                          aliases=tuple(_alias(a) for a in values.get("alias", [])))


def _request(text: str) -> NetworkRequest | NetMode:
    if text in _MODE_WORDS or text.startswith("container:"):
        mode = parse_net(text)
        return NetworkRequest(name=DEFAULT_NETWORK) if mode.kind == "bridge" else mode
    if "=" in text:
        return _long_form(text)
    return NetworkRequest(name=_network_name(text))


def _with_first_options(first: NetworkRequest, *, ip: str, ip6: str, mac: str,
                        aliases: Sequence[str]) -> NetworkRequest:
    """``--ip``, ``--ip6``, ``--mac-address``, ``--network-alias`` on the first network."""
    ips = list(first.ips)
    for text, version, flag in ((ip, 4, "--ip"), (ip6, 6, "--ip6")):
        if not text:
            continue
        if any(ipaddress.ip_address(x).version == version for x in ips):
            raise RunError(f"conflicting options: {flag} and the per-network ip of "
                           f"network {first.name}")
        ips.append(_address(text, version, flag))
    if mac and first.mac:
        raise RunError(f"conflicting options: --mac-address and the per-network "
                       f"mac-address of network {first.name}")
    return replace(first, ips=tuple(ips), mac=_mac(mac) if mac else first.mac,
                   aliases=(*first.aliases, *(_alias(a) for a in aliases)))


def parse_networks(values: Sequence[str], *, ip: str = "", ip6: str = "", mac: str = "",
                   aliases: Sequence[str] = ()) -> tuple[NetMode, tuple[NetworkRequest, ...]]:
    """The mode and, for ``bridge``, the networks in attachment order (the first is eth0) of
    ``--network`` values; none given means ``bridge`` (the ``pycni`` network)."""
    parsed = [_request(v) for v in values] or [NetworkRequest(name=DEFAULT_NETWORK)]
    modes = [p for p in parsed if isinstance(p, NetMode)]
    if modes:
        if len(parsed) > 1:
            raise RunError(f"conflicting options: --network={modes[0]} cannot be combined "
                           "with other networks")
        if ip or ip6 or mac or aliases:
            raise RunError(f"conflicting options: --ip, --ip6, --mac-address and "
                           f"--network-alias need a CNI network, not --network={modes[0]}")
        return modes[0], ()
    requests = [p for p in parsed if isinstance(p, NetworkRequest)]
    names = [r.name for r in requests]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RunError(f"network {repeated[0]} is given more than once")
    for request in requests:
        if len({ipaddress.ip_address(x).version for x in request.ips}) < len(request.ips):
            raise RunError(f"network {request.name}: one IPv4 and one IPv6 address at most")
    first = _with_first_options(requests[0], ip=ip, ip6=ip6, mac=mac, aliases=aliases)
    return NetMode("bridge"), (first, *requests[1:])


def parse_connect(network: str, *, ip: str = "", ip6: str = "",
                  aliases: Sequence[str] = ()) -> NetworkRequest:
    """`network connect [--ip IP] [--ip6 IP] [--alias A]... NETWORK CONTAINER`."""
    request = _request(network)
    if isinstance(request, NetMode) or request.ips or request.mac or request.aliases:
        raise RunError(f"cannot connect a container to {network!r}: name a CNI network")
    return _with_first_options(request, ip=ip, ip6=ip6, mac="", aliases=aliases)


def _host_entry(text: str) -> tuple[str, str]:
    """``NAME:IP`` (Docker splits at the first ':' so that ``NAME:::1`` is IPv6)."""
    name, sep, address = text.partition(":")
    if not sep or not _HOSTNAME_RE.fullmatch(name):
        raise RunError(f"invalid --add-host {text!r}: use NAME:IP or NAME:{HOST_GATEWAY}")
    if address == HOST_GATEWAY:
        return name, address
    try:
        return name, str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        raise RunError(f"invalid --add-host {text!r}: {address!r} is not an IP address") from None


def parse_dns_options(*, servers: Sequence[str] = (), search: Sequence[str] = (),
                      options: Sequence[str] = (), add_hosts: Sequence[str] = ()) -> DnsOptions:
    for server in servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise RunError(f"invalid --dns {server!r}: not an IP address") from None
    for domain in search:
        if not _DOMAIN_RE.fullmatch(domain):
            raise RunError(f"invalid --dns-search {domain!r}")
    for option in options:
        if not option or any(c.isspace() for c in option):
            raise RunError(f"invalid --dns-option {option!r}")
    return DnsOptions(servers=tuple(str(ipaddress.ip_address(s)) for s in servers),
                      search=tuple(search), options=tuple(options),
                      extra_hosts=tuple(_host_entry(h) for h in add_hosts))
