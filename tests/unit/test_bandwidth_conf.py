"""`bandwidth` configuration: limits, precedence and validation (code 7 naming the field)."""

from __future__ import annotations

from typing import Any

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import PluginRequest
from pycni.plugins.bandwidth_conf import BandwidthConfig, Limit, parse_bandwidth_config


def args_for(config: dict[str, Any], *, command: str = "ADD") -> CmdArgs:
    doc = {"cniVersion": "1.1.0", "name": "net", "type": "bandwidth", **config}
    return CmdArgs(
        command=command,
        container_id="c1",
        netns="/var/run/netns/c1",
        ifname="eth0",
        config=PluginRequest.from_dict(doc),
    )


def parse(config: dict[str, Any]) -> BandwidthConfig:
    return parse_bandwidth_config(args_for(config))


def refused(config: dict[str, Any]) -> CNIError:
    with pytest.raises(CNIError) as err:
        parse(config)
    return err.value


def test_static_keys() -> None:
    conf = parse(
        {"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 16, "egressBurst": 8}
    )
    assert conf.ingress == Limit(rate=8_000_000, burst=80_000)
    assert conf.egress == Limit(rate=16, burst=8)
    assert (conf.ingress.rate_bytes, conf.ingress.burst_bytes) == (1_000_000, 10_000)
    assert conf.source == "config"
    assert conf.limited


def test_runtime_config_is_used_when_there_are_no_static_keys() -> None:
    conf = parse({"runtimeConfig": {"bandwidth": {"egressRate": 1000, "egressBurst": 800}}})
    assert conf.ingress is None
    assert conf.egress == Limit(rate=1000, burst=800)
    assert conf.source == "runtimeConfig.bandwidth"


def test_static_keys_win_over_runtime_config() -> None:
    conf = parse(
        {
            "ingressRate": 1000,
            "ingressBurst": 800,
            "runtimeConfig": {"bandwidth": {"egressRate": 1000, "egressBurst": 800}},
        }
    )
    assert conf.ingress == Limit(rate=1000, burst=800)
    assert conf.egress is None
    assert conf.source == "config"


def test_runtime_config_is_ignored_even_when_invalid_if_static_keys_win() -> None:
    conf = parse({"egressRate": 0, "runtimeConfig": {"bandwidth": {"ingressRate": -1}}})
    assert not conf.limited


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"ingressRate": 0, "ingressBurst": 0},
        {"runtimeConfig": {"bandwidth": {}}},
        {"runtimeConfig": {"bandwidth": {"IngressRate": 0, "IngressBurst": 0}}},
    ],
)
def test_no_limits(config: dict[str, Any]) -> None:
    assert not parse(config).limited


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"ingressRate": 1000}, "ingressBurst"),
        ({"ingressBurst": 1000}, "ingressRate"),
        ({"egressRate": 1000, "egressBurst": 0}, "egressBurst"),
        ({"egressRate": -8, "egressBurst": 800}, "egressRate"),
        ({"egressRate": 1000, "egressBurst": -1}, "egressBurst"),
        ({"ingressRate": True, "ingressBurst": 800}, "ingressRate"),
        ({"ingressRate": 1e6, "ingressBurst": 800}, "ingressRate"),
        ({"ingressRate": "1mbit", "ingressBurst": 800}, "ingressRate"),
        ({"ingressRate": 7, "ingressBurst": 800}, "ingressRate"),
        ({"ingressRate": 1000, "ingressBurst": 7}, "ingressBurst"),
        # burst/8 must stay below 4 GiB (the reference's rule)
        ({"ingressRate": 1000, "ingressBurst": (2**32 - 1) * 8}, "ingressBurst"),
        ({"ingressRate": 1000, "ingressBurst": 2**40}, "ingressBurst"),
        # a rate of 2**32 bytes/s does not fit tc_tbf_qopt
        ({"egressRate": 2**32 * 8, "egressBurst": 800}, "egressRate"),
        (
            {"runtimeConfig": {"bandwidth": {"ingressRate": 1000}}},
            "runtimeConfig.bandwidth.ingressBurst",
        ),
        ({"runtimeConfig": {"bandwidth": [1000]}}, "runtimeConfig.bandwidth"),
    ],
)
def test_bad_values_are_refused_with_code_7_naming_the_field(
    config: dict[str, Any], field: str
) -> None:
    err = refused(config)
    assert err.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert err.msg == f"invalid {field}"


def test_largest_values_are_accepted() -> None:
    conf = parse({"egressRate": (2**32 - 1) * 8, "egressBurst": (2**32 - 1) * 8 - 1})
    assert conf.egress is not None
    assert conf.egress.rate_bytes == 2**32 - 1
    assert conf.egress.burst_bytes == 2**32 - 2


def test_unknown_key_is_refused_with_code_2() -> None:
    err = refused({"ingressRate": 1000, "ingressBurst": 800, "shapedSubnets": ["10.0.0.0/8"]})
    assert err.code == ErrorCode.UNSUPPORTED_FIELD
    assert "shapedSubnets" in err.msg


def test_protocol_and_runtime_keys_are_accepted() -> None:
    config = {
        "capabilities": {"bandwidth": True},
        "args": {"cni": {}},
        "cni.dev/valid-attachments": [],
        "prevResult": {"cniVersion": "1.1.0"},
    }
    assert not parse(config).limited


def test_go_cni_bandwidth_is_read_as_the_reference_reads_it() -> None:
    """containerd's CRI sends go-cni's ``BandWidth`` struct (no json tags): capitalised keys,
    a burst of MaxUint32 bits for a rate the pod set, zeros for one it did not."""
    limits = {"IngressRate": 8_000_000, "IngressBurst": 4294967295, "EgressRate": 0,
              "EgressBurst": 0}
    conf = parse({"runtimeConfig": {"bandwidth": limits}})
    assert conf.ingress == Limit(rate=8_000_000, burst=4294967295)
    assert conf.egress is None
    assert conf.source == "runtimeConfig.bandwidth"


def test_static_keys_are_matched_as_go_matches_them() -> None:
    conf = parse({"IngressRate": 1000, "INGRESSBURST": 800})
    assert conf.ingress == Limit(rate=1000, burst=800)
    assert conf.source == "config"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (
            {"runtimeConfig": {"bandwidth": {"IngressRate": 1000, "IngressBurst": 800,
                                             "IngressPeak": 9}}},
            "runtimeConfig.bandwidth.IngressPeak",
        ),
        ({"runtimeConfig": {"bandwidth": {"rate": 1000}}}, "runtimeConfig.bandwidth.rate"),
        ({"runtimeConfig": {"portMappings": []}}, "runtimeConfig.portMappings"),
    ],
)
def test_asked_for_shaping_the_plugin_cannot_read_is_refused_with_code_2(
    config: dict[str, Any], field: str
) -> None:
    err = refused(config)
    assert err.code == ErrorCode.UNSUPPORTED_FIELD
    assert err.msg == f"unsupported field {field}"
