"""The host's sockets a published port would take traffic from: what a host process listens on
in the plugin's own network namespace (``/proc/thread-self/net/*``), read on each reservation
(a conflict fails ADD, naming the owner) and scanned for the owner on the error path only."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode

__all__ = ["Listener", "listeners", "parse_proc_net", "parse_sctp_eps", "socket_owner"]

_PROC_NET: Final = "/proc/thread-self/net"
_TCP_LISTEN: Final = "0A"
_UDP_UNCONNECTED: Final = "07"


@dataclass(frozen=True, slots=True)
class Listener:
    """A socket of the host netns that would lose its traffic to a mapping on its port."""

    protocol: str
    address: str
    port: int
    inode: int

    @property
    def reservation(self) -> str:
        """As a reservation name: a v4 wildcard claims all IPv4, a v6 one everything (it is
        dual-stack unless IPV6_V6ONLY, which /proc does not show)."""
        if self.address == "0.0.0.0":  # noqa: S104 - reading, not binding
            return "any4"
        if self.address == "::":
            return "any"
        return self.address

    def describe(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}/{self.protocol}"


def _hex_addr(text: str) -> str:
    """A /proc/net address: 32-bit words of network-order bytes printed in host order."""
    raw = b"".join(struct.pack("=I", int(text[i:i + 8], 16)) for i in range(0, len(text), 8))
    addr = ipaddress.ip_address(raw)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def parse_proc_net(text: str, protocol: str) -> list[Listener]:
    """Listening TCP / unconnected bound UDP sockets of a ``/proc/net/{tcp,udp}[6]`` table."""
    wanted = _TCP_LISTEN if protocol == "tcp" else _UDP_UNCONNECTED
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != wanted:
            continue
        addr, _, port = fields[1].partition(":")
        out.append(Listener(protocol, _hex_addr(addr), int(port, 16), int(fields[9])))
    return out


def parse_sctp_eps(text: str) -> list[Listener]:
    """SCTP endpoints of ``/proc/net/sctp/eps`` (one per local address; none = wildcard)."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or not fields[5].isdigit():
            continue
        for addr in fields[8:] or ["::"]:
            with contextlib.suppress(ValueError):
                out.append(Listener("sctp", str(ipaddress.ip_address(addr)), int(fields[5]),
                                    int(fields[7])))
    return out


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except FileNotFoundError:
        return ""  # no IPv6 / no SCTP module here: no such sockets either
    except OSError as err:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot read {path}", str(err)) from err


def listeners(protocols: Iterable[str]) -> list[Listener]:
    """The listening sockets of the calling thread's netns, for the given protocols."""
    found: list[Listener] = []
    for proto in set(protocols):
        if proto == "sctp":
            found += parse_sctp_eps(_read(f"{_PROC_NET}/sctp/eps"))
            continue
        for table in (proto, f"{proto}6"):
            found += parse_proc_net(_read(f"{_PROC_NET}/{table}"), proto)
    return found


def socket_owner(inode: int) -> str:
    """"pid N (comm)" of a process holding socket ``inode`` (error path only: scans /proc)."""
    target = f"socket:[{inode}]"
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        fd_dir = f"/proc/{pid}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        return f"pid {pid} ({_read(f'/proc/{pid}/comm').strip()})"
    return f"socket inode {inode}, owner not found"
