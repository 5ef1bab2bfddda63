"""Results of every version, parsed and rendered into every version; request configs."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from pycni.cni import version as versions
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.types import (
    DNS,
    Interface,
    IPConfig,
    PluginRequest,
    Result,
    Route,
    parse_cidr,
    parse_ip,
)

ALL = versions.SUPPORTED
PRE_1 = ("0.3.0", "0.3.1", "0.4.0")

IFACE_11_ONLY = ("mtu", "socketPath", "pciID")
ROUTE_11_ONLY = ("mtu", "advmss", "priority", "table", "scope")

DNS_DOC = {
    "nameservers": ["10.1.0.1"],
    "domain": "x.local",
    "search": ["x.local"],
    "options": ["ndots:5"],
}


def full_result(cni_version: str) -> dict[str, Any]:
    """A result as a plugin of ``cni_version`` would print it, every field that version has."""
    v11 = cni_version == "1.1.0"
    pre1 = cni_version in PRE_1
    interfaces: list[dict[str, Any]] = [
        {"name": "cni0", "mac": "00:11:22:33:44:55"},
        {"name": "veth3243", "mac": "55:44:33:22:11:11"},
        {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"},
    ]
    if v11:
        interfaces[2].update({"mtu": 1500, "socketPath": "/opt/x.sock", "pciID": "0000:04:00.5"})
    ips: list[dict[str, Any]] = [
        {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
        {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
    ]
    if pre1:
        ips[0]["version"] = "4"
        ips[1]["version"] = "6"
    routes: list[dict[str, Any]] = [
        {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
        {"dst": "::/0"},
    ]
    if v11:
        routes[0].update({"mtu": 1450, "advmss": 1400, "priority": 100, "table": 254, "scope": 0})
    return {
        "cniVersion": cni_version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": copy.deepcopy(DNS_DOC),
    }


def strip_versioned(doc: dict[str, Any]) -> dict[str, Any]:
    """The content every version shares: no cniVersion, no ip version, no 1.1-only fields."""
    out = copy.deepcopy(doc)
    out.pop("cniVersion")
    for iface in out.get("interfaces", []):
        for key in IFACE_11_ONLY:
            iface.pop(key, None)
    for ip in out.get("ips", []):
        ip.pop("version", None)
    for route in out.get("routes", []):
        for key in ROUTE_11_ONLY:
            route.pop(key, None)
    return out


# ---- conversions ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ALL)
def test_parse_then_render_in_own_version_is_identity(source: str) -> None:
    doc = full_result(source)
    assert Result.from_dict(doc).to_dict() == doc
    assert Result.from_dict(doc).cni_version == source


@pytest.mark.parametrize("target", ALL)
@pytest.mark.parametrize("source", ALL)
def test_every_conversion(source: str, target: str) -> None:
    rendered = Result.from_dict(full_result(source)).to_dict(target)

    assert rendered["cniVersion"] == target
    # The shared content survives every conversion unchanged.
    assert strip_versioned(rendered) == strip_versioned(full_result(source))
    # ips[].version exists exactly below 1.0.0, with the right family.
    if target in PRE_1:
        assert [ip["version"] for ip in rendered["ips"]] == ["4", "6"]
    else:
        assert all("version" not in ip for ip in rendered["ips"])
    # Fields new in 1.1.0 appear only when both ends know them.
    carried = source == "1.1.0" and target == "1.1.0"
    eth0, default_route = rendered["interfaces"][2], rendered["routes"][0]
    for key in IFACE_11_ONLY:
        assert (key in eth0) is carried, key
    for key in ROUTE_11_ONLY:
        assert (key in default_route) is carried, key
    if carried:
        assert rendered == full_result("1.1.0")
    # The dns block is carried through every version.
    assert rendered["dns"] == DNS_DOC


@pytest.mark.parametrize("target", ALL)
@pytest.mark.parametrize("source", ALL)
def test_round_trip_through_another_version(source: str, target: str) -> None:
    """source -> target -> source loses only what target cannot carry."""
    there = Result.from_dict(full_result(source)).to_dict(target)
    back = Result.from_dict(there).to_dict(source)
    if versions.parse(target) >= versions.parse(source):
        assert back == full_result(source)
    else:
        assert strip_versioned(back) == strip_versioned(full_result(source))
        assert back == Result.from_dict(full_result(target)).to_dict(source)


@pytest.mark.parametrize("target", ALL)
def test_rendering_is_stable(target: str) -> None:
    once = Result.from_dict(full_result("1.1.0")).to_dict(target)
    assert Result.from_dict(once).to_dict(target) == once


def test_ip_version_in_input_is_not_trusted_over_the_address() -> None:
    doc = {"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.2/24"}]}
    assert Result.from_dict(doc).to_dict("0.4.0")["ips"] == [
        {"version": "4", "address": "10.0.0.2/24"}
    ]
    assert Result.from_dict(doc).to_dict("1.0.0")["ips"] == [{"address": "10.0.0.2/24"}]


@pytest.mark.parametrize("target", ALL)
def test_empty_dns_and_empty_lists_are_omitted(target: str) -> None:
    doc = {"cniVersion": target, "ips": [{"address": "10.0.0.2/24"}], "dns": {}}
    rendered = Result.from_dict(doc).to_dict(target)
    assert "dns" not in rendered
    assert "interfaces" not in rendered  # an IPAM result has none
    assert "routes" not in rendered
    assert "interface" not in rendered["ips"][0]
    assert Result(cni_version=target).to_dict() == {"cniVersion": target}


@pytest.mark.parametrize(
    ("dns", "expected"),
    [
        ({"nameservers": ["1.1.1.1"]}, {"nameservers": ["1.1.1.1"]}),
        ({"domain": "d"}, {"domain": "d"}),
        ({"search": ["a", "b"]}, {"search": ["a", "b"]}),
        ({"options": ["rotate"]}, {"options": ["rotate"]}),
        ({"nameservers": [], "domain": "", "search": [], "options": []}, None),
    ],
)
def test_dns_keeps_only_what_is_set(dns: dict[str, Any], expected: dict[str, Any] | None) -> None:
    rendered = Result.from_dict({"cniVersion": "1.0.0", "dns": dns}).to_dict()
    assert rendered.get("dns") == expected


def test_zero_valued_11_fields_are_kept() -> None:
    """scope 0 (global) and table 0 are values, not absence."""
    doc = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "e", "mtu": 0}],
        "routes": [{"dst": "10.0.0.0/8", "scope": 0, "table": 0}],
    }
    assert Result.from_dict(doc).to_dict() == doc


def test_missing_cni_version_is_current() -> None:
    assert Result.from_dict({"ips": []}).cni_version == versions.CURRENT


@pytest.mark.parametrize("old", ["0.1.0", "0.2.0", "0.0.1"])
def test_results_older_than_030_are_refused_with_code_1(old: str) -> None:
    doc = {"cniVersion": old, "ip4": {"ip": "10.0.0.2/24"}}
    with pytest.raises(CNIError) as info:
        Result.from_dict(doc)
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION
    assert "result.cniVersion" in info.value.details


@pytest.mark.parametrize("bad", ["junk", "1.0"])
def test_unparsable_result_version_is_code_1(bad: str) -> None:
    with pytest.raises(CNIError) as info:
        Result.from_dict({"cniVersion": bad})
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION


def test_addresses_are_normalised() -> None:
    doc = {
        "cniVersion": "1.0.0",
        "ips": [{"address": "FD00:0:0:0::0005/64", "gateway": "FD00::0001"}],
        "routes": [{"dst": "10.1.2.3/8", "gw": "10.0.0.1"}],
    }
    rendered = Result.from_dict(doc).to_dict()
    assert rendered["ips"] == [{"address": "fd00::5/64", "gateway": "fd00::1"}]
    assert rendered["routes"] == [{"dst": "10.0.0.0/8", "gw": "10.0.0.1"}]  # dst is a network


# ---- validation: the error names the field -------------------------------------------------------


def _prev(**fields: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "net",
        "type": "t",
        "prevResult": {"cniVersion": "1.0.0", **fields},
    }


@pytest.mark.parametrize(
    ("prev_fields", "field"),
    [
        ({"ips": [{"gateway": "10.0.0.1"}]}, "prevResult.ips[0].address"),
        ({"ips": [{"address": "10.0.0.2"}]}, "prevResult.ips[0].address"),
        ({"ips": [{"address": "bogus/24"}]}, "prevResult.ips[0].address"),
        ({"ips": [{"address": "10.0.0.2/33"}]}, "prevResult.ips[0].address"),
        ({"ips": [{"address": 10}]}, "prevResult.ips[0].address"),
        (
            {"ips": [{"address": "10.0.0.2/24"}, {"address": "10.0.0.3/24", "gateway": "x"}]},
            "prevResult.ips[1].gateway",
        ),
        ({"ips": [{"address": "10.0.0.2/24", "interface": "0"}]}, "prevResult.ips[0].interface"),
        ({"ips": [{"address": "10.0.0.2/24", "interface": True}]}, "prevResult.ips[0].interface"),
        ({"ips": {"address": "10.0.0.2/24"}}, "prevResult.ips"),
        ({"ips": ["10.0.0.2/24"]}, "prevResult.ips"),
        ({"interfaces": [{"mac": "00:11:22:33:44:55"}]}, "prevResult.interfaces[0].name"),
        ({"interfaces": [{"name": ""}]}, "prevResult.interfaces[0].name"),
        ({"interfaces": [{"name": "e", "mtu": "1500"}]}, "prevResult.interfaces[0].mtu"),
        ({"interfaces": [{"name": "e", "sandbox": 1}]}, "prevResult.interfaces[0].sandbox"),
        (
            {"interfaces": [{"name": "e"}, {"name": "f", "pciID": []}]},
            "prevResult.interfaces[1].pciID",
        ),
        ({"routes": [{"gw": "10.0.0.1"}]}, "prevResult.routes[0].dst"),
        ({"routes": [{"dst": "nowhere"}]}, "prevResult.routes[0].dst"),
        ({"routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.300"}]}, "prevResult.routes[0].gw"),
        ({"routes": [{"dst": "0.0.0.0/0", "table": "main"}]}, "prevResult.routes[0].table"),
        ({"routes": [{"dst": "0.0.0.0/0", "scope": False}]}, "prevResult.routes[0].scope"),
        ({"dns": []}, "prevResult.dns"),
        ({"dns": {"nameservers": "1.1.1.1"}}, "prevResult.dns.nameservers"),
        ({"dns": {"search": ["a", 2]}}, "prevResult.dns.search[1]"),
        ({"dns": {"domain": 5}}, "prevResult.dns.domain"),
        ({"cniVersion": 1}, "prevResult.cniVersion"),
    ],
)
def test_invalid_prev_result_names_the_field(prev_fields: dict[str, Any], field: str) -> None:
    with pytest.raises(CNIError) as info:
        PluginRequest.from_dict(_prev(**prev_fields))
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert info.value.msg == f"invalid {field}"


def test_result_errors_default_to_result_prefix() -> None:
    with pytest.raises(CNIError) as info:
        Result.from_dict({"cniVersion": "1.0.0", "ips": [{"address": "x"}]})
    assert info.value.msg == "invalid result.ips[0].address"


@pytest.mark.parametrize("doc", [None, [], "x", 1])
def test_result_must_be_an_object(doc: Any) -> None:
    with pytest.raises(CNIError) as info:
        Result.from_dict(doc)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert info.value.msg == "invalid result"


def test_prev_result_not_an_object_names_prev_result() -> None:
    with pytest.raises(CNIError) as info:
        PluginRequest.from_dict(
            {"cniVersion": "1.0.0", "name": "n", "type": "t", "prevResult": "x"}
        )
    assert info.value.msg == "invalid prevResult"


@pytest.mark.parametrize(
    ("text", "ok"),
    [("10.0.0.5/24", "10.0.0.5/24"), ("fd00::1/64", "fd00::1/64"), ("10.0.0.0/8", "10.0.0.0/8")],
)
def test_parse_cidr_keeps_host_bits(text: str, ok: str) -> None:
    assert parse_cidr(text, "f") == ok


@pytest.mark.parametrize("text", ["10.0.0.5", "x/24", "10.0.0.5/", None, 5, "10.0.0.5/-1"])
def test_parse_cidr_errors_name_the_field(text: Any) -> None:
    with pytest.raises(CNIError) as info:
        parse_cidr(text, "ipam.addresses[0].address")
    assert info.value.msg == "invalid ipam.addresses[0].address"


@pytest.mark.parametrize("text", ["10.0.0.256", "10.0.0.1/24", "", None, ["::1"]])
def test_parse_ip_errors_name_the_field(text: Any) -> None:
    with pytest.raises(CNIError) as info:
        parse_ip(text, "gateway")
    assert info.value.msg == "invalid gateway"


# ---- the dataclasses -------------------------------------------------------------------------


def test_ip_config_properties() -> None:
    ip4 = IPConfig(address="10.1.0.5/16")
    ip6 = IPConfig(address="fd00::5/64")
    assert (ip4.family, ip4.ip, ip4.network) == (4, "10.1.0.5", "10.1.0.0/16")
    assert (ip6.family, ip6.ip, ip6.network) == (6, "fd00::5", "fd00::/64")


def test_interface_index() -> None:
    result = Result.from_dict(full_result("1.0.0"))
    assert result.interface_index("eth0") == 2
    assert result.interface_index("eth0", "/var/run/netns/blue") == 2
    assert result.interface_index("eth0", "/var/run/netns/red") is None
    assert result.interface_index("cni0", "") == 0
    assert result.interface_index("nope") is None


def test_results_are_frozen() -> None:
    result = Result.from_dict(full_result("1.1.0"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.cni_version = "1.0.0"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ips[0].address = "10.0.0.1/8"  # type: ignore[misc]
    assert isinstance(result.ips, tuple)
    assert isinstance(result.dns.nameservers, tuple)


def test_built_results_render_like_parsed_ones() -> None:
    built = Result(
        cni_version="1.1.0",
        interfaces=(Interface(name="eth0", mac="aa:bb:cc:dd:ee:ff", sandbox="/n", mtu=9000),),
        ips=(IPConfig(address="10.0.0.2/24", gateway="10.0.0.1", interface=0),),
        routes=(Route(dst="0.0.0.0/0", gw="10.0.0.1", priority=5),),
        dns=DNS(nameservers=("10.0.0.1",)),
    )
    assert built.to_dict("0.3.1") == {
        "cniVersion": "0.3.1",
        "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/n"}],
        "ips": [{"version": "4", "interface": 0, "address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
        "dns": {"nameservers": ["10.0.0.1"]},
    }
    assert Result.from_dict(built.to_dict()) == built


def test_dns_truthiness() -> None:
    assert not DNS()
    assert DNS(domain="x")
    assert DNS(options=("ndots:1",))


# ---- plugin request configs ------------------------------------------------------------------


def test_plugin_request_reads_the_generic_keys() -> None:
    doc: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "net",
        "type": "bridge",
        "bridge": "cni0",
        "runtimeConfig": {"portMappings": []},
        "args": {"cni": {"ips": ["10.0.0.9/24"]}},
        "ipam": {"type": "host-local"},
        "dns": {"nameservers": ["9.9.9.9"]},
        "prevResult": full_result("0.4.0") | {"cniVersion": "1.0.0"},
    }
    for ip in doc["prevResult"]["ips"]:
        ip.pop("version")
    req = PluginRequest.from_dict(doc)
    assert (req.cni_version, req.name, req.type) == ("1.0.0", "net", "bridge")
    assert req.raw["bridge"] == "cni0"
    assert req.runtime_config == {"portMappings": []}
    assert req.ipam == {"type": "host-local"}
    assert req.dns == DNS(nameservers=("9.9.9.9",))
    assert req.cni_args_section() == {"ips": ["10.0.0.9/24"]}
    assert req.prev_result is not None
    assert req.prev_result.to_dict() == doc["prevResult"]


def test_plugin_request_defaults() -> None:
    req = PluginRequest.from_dict({"cniVersion": "0.4.0", "name": "n", "type": "t"})
    assert req.prev_result is None
    assert req.runtime_config == {}
    assert req.args == {}
    assert req.ipam == {}
    assert not req.dns
    assert req.cni_args_section() == {}


@pytest.mark.parametrize("empty", [None, {}, []])
def test_empty_prev_result_is_none(empty: Any) -> None:
    """DEL: plugins must succeed if prevResult is empty."""
    doc = {"cniVersion": "1.0.0", "name": "n", "type": "t", "prevResult": empty}
    assert PluginRequest.from_dict(doc).prev_result is None


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"name": "n", "type": "t"}, "cniVersion"),
        ({"cniVersion": "", "name": "n", "type": "t"}, "cniVersion"),
        ({"cniVersion": 1.0, "name": "n", "type": "t"}, "cniVersion"),
        ({"cniVersion": "1.0.0", "type": "t"}, "name"),
        ({"cniVersion": "1.0.0", "name": ["n"], "type": "t"}, "name"),
        ({"cniVersion": "1.0.0", "name": "n"}, "type"),
        ({"cniVersion": "1.0.0", "name": "n", "type": "t", "runtimeConfig": []}, "runtimeConfig"),
        ({"cniVersion": "1.0.0", "name": "n", "type": "t", "args": "K=V"}, "args"),
        ({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipam": "host-local"}, "ipam"),
        (
            {"cniVersion": "1.0.0", "name": "n", "type": "t", "dns": {"options": [1]}},
            "dns.options[0]",
        ),
    ],
)
def test_plugin_request_errors_name_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(CNIError) as info:
        PluginRequest.from_dict(doc)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert info.value.msg == f"invalid {field}"


def test_args_cni_section_must_be_an_object_to_count() -> None:
    req = PluginRequest.from_dict(
        {"cniVersion": "1.0.0", "name": "n", "type": "t", "args": {"cni": 1}}
    )
    assert req.cni_args_section() == {}
