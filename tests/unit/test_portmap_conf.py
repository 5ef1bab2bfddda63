"""`portmap` configuration and the model: validation (code 7/2 naming the field), defaults,
normalisation, and what a PortMap publishes. No kernel access."""

from __future__ import annotations

from typing import Any

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import PluginRequest
from pycni.firewall.hostports import HOSTPORTS_ROOT as DEFAULT_ROOT
from pycni.firewall.model import AttachmentKey, DnatTarget, PortMap, PortMapping
from pycni.plugins.portmap_conf import PortmapConfig, parse_for_teardown, parse_portmap_config


def args_for(config: dict[str, Any], mappings: list[Any] | None = None) -> CmdArgs:
    doc: dict[str, Any] = {"cniVersion": "1.1.0", "name": "net", "type": "portmap", **config}
    if mappings is not None:
        doc["runtimeConfig"] = {"portMappings": mappings}
    return CmdArgs(command="ADD", container_id="c1", netns="/var/run/netns/c1", ifname="eth0",
                   config=PluginRequest.from_dict(doc))


def parse(config: dict[str, Any], mappings: list[Any] | None = None) -> PortmapConfig:
    return parse_portmap_config(args_for(config, mappings))


def refused(config: dict[str, Any], mappings: list[Any] | None = None) -> CNIError:
    with pytest.raises(CNIError) as err:
        parse(config, mappings)
    return err.value


def test_defaults_follow_the_reference() -> None:
    conf = parse({})
    assert conf == PortmapConfig(mappings=(), snat=True, masq_all=False, backend=None,
                                 data_dir=DEFAULT_ROOT)


def test_mappings_are_parsed_and_normalised() -> None:
    conf = parse({"snat": False, "masqAll": True, "backend": "iptables", "dataDir": "/tmp/x"}, [
        {"hostPort": 8080, "containerPort": 80},
        {"hostPort": 53, "containerPort": 53, "protocol": "UDP", "hostIP": "fd00::0:1"},
        {"hostPort": 8080, "containerPort": 80, "protocol": "sctp", "hostIP": ""},
    ])
    assert conf.mappings == (
        PortMapping(None, 8080, 80, "tcp"),
        PortMapping("fd00::1", 53, 53, "udp"),
        PortMapping(None, 8080, 80, "sctp"),
    )
    assert (conf.snat, conf.masq_all, conf.backend, conf.data_dir) == \
        (False, True, "iptables", "/tmp/x")


@pytest.mark.parametrize(("entry", "field"), [
    ({"hostPort": 0, "containerPort": 80}, "hostPort"),
    ({"hostPort": 65536, "containerPort": 80}, "hostPort"),
    ({"hostPort": True, "containerPort": 80}, "hostPort"),
    ({"hostPort": "80", "containerPort": 80}, "hostPort"),
    ({"hostPort": 80}, "containerPort"),
    ({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}, "protocol"),
    ({"hostPort": 80, "containerPort": 80, "hostIP": "10.0.0.300"}, "hostIP"),
    ({"hostPort": 80, "containerPort": 80, "hostIP": 7}, "hostIP"),
])
def test_bad_mapping_is_code_7_naming_the_field(entry: dict[str, Any], field: str) -> None:
    err = refused({}, [entry])
    assert err.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "portMappings[0]" in err.msg
    assert field in err.msg + err.details


