"""`network create`'s pure parts: the subnet picker, names, labels, options, the request."""

from __future__ import annotations

import ipaddress

import pytest

from pycni.cni.errors import CNIError
from pycni.network.names import derive_bridge_name, parse_pairs, validate_network_name
from pycni.network.spec import CreateRequest, Taken, build_spec
from pycni.network.subnets import AddressPool, parse_pool, pick_subnet, ula_pool

net = ipaddress.ip_network
POOL = (AddressPool(net("10.100.0.0/16"), 24),)
V6 = ula_pool(b"machine")
POOLS = (*POOL, V6)


# ------------------------------------------------------------------------------ the picker


def test_the_first_free_network_of_the_pool() -> None:
    assert pick_subnet(POOL, [], 4) == net("10.100.0.0/24")
    assert pick_subnet(POOL, [net("10.100.0.0/24")], 4) == net("10.100.1.0/24")


def test_any_overlap_skips_a_candidate_larger_or_smaller_prefixes_alike() -> None:
    taken = [net("10.100.0.128/25"), net("10.100.1.7/32"), net("10.100.2.0/23"),
             net("10.100.5.0/24")]
    assert pick_subnet(POOL, taken, 4) == net("10.100.4.0/24")


def test_a_wide_route_covering_the_pool_exhausts_it_and_the_next_pool_is_used() -> None:
    pools = (AddressPool(net("10.100.0.0/16"), 24), AddressPool(net("192.168.0.0/16"), 20))
    assert pick_subnet(pools, [net("10.0.0.0/8")], 4) == net("192.168.0.0/20")
    with pytest.raises(CNIError, match="no free IPv4 subnet") as err:
        pick_subnet(pools, [net("10.0.0.0/8"), net("192.168.0.0/16")], 4)
    assert "10.100.0.0/16" in err.value.details


def test_a_full_pool_is_walked_in_steps_of_taken_prefixes() -> None:
    """65535 taken /24s of a /8 pool: the pick is the last one, found without a timeout."""
    pool = (AddressPool(net("10.0.0.0/8"), 24),)
    taken = [net((0x0A000000 + (i << 8), 24)) for i in range(65535)]
    assert pick_subnet(pool, taken, 4) == net("10.255.255.0/24")


def test_families_do_not_block_each_other() -> None:
    assert pick_subnet(POOLS, [net("0.0.0.0/0")], 6) == net(f"{V6.base.network_address}/64")
    assert pick_subnet(POOLS, [net("::/0")], 4) == net("10.100.0.0/24")


def test_ula_pool_is_a_stable_slash_48_under_fd00() -> None:
    assert ula_pool(b"machine") == V6
    assert ula_pool(b"other") != V6
    assert V6.base.prefixlen == 48
    assert V6.size == 64
    assert V6.base.subnet_of(ipaddress.IPv6Network("fd00::/8"))  # type: ignore[arg-type]


@pytest.mark.parametrize("doc", [{"base": "10.0.0.0/8"}, {"base": "10.0.0.5/8", "size": 24},
                                 {"base": "10.0.0.0/16", "size": 8}, "10.0.0.0/8",
                                 {"base": "10.0.0.0/16", "size": 31}])
def test_bad_pools_are_refused(doc: object) -> None:
    with pytest.raises(CNIError):
        parse_pool(doc, where="test")


# ---------------------------------------------------------------------------- names, pairs


@pytest.mark.parametrize("name", ["a/b", "..", ".", "../x", "-a", "a b", "", "x" * 129,
                                  "pycni", "none", "host", "container", "bridge", "a\n"])
def test_bad_network_names(name: str) -> None:
    with pytest.raises(CNIError) as err:
        validate_network_name(name)
    assert err.value.code == 7


@pytest.mark.parametrize("name", ["appnet", "a.b-c_d", "0net", "x" * 128])
def test_good_network_names(name: str) -> None:
    assert validate_network_name(name) == name


def test_bridge_name_is_stable_short_and_avoids_taken_ones() -> None:
    first = derive_bridge_name("appnet", ())
    assert first == derive_bridge_name("appnet", ())
    assert len(first) == 15
    assert first.startswith("pycni-")
    second = derive_bridge_name("appnet", {first})
    assert second != first
    assert len(second) == 15


def test_pairs_keep_the_last_value_and_refuse_an_empty_key() -> None:
    assert parse_pairs(["a=1", "b=x=y", "a=2", "c="], what="label") == \
        {"a": "2", "b": "x=y", "c": ""}
    for bad in ("novalue", "=v", " a=1"):
        with pytest.raises(CNIError, match="invalid label"):
            parse_pairs([bad], what="label")


# ------------------------------------------------------------------------------ the request

TAKEN = Taken(
    networks={"other": "/conf/50-other.conflist"},
    subnets=((net("10.100.0.0/24"), "other"),),
    bridges={"br-other": "other"},
    host_prefixes=(net("10.100.1.0/24"), net("192.168.1.0/24")),
    host_links=frozenset({"eth0"}),
)


def spec_of(**kw: object) -> tuple[object, list[str]]:
    return build_spec(CreateRequest(**{"name": "appnet", **kw}), TAKEN, POOLS)  # type: ignore[arg-type]


