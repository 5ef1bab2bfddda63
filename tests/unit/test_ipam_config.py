"""host-local config parsing: defaults, legacy keys, ipRanges, and every validation error."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.cni.errors import CNIError, ErrorCode
from pycni.ipam.config import (
    DEFAULT_DATA_DIR,
    IPRange,
    RouteSpec,
    load_config,
    parse_ipam_config,
    validate_network_name,
)
from pycni.ipam.requested import requested_ips


def _error(ipam: object, runtime_config: dict[str, Any] | None = None, **kw: Any) -> CNIError:
    with pytest.raises(CNIError) as info:
        parse_ipam_config(ipam, runtime_config=runtime_config, **kw)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert info.value.code == 7
    return info.value


def _one(subnet: str, **extra: str) -> dict[str, Any]:
    return {"ranges": [[{"subnet": subnet, **extra}]]}


# -- defaults ---------------------------------------------------------------------------


def test_ipv4_defaults() -> None:
    conf = parse_ipam_config(_one("10.1.0.0/24"))
    assert conf.range_sets == (
        (
            IPRange(
                subnet=IPv4Network("10.1.0.0/24"),
                range_start=IPv4Address("10.1.0.1"),
                range_end=IPv4Address("10.1.0.254"),  # broadcast - 1
                gateway=IPv4Address("10.1.0.1"),
            ),
        ),
    )
    assert conf.data_dir == DEFAULT_DATA_DIR == "/run/pycni/ipam"
    assert conf.routes == ()
    assert conf.resolv_conf is None


def test_ipv6_defaults_end_at_last_address() -> None:
    (rng,) = parse_ipam_config(_one("2001:db8::/64")).range_sets[0]
    assert rng.range_start == IPv6Address("2001:db8::1")
    assert rng.range_end == IPv6Address("2001:db8::ffff:ffff:ffff:ffff")
    assert rng.gateway == IPv6Address("2001:db8::1")


def test_explicit_fields_kept() -> None:
    ipam = _one("10.1.0.0/24", rangeStart="10.1.0.10", rangeEnd="10.1.0.20", gateway="10.1.0.254")
    (rng,) = parse_ipam_config(ipam).range_sets[0]
    assert (str(rng.range_start), str(rng.range_end), str(rng.gateway)) == (
        "10.1.0.10",
        "10.1.0.20",
        "10.1.0.254",
    )


def test_empty_strings_mean_default() -> None:
    # The reference decodes "" as "not given" (Go's net.IP), so configs in the wild use it.
    (rng,) = parse_ipam_config(_one("10.1.0.0/24", rangeStart="", gateway="")).range_sets[0]
    assert rng.range_start == rng.gateway == IPv4Address("10.1.0.1")


def test_dual_stack_one_set_per_family() -> None:
    conf = parse_ipam_config(
        {
            "ranges": [
                [{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24"}],
                [{"subnet": "fd00::/64"}],
            ]
        }
    )
    assert [[r.version for r in rs] for rs in conf.range_sets] == [[4, 4], [6]]


def test_legacy_top_level_range_is_set_zero() -> None:
    conf = parse_ipam_config(
        {"subnet": "10.9.0.0/16", "rangeStart": "10.9.1.0", "ranges": [[{"subnet": "fd00::/64"}]]}
    )
    assert [str(rs[0].subnet) for rs in conf.range_sets] == ["10.9.0.0/16", "fd00::/64"]
    assert str(conf.range_sets[0][0].range_start) == "10.9.1.0"


def test_runtime_ip_ranges_are_prepended() -> None:
    conf = parse_ipam_config(
        {"subnet": "10.9.0.0/16", "ranges": [[{"subnet": "10.8.0.0/16"}]]},
        runtime_config={"ipRanges": [[{"subnet": "10.7.0.0/16"}]]},
    )
    assert [str(rs[0].subnet) for rs in conf.range_sets] == [
        "10.7.0.0/16",
        "10.9.0.0/16",
        "10.8.0.0/16",
    ]


def test_empty_runtime_ip_ranges_ignored() -> None:
    conf = parse_ipam_config(_one("10.1.0.0/24"), runtime_config={"ipRanges": []})
    assert len(conf.range_sets) == 1


def test_disjoint_ranges_of_one_subnet_in_two_sets_allowed() -> None:
    a = {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.2", "rangeEnd": "10.1.0.100"}
    b = {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.101", "rangeEnd": "10.1.0.200"}
    assert len(parse_ipam_config({"ranges": [[a], [b]]}).range_sets) == 2


def test_routes_data_dir_resolv_conf() -> None:
    conf = parse_ipam_config(
        {
            **_one("10.1.0.0/24"),
            "routes": [
                {"dst": "0.0.0.0/0"},
                {"dst": "192.168.1.7/16", "gw": "10.1.0.254", "mtu": 1400, "advmss": 1360,
                 "priority": 100, "table": 254, "scope": 0},
            ],
            "dataDir": "/tmp/ipam",
            "resolvConf": "/etc/resolv.conf",
        }
    )
    assert conf.routes == (
        RouteSpec(dst=IPv4Network("0.0.0.0/0")),
        RouteSpec(
            dst=IPv4Network("192.168.0.0/16"),  # host bits masked
            gw=IPv4Address("10.1.0.254"),
            mtu=1400,
            advmss=1360,
            priority=100,
            table=254,
            scope=0,
        ),
    )
    assert conf.data_dir == "/tmp/ipam"
    assert conf.resolv_conf == "/etc/resolv.conf"


def test_load_config_reads_request_keys() -> None:
    conf = load_config(
        {
            "cniVersion": "1.1.0",
            "name": "n",
            "ipam": {"type": "host-local", **_one("10.1.0.0/24")},
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.2.0.0/24"}]]},
        }
    )
    assert [str(rs[0].subnet) for rs in conf.range_sets] == ["10.2.0.0/24", "10.1.0.0/24"]


def test_old_cni_version_allows_one_set_per_family() -> None:
    two_v4 = {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}
    assert len(parse_ipam_config(two_v4, cni_version="0.3.0").range_sets) == 2
    err = _error(two_v4, cni_version="0.2.0")
    assert err.msg == "invalid ipam.ranges[1]"


# -- validation: every error names its field --------------------------------------------

_R = "ipam.ranges[0][0]"
_BAD: list[tuple[object, str, str]] = [
    ([], "ipam", "must be an object"),
    ({"ranges": {}}, "ipam.ranges", "must be a list"),
    ({}, "ipam.ranges", "no IP ranges"),
    ({"ranges": []}, "ipam.ranges", "no IP ranges"),
    ({"ranges": ["x"]}, "ipam.ranges[0]", "must be a list"),
    ({"ranges": [[]]}, "ipam.ranges[0]", "empty range set"),
    ({"ranges": [["x"]]}, _R, "must be an object"),
    ({"ranges": [[{}]]}, f"{_R}.subnet", "not a CIDR"),
    (_one("10.1.0.0"), f"{_R}.subnet", "not a CIDR"),
    (_one("10.1.0.0/33"), f"{_R}.subnet", "not a CIDR"),
    (_one("banana/8"), f"{_R}.subnet", "not a CIDR"),
    (_one("10.1.0.5/24"), f"{_R}.subnet", "host bits set"),
    (_one("2001:db8::1/64"), f"{_R}.subnet", "host bits set"),
    (_one("10.1.0.0/31"), f"{_R}.subnet", "too small to allocate from"),
    (_one("10.1.0.1/32"), f"{_R}.subnet", "too small to allocate from"),
    (_one("2001:db8::/127"), f"{_R}.subnet", "too small to allocate from"),
    (_one("2001:db8::1/128"), f"{_R}.subnet", "too small to allocate from"),
    (_one("10.1.0.0/24", rangeStart="10.2.0.1"), f"{_R}.rangeStart", "not inside subnet"),
    (_one("10.1.0.0/24", rangeStart="fd00::1"), f"{_R}.rangeStart", "not inside subnet"),
    (_one("10.1.0.0/24", rangeStart="10.1.0.0"), f"{_R}.rangeStart", "network address"),
    (_one("10.1.0.0/24", rangeStart="nope"), f"{_R}.rangeStart", "not an IP address"),
    ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": 5}]]}, f"{_R}.rangeStart", "string"),
    (_one("10.1.0.0/24", rangeEnd="10.1.1.1"), f"{_R}.rangeEnd", "not inside subnet"),
    (_one("10.1.0.0/24", rangeEnd="10.1.0.255"), f"{_R}.rangeEnd", "broadcast address"),
    (_one("10.1.0.0/24", gateway="10.1.1.1"), f"{_R}.gateway", "not inside subnet"),
    (_one("fd00::/64", gateway="fe80::1%eth0"), f"{_R}.gateway", "scoped"),
    (
        _one("10.1.0.0/24", rangeStart="10.1.0.9", rangeEnd="10.1.0.8"),
        f"{_R}.rangeStart",
        "after rangeEnd",
    ),
    (
        {"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]},
        "ipam.ranges[0][1]",
        "same family",
    ),
    (
        {"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]]},
        "ipam.ranges[0][1]",
        "overlaps ipam.ranges[0][0]",
    ),
    (
        {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.128/25"}]]},
        "ipam.ranges[1][0]",
        "overlaps ipam.ranges[0][0]",
    ),
    (
        # A range inside an earlier, larger one, with a disjoint one after it.
        {
            "ranges": [
                [{"subnet": "10.0.0.0/8"}],
                [{"subnet": "10.1.0.0/16"}],
                [{"subnet": "10.200.0.0/16"}],
            ]
        },
        "ipam.ranges",
        "overlaps ipam.ranges[0][0]",
    ),
    (
        {"ranges": [[{"subnet": "fd00::/64"}], [{"subnet": "fd00::/96"}]]},
        "ipam.ranges[1][0]",
        "overlaps ipam.ranges[0][0]",
    ),
    (
        {"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.1.0.0/24"}]]},
        "ipam.ranges[0][0]",
        "overlaps ipam (",
    ),
    ({"subnet": "10.1.0.5/24"}, "ipam.subnet", "host bits"),
    ({"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}, "ipam.gateway", "not inside subnet"),
    ({"rangeStart": "10.1.0.5", **_one("10.1.0.0/24")}, "ipam.rangeStart", "without ipam.subnet"),
    ({**_one("10.1.0.0/24"), "dataDir": "relative/dir"}, "ipam.dataDir", "absolute"),
    ({**_one("10.1.0.0/24"), "dataDir": "/run/a\0b"}, "ipam.dataDir", "NUL"),
    ({**_one("10.1.0.0/24"), "dataDir": 7}, "ipam.dataDir", "string"),
    ({**_one("10.1.0.0/24"), "resolvConf": ["x"]}, "ipam.resolvConf", "string"),
    ({**_one("10.1.0.0/24"), "routes": {}}, "ipam.routes", "must be a list"),
    ({**_one("10.1.0.0/24"), "routes": [5]}, "ipam.routes[0]", "must be an object"),
    ({**_one("10.1.0.0/24"), "routes": [{}]}, "ipam.routes[0].dst", "not a CIDR"),
    ({**_one("10.1.0.0/24"), "routes": [{"dst": "x/1"}]}, "ipam.routes[0].dst", "not a CIDR"),
    (
        {**_one("10.1.0.0/24"), "routes": [{"dst": "0.0.0.0/0", "gw": "10.1"}]},
        "ipam.routes[0].gw",
        "not an IP address",
    ),
    (
        {**_one("10.1.0.0/24"), "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]},
        "ipam.routes[0].gw",
        "same family",
    ),
    (
        {**_one("10.1.0.0/24"), "routes": [{"dst": "0.0.0.0/0", "mtu": -1}]},
        "ipam.routes[0].mtu",
        "integer",
    ),
    (
        {**_one("10.1.0.0/24"), "routes": [{"dst": "0.0.0.0/0", "table": True}]},
        "ipam.routes[0].table",
        "integer",
    ),
    (
        {**_one("10.1.0.0/24"), "routes": [{"dst": "0.0.0.0/0", "scope": 256}]},
        "ipam.routes[0].scope",
        "integer",
    ),
    (
        {**_one("10.1.0.0/24"), "routes": [{"dst": "0.0.0.0/0", "priority": "1"}]},
        "ipam.routes[0].priority",
        "integer",
    ),
]


@pytest.mark.parametrize(("ipam", "field", "reason"), _BAD)
def test_validation_error_names_field(ipam: object, field: str, reason: str) -> None:
    err = _error(ipam)
    assert field in err.msg
    assert reason in err.details


def test_overlap_error_names_both_ranges() -> None:
    err = _error({"ranges": [[{"subnet": "10.0.0.0/8"}], [{"subnet": "10.1.0.0/16"}]]})
    assert err.msg == "invalid ipam.ranges[1][0]"
    assert "ipam.ranges[0][0]" in err.details


@pytest.mark.parametrize(
    ("runtime_config", "field"),
    [
        ({"ipRanges": {}}, "runtimeConfig.ipRanges"),
        ({"ipRanges": [[{"subnet": "10.1.0.1/24"}]]}, "runtimeConfig.ipRanges[0][0].subnet"),
        ({"ipRanges": [[{"subnet": "10.5.0.0/16"}]]}, "runtimeConfig.ipRanges[0][0]"),
    ],
)
def test_runtime_ip_ranges_errors(runtime_config: dict[str, Any], field: str) -> None:
    # The last case overlaps the config's own range: the ipRanges entry is reported.
    err = _error(_one("10.5.0.0/24"), runtime_config)
    assert field in err.msg or field in err.details


def test_error_document_carries_field() -> None:
    err = _error(_one("10.1.0.0/24", rangeEnd="10.1.9.1"))
    doc = err.to_dict()
    assert doc["code"] == 7
    assert doc["msg"] == "invalid ipam.ranges[0][0].rangeEnd"
    assert "10.1.9.1" in str(doc["details"])


# -- network name ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/", "a\0b", "x" * 256, "é" * 128, 5, None])
def test_bad_network_names(name: object) -> None:
    with pytest.raises(CNIError) as info:
        validate_network_name(name)
    assert info.value.code == 7
    assert info.value.msg == "invalid name"


@pytest.mark.parametrize("name", ["pycni", "my.net-1", "x" * 255, "..."])
def test_good_network_names(name: str) -> None:
    assert validate_network_name(name) == name


# -- requested IPs -----------------------------------------------------------------------


def test_requested_ips_union_of_sources_in_order() -> None:
    got = requested_ips(
        cni_args="IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.5,10.1.0.6/24",
        args={"cni": {"ips": ["10.1.0.5/24", "2001:db8::5"]}},
        runtime_config={"ips": ["::ffff:10.1.0.9", "2001:db8::5/64"]},
    )
    assert got == (
        ip_address("10.1.0.5"),
        ip_address("10.1.0.6"),
        ip_address("2001:db8::5"),
        ip_address("10.1.0.9"),  # IPv4-mapped is IPv4, as in the reference
    )


def test_requested_ips_from_parsed_cni_args() -> None:
    assert requested_ips(cni_args={"IP": "10.1.0.7", "IgnoreUnknown": "1"}) == (
        ip_address("10.1.0.7"),
    )


def test_requested_ips_none() -> None:
    assert requested_ips() == ()
    assert requested_ips(cni_args="IgnoreUnknown=1", args={"cni": {}}, runtime_config={}) == ()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cni_args": "IP=10.1.0.300"}, "CNI_ARGS IP"),
        ({"cni_args": {"IP": "10.1.0.1,zzz"}}, "CNI_ARGS IP"),
        ({"args": {"cni": {"ips": ["10.1.0.1", "10.1.0.1/99"]}}}, "args.cni.ips[1]"),
        ({"args": {"cni": {"ips": "10.1.0.1"}}}, "args.cni.ips"),
        ({"runtime_config": {"ips": [7]}}, "runtimeConfig.ips[0]"),
        ({"runtime_config": {"ips": ["fe80::1%eth0"]}}, "runtimeConfig.ips[0]"),
    ],
)
def test_requested_ips_invalid_names_source(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(CNIError) as info:
        requested_ips(**kwargs)
    assert info.value.code == 7
    assert info.value.msg == f"invalid {field}"


# -- overlap detection against a brute-force oracle ---------------------------------------

_bounds = st.tuples(st.integers(1, 254), st.integers(1, 254)).map(sorted)


@given(st.lists(_bounds, min_size=1, max_size=6))
def test_overlap_check_matches_pairwise_oracle(bounds: list[list[int]]) -> None:
    sets = [
        [{"subnet": "10.1.0.0/24", "rangeStart": f"10.1.0.{a}", "rangeEnd": f"10.1.0.{b}"}]
        for a, b in bounds
    ]
    overlap = any(
        a1 <= b2 and a2 <= b1
        for i, (a1, b1) in enumerate(bounds)
        for a2, b2 in bounds[i + 1 :]
    )
    if overlap:
        with pytest.raises(CNIError) as info:
            parse_ipam_config({"ranges": sets})
        assert "overlaps" in info.value.details
    else:
        parse_ipam_config({"ranges": sets})