def test_go_cni_mappings_are_read_as_the_reference_reads_them() -> None:
    """containerd's CRI (go-cni ``PortMapping``, no json tags) capitalises every key."""
    conf = parse({}, [
        {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
        {"HostPort": 53, "ContainerPort": 5353, "Protocol": "udp", "HostIP": "10.0.0.1"},
        {"HOSTPORT": 9090, "containerport": 90},
    ])
    assert conf.mappings == (
        PortMapping(None, 8080, 80, "tcp"),
        PortMapping("10.0.0.1", 53, 5353, "udp"),
        PortMapping(None, 9090, 90, "tcp"),
    )


@pytest.mark.parametrize(("entry", "code", "field"), [
    ({"hostPort": 80, "containerPort": 80, "hostAddr": "x"}, 2, "hostAddr"),
    ({"HostPort": 80, "ContainerPort": 80, "HostIp4": "x"}, 2, "HostIp4"),
    ({"hostPort": 80, "HostPort": 81, "containerPort": 80}, 7, "HostPort"),
])
def test_a_mapping_key_that_matches_none_or_one_twice_is_refused(
    entry: dict[str, Any], code: int, field: str
) -> None:
    err = refused({}, [entry])
    assert err.code == code
    assert f"runtimeConfig.portMappings[0].{field}" in err.msg


def test_a_capability_portmap_does_not_read_is_refused() -> None:
    err = refused({"runtimeConfig": {"portMappings": [], "bandwidth": {}}})
    assert err.code == ErrorCode.UNSUPPORTED_FIELD
    assert err.msg == "unsupported field runtimeConfig.bandwidth"


@pytest.mark.parametrize("pair", [
    [{"hostPort": 80, "containerPort": 1}, {"hostPort": 80, "containerPort": 2}],
    [{"hostPort": 80, "containerPort": 1}, {"hostPort": 80, "containerPort": 2,
                                            "hostIP": "10.0.0.1"}],
    [{"hostPort": 80, "containerPort": 1, "hostIP": "0.0.0.0"},
     {"hostPort": 80, "containerPort": 2, "hostIP": "10.0.0.1"}],
])
def test_a_host_port_mapped_twice_is_refused(pair: list[dict[str, Any]]) -> None:
    assert "mapped twice" in refused({}, pair).details


@pytest.mark.parametrize("pair", [
    [{"hostPort": 80, "containerPort": 1}, {"hostPort": 80, "containerPort": 1,
                                            "protocol": "udp"}],
    [{"hostPort": 80, "containerPort": 1, "hostIP": "10.0.0.1"},
     {"hostPort": 80, "containerPort": 1, "hostIP": "10.0.0.2"}],
    [{"hostPort": 80, "containerPort": 1, "hostIP": "0.0.0.0"},
     {"hostPort": 80, "containerPort": 1, "hostIP": "::"}],
])
def test_disjoint_mappings_of_one_port_are_fine(pair: list[dict[str, Any]]) -> None:
    assert len(parse({}, pair).mappings) == 2


@pytest.mark.parametrize(("config", "code", "field"), [
    ({"markMasqBit": 13}, 2, "markMasqBit"),
    ({"externalSetMarkChain": "KUBE-MARK-MASQ"}, 2, "externalSetMarkChain"),
    ({"conditionsV4": ["-s", "1.2.3.4"]}, 2, "conditionsV4"),
    ({"snatt": True}, 2, "snatt"),
    ({"backend": "pf"}, 7, "backend"),
    ({"backend": 1}, 7, "backend"),
    ({"snat": "yes"}, 7, "snat"),
    ({"dataDir": "relative"}, 7, "dataDir"),
])
def test_bad_keys_are_refused_naming_them(config: dict[str, Any], code: int, field: str) -> None:
    err = refused(config)
    assert err.code == code
    assert field in err.msg + err.details


def test_portmappings_must_be_a_list() -> None:
    assert "portMappings" in refused({}, {"hostPort": 1}).msg  # type: ignore[arg-type]


def test_teardown_parse_survives_a_config_add_would_refuse() -> None:
    conf = parse_for_teardown(args_for({"markMasqBit": 13, "dataDir": "/tmp/d",
                                        "backend": "nope"}))
    assert (conf.data_dir, conf.backend, conf.mappings) == ("/tmp/d", None, ())


# ------------------------------------------------------------------------------ model


KEY = AttachmentKey("net", "c1", "eth0")


def test_reservation_names_and_families() -> None:
    assert PortMapping(None, 1, 1).reservation == "any"
    assert PortMapping(None, 1, 1).families == (4, 6)
    assert PortMapping("0.0.0.0", 1, 1).reservation == "any4"
    assert PortMapping("0.0.0.0", 1, 1).host_addr is None
    assert PortMapping("::", 1, 1).reservation == "any6"
    assert PortMapping("10.0.0.1", 1, 1).reservation == "10.0.0.1"
    assert PortMapping("10.0.0.1", 1, 1).families == (4,)
    assert PortMapping("10.0.0.1", 8080, 80, "udp").describe() == "10.0.0.1:8080/udp"


def test_targets_follow_the_container_families() -> None:
    pm = PortMap(key=KEY, mappings=(PortMapping(None, 8080, 80), PortMapping("fd00::1", 53, 53),
                                    PortMapping("10.0.0.1", 443, 443)),
                 container_ipv4="10.99.0.5", subnets=("10.99.0.5/24",))
    assert pm.targets() == (
        DnatTarget(4, None, "tcp", 8080, "10.99.0.5", 80),
        DnatTarget(4, "10.0.0.1", "tcp", 443, "10.99.0.5", 443),
    )
    assert [m.host_port for m in pm.published()] == [8080, 443]  # no IPv6 address for :53
    assert pm.subnets == ("10.99.0.0/24",)


def test_hairpin_keys_are_unique_per_container_port_and_vanish_without_masquerade() -> None:
    mappings = (PortMapping(None, 8080, 80), PortMapping(None, 8081, 80))
    pm = PortMap(key=KEY, mappings=mappings, container_ipv4="10.99.0.5",
                 container_ipv6="fd00::5")
    assert pm.hairpin_keys(4) == (("10.99.0.5", "tcp", 80),)
    assert pm.hairpin_keys(6) == (("fd00::5", "tcp", 80),)
    off = PortMap(key=KEY, mappings=mappings, container_ipv4="10.99.0.5", snat=False)
    assert off.hairpin_keys(4) == ()


def test_chain_tag_depends_on_network_subnets_and_options_only() -> None:
    def tag(cid: str, **kw: Any) -> str:
        return PortMap(key=AttachmentKey("net", cid, "eth0"), mappings=(),
                       subnets=kw.pop("subnets", ("10.99.0.0/24",)), **kw).chain_tag

    assert tag("a") == tag("b")
    assert tag("a") != tag("a", masq_all=True)
    assert tag("a") != tag("a", subnets=("10.98.0.0/24",))
    assert len(tag("a")) == 16


@pytest.mark.parametrize("kw", [
    {"container_ipv4": "fd00::1"},
    {"container_ipv6": "10.0.0.1"},
    {"subnets": ("nope",)},
])
def test_portmap_refuses_bad_addresses(kw: dict[str, Any]) -> None:
    with pytest.raises(CNIError):
        PortMap(key=KEY, mappings=(), **kw)
