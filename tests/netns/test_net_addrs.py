"""pycni.net.addrs against the real kernel, inside a throwaway namespace.

Each test gets a veth pair with both ends up inside ``host_ns`` (so it has carrier and IPv6
DAD really runs) and reads results back through pyroute2 and ``ip -j``.
"""

from __future__ import annotations

import json
import socket
import subprocess
from typing import Any

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.net import addrs, links, netns
from pycni.net.ipr import open_ipr

IFA_F_TENTATIVE = 0x40


def ip_json(ns: str, *argv: str) -> Any:
    """``ip -j ...`` run inside ``ns`` (the child inherits the calling thread's netns)."""
    with netns.enter(ns):
        out = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def addr_info(ns: str, dev: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = ip_json(ns, "addr", "show", "dev", dev)[0]["addr_info"]
    return result


@pytest.fixture
def dev(host_ns: str) -> int:
    """Index of ``t0``, one end of a veth pair (both ends up) inside ``host_ns``."""
    with open_ipr(host_ns) as ipr:
        ipr.link("add", ifname="t0", kind="veth", peer="t1")
        for name in ("t0", "t1"):
            link = links.get_link(ipr, name)
            assert link is not None
            links.set_up(ipr, link.index)
        t0 = links.get_link(ipr, "t0")
        assert t0 is not None
        return t0.index


# ---------------------------------------------------------------------------- addresses


def test_add_ipv4_address_idempotent(host_ns: str, dev: int) -> None:
    with open_ipr(host_ns) as ipr:
        addrs.add_address(ipr, dev, "10.1.0.5/24")
        addrs.add_address(ipr, dev, "10.1.0.5/24")  # EEXIST is success
        assert addrs.list_addresses(ipr, dev) == ["10.1.0.5/24"]
    v4 = [a for a in addr_info(host_ns, "t0") if a["family"] == "inet"]
    assert len(v4) == 1
    assert (v4[0]["local"], v4[0]["prefixlen"], v4[0]["broadcast"]) == (
        "10.1.0.5",
        24,
        "10.1.0.255",
    )


def test_ipv6_nodad_is_not_tentative(host_ns: str, dev: int) -> None:
    with open_ipr(host_ns) as ipr:
        addrs.add_address(ipr, dev, "fd00::5/64", nodad=True)
        addrs.add_address(ipr, dev, "fd00::6/64")
        flags = {
            m.get_attr("IFA_ADDRESS"): m.get_attr("IFA_FLAGS")
            for m in ipr.addr("dump", index=dev, family=socket.AF_INET6)
        }
    assert not flags["fd00::5"] & IFA_F_TENTATIVE
    assert flags["fd00::6"] & IFA_F_TENTATIVE  # DAD runs without nodad: the contrast
    seen = {a["local"]: a for a in addr_info(host_ns, "t0")}
    assert "tentative" not in seen["fd00::5"]
    assert seen["fd00::6"].get("tentative") is True


def test_wait_addresses_settled(host_ns: str, dev: int) -> None:
    with open_ipr(host_ns) as ipr:
        addrs.add_address(ipr, dev, "fd00::7/64")
        addrs.wait_addresses_settled(ipr, dev, timeout=10.0)
        tentative = [
            m
            for m in ipr.addr("dump", index=dev, family=socket.AF_INET6)
            if m.get_attr("IFA_FLAGS") & IFA_F_TENTATIVE
        ]
    assert tentative == []


def test_list_addresses_global_and_by_family(host_ns: str, dev: int) -> None:
    with open_ipr(host_ns) as ipr:
        addrs.add_address(ipr, dev, "10.1.0.5/24")
        addrs.add_address(ipr, dev, "fd00::5/64", nodad=True)
        both = addrs.list_addresses(ipr, dev)
        v4 = addrs.list_addresses(ipr, dev, family=socket.AF_INET)
        v6 = addrs.list_addresses(ipr, dev, family=socket.AF_INET6)
    assert sorted(both) == ["10.1.0.5/24", "fd00::5/64"]  # no fe80:: link-local
    assert v4 == ["10.1.0.5/24"]
    assert v6 == ["fd00::5/64"]


def test_delete_address(host_ns: str, dev: int) -> None:
    with open_ipr(host_ns) as ipr:
        addrs.add_address(ipr, dev, "10.1.0.5/24")
        addrs.add_address(ipr, dev, "fd00::5/64", nodad=True)
        addrs.delete_address(ipr, dev, "10.1.0.5/24")
        addrs.delete_address(ipr, dev, "10.1.0.5/24")  # absent: fine
        addrs.delete_address(ipr, dev, "fd00::5/64")
        addrs.delete_address(ipr, 4242, "10.9.9.9/24")  # absent link: fine
        assert addrs.list_addresses(ipr, dev) == []
    assert [a for a in addr_info(host_ns, "t0") if a["scope"] == "global"] == []


@pytest.mark.parametrize("cidr", ["10.1.0.300/24", "nonsense", "10.1.0.5/33"])
def test_add_address_rejects_bad_cidr(host_ns: str, dev: int, cidr: str) -> None:
    with open_ipr(host_ns) as ipr, pytest.raises(CNIError) as info:
        addrs.add_address(ipr, dev, cidr)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


# ---------------------------------------------------------------------------- routes


@pytest.fixture
def addressed(host_ns: str, dev: int) -> int:
    with open_ipr(host_ns) as ipr:
        addrs.add_address(ipr, dev, "10.1.0.5/24")
        addrs.add_address(ipr, dev, "fd00::5/64", nodad=True)
    return dev


def test_default_routes_v4_v6(host_ns: str, addressed: int) -> None:
    with open_ipr(host_ns) as ipr:
        for _ in range(2):  # EEXIST is success
            addrs.add_route(ipr, dst="0.0.0.0/0", gateway="10.1.0.1", index=addressed)
            addrs.add_route(ipr, dst="::/0", gateway="fd00::1", index=addressed)
        routes = addrs.list_routes(ipr, index=addressed)
        v4 = addrs.list_routes(ipr, index=addressed, family=socket.AF_INET)
    defaults = {r.dst: r for r in routes if r.dst in ("0.0.0.0/0", "::/0")}
    assert defaults["0.0.0.0/0"].gateway == "10.1.0.1"
    assert defaults["::/0"].gateway == "fd00::1"
    assert all(r.index == addressed and r.table == 254 for r in defaults.values())
    assert {r.dst for r in v4} == {"0.0.0.0/0", "10.1.0.0/24"}  # plus the kernel's subnet route
    seen4 = ip_json(host_ns, "route", "show", "default")
    seen6 = ip_json(host_ns, "-6", "route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in seen4] == [("10.1.0.1", "t0")]
    assert [(r["gateway"], r["dev"]) for r in seen6] == [("fd00::1", "t0")]


def test_route_with_metrics_priority_table(host_ns: str, addressed: int) -> None:
    with open_ipr(host_ns) as ipr:
        addrs.add_route(
            ipr,
            dst="192.168.9.0/24",
            gateway="10.1.0.1",
            index=addressed,
            mtu=1300,
            advmss=1200,
            priority=7,
            table=100,
        )
        in_table = addrs.list_routes(ipr, table=100)
        in_main = addrs.list_routes(ipr)
    assert in_table == [
        addrs.RouteInfo(
            dst="192.168.9.0/24",
            gateway="10.1.0.1",
            index=addressed,
            priority=7,
            table=100,
            scope=0,
            mtu=1300,
            advmss=1200,
        )
    ]
    assert all(r.dst != "192.168.9.0/24" for r in in_main)
    seen = ip_json(host_ns, "route", "show", "table", "100")
    assert seen[0]["dst"] == "192.168.9.0/24"
    assert seen[0]["metric"] == 7
    assert {"mtu": 1300, "advmss": 1200}.items() <= seen[0]["metrics"][0].items()


def test_link_scope_route_and_delete(host_ns: str, addressed: int) -> None:
    with open_ipr(host_ns) as ipr:
        addrs.add_route(ipr, dst="192.168.10.0/24", gateway=None, index=addressed, scope=253)
        (route,) = [r for r in addrs.list_routes(ipr) if r.dst == "192.168.10.0/24"]
        assert (route.gateway, route.scope) == (None, 253)
        assert addrs.delete_route(ipr, dst="192.168.10.0/24", index=addressed) is True
        assert addrs.delete_route(ipr, dst="192.168.10.0/24", index=addressed) is False
        addrs.add_route(ipr, dst="fd01::/64", gateway="fd00::1", index=addressed)
        assert addrs.delete_route(ipr, dst="fd01::/64") is True
        assert addrs.delete_route(ipr, dst="fd01::/64") is False
    assert ip_json(host_ns, "route", "show", "192.168.10.0/24") == []


def test_add_route_rejects_mixed_families(host_ns: str, addressed: int) -> None:
    with open_ipr(host_ns) as ipr, pytest.raises(CNIError) as info:
        addrs.add_route(ipr, dst="0.0.0.0/0", gateway="fd00::1", index=addressed)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_add_route_unreachable_gateway_is_cni_error(host_ns: str, addressed: int) -> None:
    with open_ipr(host_ns) as ipr, pytest.raises(CNIError) as info:
        addrs.add_route(ipr, dst="0.0.0.0/0", gateway="172.31.0.1", index=addressed)
    assert "0.0.0.0/0" in info.value.msg