def test_a_picked_subnet_skips_other_networks_and_host_prefixes() -> None:
    spec, warnings = build_spec(CreateRequest(name="appnet"), TAKEN, POOLS)
    assert [(str(s.subnet), str(s.gateway), s.picked) for s in spec.subnets] == [
        ("10.100.2.0/24", "10.100.2.1", True)]
    assert warnings == []
    assert spec.bridge == derive_bridge_name("appnet", ())
    assert (spec.internal, spec.ip_masq, spec.isolate, spec.mtu) == (False, True, True, None)


def test_given_subnet_gateway_and_range() -> None:
    spec, _ = build_spec(CreateRequest(name="appnet", subnets=("172.30.0.0/16",),
                                       gateways=("172.30.0.254",), ip_ranges=("172.30.5.0/24",)),
                         TAKEN, POOLS)
    (only,) = spec.subnets
    assert (str(only.subnet), str(only.gateway), str(only.ip_range), only.picked) == (
        "172.30.0.0/16", "172.30.0.254", "172.30.5.0/24", False)


def test_ipv6_adds_a_ula_slash_64_and_a_given_v6_subnet_implies_it() -> None:
    spec, _ = build_spec(CreateRequest(name="appnet", ipv6=True), TAKEN, POOLS)
    assert [s.subnet.version for s in spec.subnets] == [4, 6]
    assert spec.subnets[1].subnet.subnet_of(V6.base)  # type: ignore[arg-type]
    assert str(spec.subnets[1].gateway).endswith("::1")
    spec, _ = build_spec(CreateRequest(name="appnet", subnets=("fd99::/64",)), TAKEN, POOLS)
    assert [str(s.subnet) for s in spec.subnets] == ["10.100.2.0/24", "fd99::/64"]


def test_a_given_subnet_over_a_host_route_is_allowed_with_a_warning() -> None:
    spec, warnings = build_spec(CreateRequest(name="appnet", subnets=("192.168.1.0/25",)),
                                TAKEN, POOLS)
    assert str(spec.subnets[0].subnet) == "192.168.1.0/25"
    assert warnings == ["subnet 192.168.1.0/25 overlaps 192.168.1.0/24, routed by the host"]


def test_internal_turns_masquerade_off_and_options_map_to_knobs() -> None:
    spec, _ = build_spec(CreateRequest(name="appnet", internal=True, options=(
        "com.docker.network.driver.mtu=1400", "isolate=false",
        "com.docker.network.bridge.enable_icc=false", "com.docker.network.bridge.name=br0")),
        TAKEN, POOLS)
    assert (spec.internal, spec.ip_masq, spec.mtu, spec.isolate, spec.icc, spec.bridge) == (
        True, False, 1400, False, False, "br0")
    assert dict(spec.options)["isolate"] == "false"


@pytest.mark.parametrize(("kw", "message"), [
    ({"name": "other"}, "already exists"),
    ({"name": "a/b"}, "invalid network name"),
    ({"name": ".."}, "invalid network name"),
    ({"subnets": ("10.100.0.128/25",)}, "overlaps 10.100.0.0/24 of network 'other'"),
    ({"subnets": ("10.1.0.0/24", "10.2.0.0/24")}, "more than one IPv4 subnet"),
    ({"subnets": ("10.1.0.5/24",)}, "host bits are set; did you mean 10.1.0.0/24"),
    ({"subnets": ("10.1.0.0",)}, "prefix length is missing"),
    ({"subnets": ("banana/24",)}, "invalid subnet"),
    ({"subnets": ("10.1.0.0/31",)}, "too small"),
    ({"subnets": ("10.1.0.0/24",), "gateways": ("10.2.0.1",)}, "gateway 10.2.0.1 is outside"),
    ({"gateways": ("10.100.2.1",)}, "none given: use --subnet"),
    ({"subnets": ("10.1.0.0/24",), "gateways": ("10.1.0.255",)}, "broadcast"),
    ({"subnets": ("10.1.0.0/24",), "gateways": ("10.1.0.1", "10.1.0.2")}, "two gateways"),
    ({"subnets": ("10.1.0.0/24",), "ip_ranges": ("10.1.1.0/25",)}, "IP range 10.1.1.0/25 is out"),
    ({"subnets": ("10.1.0.0/24",), "ip_ranges": ("10.1.0.0/16",)}, "IP range 10.1.0.0/16 is out"),
    ({"mtu": 40}, "68..65535"),
    ({"options": ("mtu=abc",)}, "expected a number"),
    ({"mtu": 1400, "options": ("mtu=1500",)}, "contradicts --mtu"),
    ({"options": ("vlan=5",)}, "unsupported option 'vlan'"),
    ({"options": ("isolate=maybe",)}, "expected true or false"),
    ({"internal": True, "options": ("com.docker.network.bridge.enable_ip_masquerade=true",)},
     "cannot masquerade"),
    ({"bridge": "br-other"}, "taken by network 'other'"),
    ({"bridge": "a-bridge-name-too-long"}, "invalid bridge name"),
    ({"bridge": "a/b"}, "invalid bridge name"),
    ({"labels": ("nokey",)}, "invalid label"),
])
def test_bad_requests_are_refused_with_code_7(kw: dict[str, object], message: str) -> None:
    with pytest.raises(CNIError) as err:
        spec_of(**kw)
    assert err.value.code == 7
    assert message in str(err.value)


def test_an_exhausted_pool_is_refused() -> None:
    full = Taken(subnets=((net("10.100.0.0/16"), "big"),))
    with pytest.raises(CNIError, match="no free IPv4 subnet"):
        build_spec(CreateRequest(name="appnet"), full, POOLS)
