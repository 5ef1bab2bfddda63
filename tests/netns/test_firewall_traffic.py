"""Masquerade proven with packets, for each backend and IP version.

Sandbox: container --veth-- host --veth-- outside. The outside namespace has an address on
the host's link only and no route back to the container subnet, so the container reaches it
only if the host rewrites the container's source address. Echo requests are sent from a raw
socket opened inside the container namespace (no ping binary needed); a TCP connection shows
which source address the outside really saw.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import ParamSpec, TypeVar

import pytest

from pycni.firewall import MasqueradeFacet
from pycni.firewall.iptables.masquerade import IptMasquerade
from pycni.firewall.model import AttachmentKey, Masquerade
from pycni.firewall.nftables.masquerade import NftMasquerade
from pycni.net import netns
from tests.conftest import MakeNetNS

ADDR = {
    4: {"container": "10.77.0.2", "host_in": "10.77.0.1", "host_out": "192.0.2.1",
        "outside": "192.0.2.2", "subnet": "10.77.0.0/24", "out_subnet": "192.0.2.0/24",
        "len": "24"},
    6: {"container": "fd77::2", "host_in": "fd77::1", "host_out": "2001:db8:2::1",
        "outside": "2001:db8:2::2", "subnet": "fd77::/64", "out_subnet": "2001:db8:2::/64",
        "len": "64"},
}
P = ParamSpec("P")
R = TypeVar("R")
_idents = count(0x4000)
REPLY = 3.0  # the wait when a reply must come (returns as soon as it does)
NO_REPLY = 0.5  # the wait that proves there is none: replies here take well under 10 ms


@dataclass(frozen=True)
class Sandbox:
    host: str
    container: str
    outside: str


def ip(ns: str, *args: str) -> None:
    with netns.enter(ns):
        subprocess.run(["ip", *args], check=True, capture_output=True)


def write_sysctl(ns: str, path: str, value: str) -> None:
    with netns.enter(ns), open(path, "w") as f:
        f.write(value)


def _address(ns: str, dev: str, v: int, addr: str) -> None:
    nodad = ["nodad"] if v == 6 else []
    ip(ns, f"-{v}", "addr", "add", f"{addr}/{ADDR[v]['len']}", "dev", dev, *nodad)


@pytest.fixture
def sandbox(host_ns: str, container_ns: str, make_netns: MakeNetNS) -> Sandbox:
    outside = make_netns("outside")
    ip(host_ns, "link", "add", "h0", "type", "veth", "peer", "name", "eth0", "netns", container_ns)
    ip(host_ns, "link", "add", "h1", "type", "veth", "peer", "name", "eth0", "netns", outside)
    for v in (4, 6):
        _address(host_ns, "h0", v, ADDR[v]["host_in"])
        _address(host_ns, "h1", v, ADDR[v]["host_out"])
        _address(container_ns, "eth0", v, ADDR[v]["container"])
        _address(outside, "eth0", v, ADDR[v]["outside"])
    for ns, dev in ((host_ns, "h0"), (host_ns, "h1"), (container_ns, "eth0"), (container_ns, "lo"),
                    (outside, "eth0")):
        ip(ns, "link", "set", dev, "up")
    for v in (4, 6):
        ip(container_ns, f"-{v}", "route", "add", "default", "via", ADDR[v]["host_in"])
    write_sysctl(host_ns, "/proc/sys/net/ipv4/ip_forward", "1")
    write_sysctl(host_ns, "/proc/sys/net/ipv6/conf/all/forwarding", "1")
    # Resolve every neighbour first: an IPv6 reply otherwise waits up to a second for ND.
    for v in (4, 6):
        assert ping(container_ns, v, ADDR[v]["host_in"], timeout=3), "sandbox: host unreachable"
        assert ping(outside, v, ADDR[v]["host_out"], timeout=3), "sandbox: outside unreachable"
    return Sandbox(host=host_ns, container=container_ns, outside=outside)


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def ping(ns: str, v: int, dst: str, *, timeout: float) -> bool:
    """One echo request from inside ``ns``; True if its reply came back within ``timeout``."""
    ident = next(_idents)  # a new ICMP id is a new conntrack flow, untouched by earlier NAT
    family, proto = (socket.AF_INET, socket.IPPROTO_ICMP) if v == 4 else \
        (socket.AF_INET6, socket.IPPROTO_ICMPV6)
    request, reply = (8, 0) if v == 4 else (128, 129)
    with netns.enter(ns):
        sock = socket.socket(family, socket.SOCK_RAW, proto)
    with sock:
        body = struct.pack("!BBHHH", request, 0, 0, ident, 1) + b"pycni"
        if v == 4:  # the kernel fills the ICMPv6 checksum itself, not the ICMPv4 one
            body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
        sock.sendto(body, (dst, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(2048)
            except TimeoutError:
                return False
            icmp = data[(data[0] & 0x0F) * 4:] if v == 4 else data
            kind, _, _, got, _ = struct.unpack("!BBHHH", icmp[:8])
            if kind == reply and got == ident:
                return True
    return False


def source_seen_outside(sb: Sandbox, v: int) -> str | None:
    """Connect from the container to a listener outside; the peer address the listener saw."""
    family = socket.AF_INET if v == 4 else socket.AF_INET6
    with netns.enter(sb.outside):
        server = socket.socket(family, socket.SOCK_STREAM)
    with netns.enter(sb.container):
        client = socket.socket(family, socket.SOCK_STREAM)
    with server, client:
        server.bind((ADDR[v]["outside"], 0))
        server.listen(1)
        server.settimeout(3.0)
        client.settimeout(3.0)
        try:
            client.connect((ADDR[v]["outside"], server.getsockname()[1]))
            conn, peer = server.accept()
        except OSError:
            return None
        conn.close()
        return str(peer[0])


@pytest.fixture(params=["nftables", "iptables"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MasqueradeFacet]:
    if request.param == "nftables":
        yield NftMasquerade()
    else:
        yield IptMasquerade(lock_path=str(tmp_path / "iptables.lock"))


def in_ns(ns: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    with netns.enter(ns):
        return fn(*args, **kwargs)


@pytest.mark.parametrize("v", [4, 6])
def test_masquerade_makes_outside_reachable(
        sandbox: Sandbox, backend: MasqueradeFacet, v: int) -> None:
    key = AttachmentKey("pycni", "ctr1", "eth0")
    m = Masquerade(key=key, network_subnets=(ADDR[v]["subnet"],), sources=(ADDR[v]["container"],))
    outside = ADDR[v]["outside"]

    assert not ping(sandbox.container, v, outside, timeout=NO_REPLY), \
        "outside reachable without masquerade"

    in_ns(sandbox.host, backend.setup, m)
    assert ping(sandbox.container, v, outside, timeout=REPLY)
    assert source_seen_outside(sandbox, v) == ADDR[v]["host_out"]
    assert in_ns(sandbox.host, backend.check, m) == []

    in_ns(sandbox.host, backend.teardown, key)
    assert not ping(sandbox.container, v, outside, timeout=NO_REPLY)


@pytest.mark.parametrize("v", [4, 6])
def test_network_subnets_are_not_masqueraded(
        sandbox: Sandbox, backend: MasqueradeFacet, v: int) -> None:
    # Declaring the outside subnet part of the network exempts it: no rewrite, no reply.
    m = Masquerade(key=AttachmentKey("pycni", "ctr1", "eth0"),
                   network_subnets=(ADDR[v]["subnet"], ADDR[v]["out_subnet"]),
                   sources=(ADDR[v]["container"],))
    in_ns(sandbox.host, backend.setup, m)
    assert not ping(sandbox.container, v, ADDR[v]["outside"], timeout=NO_REPLY)
