"""Destinations: ``ADDR[:PORT[/tcp|udp]]`` (IPv6 in brackets when a port follows)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pycni.probe.errors import ProbeError

__all__ = ["PROTOCOLS", "Destination", "parse_destination"]

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """Where to send; ``port`` None means ICMP only. ``origin`` says why it is probed."""

    address: str
    port: int | None = None
    proto: str = "tcp"
    origin: str = "--to"

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version

    def label(self) -> str:
        host = f"[{self.address}]" if self.version == 6 and self.port is not None else self.address
        return host if self.port is None else f"{host}:{self.port}/{self.proto}"


def _address(text: str, whole: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ProbeError(f"--to {whole!r}: {text!r} is not an IP address") from None


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ProbeError(f"--to {whole!r}: port must be 1..65535")
    return int(text)


def parse_destination(text: str, *, origin: str = "--to") -> Destination:
    """``10.0.0.1``, ``10.0.0.1:80``, ``10.0.0.1:53/udp``, ``fd00::1``, ``[fd00::1]:80/tcp``."""
    rest, slash, proto = text.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in PROTOCOLS:
        raise ProbeError(f"--to {text!r}: protocol must be tcp or udp")
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ProbeError(f"--to {text!r}: expected [IPv6]:PORT")
        port_text = tail[1:] if tail else None
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host, port_text = rest, None  # a bare address, IPv6 included
    address = _address(host, text)
    if port_text is None:
        if slash:
            raise ProbeError(f"--to {text!r}: a protocol needs a port")
        return Destination(address=address, origin=origin)
    return Destination(address=address, port=_port(port_text, text), proto=proto, origin=origin)
