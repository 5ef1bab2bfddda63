"""Keys matched as the reference plugins' Go decoder matches them (``pycni.cni._fields``):
the exact name first, then case-insensitively; a key that matches nothing is refused with
code 2 naming it. Every plugin reads its static keys, and the protocol's, this way."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pycni.cni._fields import GoKeys, decode_keys, go_fold
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import DNS, PluginRequest
from pycni.ipam.config import load_config
from pycni.ipam.requested import requested_ips
from pycni.plugins.bandwidth_conf import parse_bandwidth_config
from pycni.plugins.bridge_conf import parse_bridge_config
from pycni.plugins.firewall_conf import parse_firewall_config
from pycni.plugins.portmap_conf import parse_portmap_config
from pycni.plugins.tuning_conf import parse_data_dir, parse_tuning_config
from tests.support import go_cni_ip_range, go_json

PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/n"}],
        "ips": [{"address": "10.99.0.5/24", "interface": 0}]}


def test_go_fold_is_simple_case_folding_one_character_for_one() -> None:
    assert go_fold("HostPort") == go_fold("hostport") == "hostport"
    assert go_fold("\u212aey") == "key"  # the Kelvin sign folds to k, as in Go
    assert go_fold("mac\u017f") == "macs"  # the long s folds to s
    assert go_fold("addre\u00df") != go_fold("address")  # ß is not ss


def test_the_exact_name_wins_then_the_folded_one() -> None:
    keys = GoKeys(("mac", "MAC", "hostIP"))
    assert keys.match("mac") == "mac"
    assert keys.match("MAC") == "MAC"
    assert keys.match("HOSTip") == "hostIP"
    assert keys.match("hostIP4") is None
    assert "HostIP" in keys


def test_decode_keys_spells_keys_as_known_and_refuses_the_rest() -> None:
    keys = GoKeys(("hostPort", "containerPort"))
    assert decode_keys({"HostPort": 1, "containerport": 2}, keys, refuse="x") == {
        "hostPort": 1, "containerPort": 2}
    with pytest.raises(CNIError) as err:
        decode_keys({"HostPort": 1, "Port": 2}, keys, where="a[0].", refuse="a port key")
    assert err.value.code == ErrorCode.UNSUPPORTED_FIELD
    assert err.value.msg == "unsupported field a[0].Port"
    assert err.value.details == "a[0].Port=2 is not a port key"


def test_two_spellings_of_one_key_are_refused_not_last_one_wins() -> None:
    with pytest.raises(CNIError) as err:
        decode_keys({"hostPort": 1, "HostPort": 2}, GoKeys(("hostPort",)), refuse="x")
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert err.value.msg == "invalid HostPort"


def test_lenient_decoding_keeps_other_keys_and_cni_dev_keys_always_pass() -> None:
    keys = GoKeys(("cni",))
    assert decode_keys({"CNI": {}, "other": 1}, keys) == {"cni": {}, "other": 1}
    assert decode_keys({"cni.dev/valid-attachments": []}, keys, refuse="x") == {
        "cni.dev/valid-attachments": []}


def test_the_protocol_keys_of_a_request_are_matched_as_go_matches_them() -> None:
    request = PluginRequest.from_dict({
        "CNIVersion": "1.0.0", "Name": "net", "TYPE": "bridge",
        "RuntimeConfig": {"mac": "0e:00:00:00:00:01"},
        "Args": {"CNI": {"MAC": "0e:00:00:00:00:02", "other": 1}},
        "DNS": {"Nameservers": ["10.0.0.53"], "Search": ["svc.local"]},
        "PrevResult": {"CNIVersion": "1.0.0", "IPs": [{"Address": "10.0.0.2/24",
                                                       "Gateway": "10.0.0.1"}],
                       "Interfaces": [{"Name": "eth0", "Sandbox": "/n"}]},
    })
    assert (request.cni_version, request.name, request.type) == ("1.0.0", "net", "bridge")
    assert request.runtime_config == {"mac": "0e:00:00:00:00:01"}
    assert request.cni_args_section(("mac",)) == {"mac": "0e:00:00:00:00:02", "other": 1}
    assert request.dns == DNS(nameservers=("10.0.0.53",), search=("svc.local",))
    assert request.prev_result is not None
    assert request.prev_result.ips[0].address == "10.0.0.2/24"
    assert request.prev_result.interfaces[0].sandbox == "/n"


def test_a_dns_key_that_matches_nothing_is_refused_in_a_request_only() -> None:
    with pytest.raises(CNIError) as err:
        PluginRequest.from_dict({"cniVersion": "1.0.0", "name": "n", "type": "t",
                                 "dns": {"servers": ["10.0.0.53"]}})
    assert err.value.code == ErrorCode.UNSUPPORTED_FIELD
    assert err.value.msg == "unsupported field dns.servers"
    prev = {**PREV, "dns": {"nameservers": ["10.0.0.53"], "extra": 1}}
    request = PluginRequest.from_dict({"cniVersion": "1.0.0", "name": "n", "type": "t",
                                       "prevResult": prev})
    assert request.prev_result is not None
    assert request.prev_result.dns.nameservers == ("10.0.0.53",)


# ---------------------------------------------------------------------------- every plugin


def _args(plugin: dict[str, Any]) -> CmdArgs:
    """The bytes libcni 1.1 (go-cni) writes for ``plugin``, decoded as skel decodes them."""
    doc = {**plugin, "name": "net", "cniVersion": "1.0.0", "prevResult": PREV}
    stdin = go_json(doc).encode()
    return CmdArgs(command="ADD", container_id="c1", netns="/n", ifname="eth0", stdin=stdin,
                   config=PluginRequest.from_dict(json.loads(stdin)))


def _capitalised(plugin: dict[str, Any]) -> dict[str, Any]:
    """Every static key (not the protocol's ``type``) with a capital first letter."""
    return {k if k == "type" else k[0].upper() + k[1:]: v for k, v in plugin.items()}


STATIC: list[tuple[dict[str, Any], Callable[[CmdArgs], Any]]] = [
    ({"type": "bridge", "bridge": "br9", "isGateway": False, "ipMasq": False, "mtu": 1400,
      "hairpinMode": True, "ipam": {"type": "host-local"}}, parse_bridge_config),
    ({"type": "portmap", "snat": False, "masqAll": True, "backend": "iptables",
      "dataDir": "/tmp/x"}, parse_portmap_config),
    ({"type": "bandwidth", "ingressRate": 8000, "ingressBurst": 800, "egressRate": 16000,
      "egressBurst": 1600}, parse_bandwidth_config),
    ({"type": "firewall", "backend": "iptables", "ingressPolicy": "open"},
     parse_firewall_config),
    ({"type": "tuning", "mtu": 1300, "promisc": True, "txQLen": 10, "dataDir": "/tmp/t",
      "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}}, parse_tuning_config),
]


@pytest.mark.parametrize(("plugin", "parse"), STATIC, ids=[p["type"] for p, _ in STATIC])
def test_every_plugin_reads_static_keys_in_any_case_and_refuses_what_matches_none(
    plugin: dict[str, Any], parse: Callable[[CmdArgs], Any]
) -> None:
    assert parse(_args(_capitalised(plugin))) == parse(_args(plugin))
    upper = {k if k == "type" else k.upper(): v for k, v in plugin.items()}
    assert parse(_args(upper)) == parse(_args(plugin))
    with pytest.raises(CNIError) as err:  # folding is no fuzzy match: a near miss is refused
        parse(_args({**plugin, "MTUs": 1}))
    assert err.value.code == ErrorCode.UNSUPPORTED_FIELD
    assert err.value.msg == "unsupported field MTUs"


@pytest.mark.parametrize(("plugin", "parse"), STATIC, ids=[p["type"] for p, _ in STATIC])
def test_every_plugin_refuses_a_capability_it_does_not_read(
    plugin: dict[str, Any], parse: Callable[[CmdArgs], Any]
) -> None:
    runtime = {"IngressBandwidth": {"rate": 1}}
    with pytest.raises(CNIError) as err:
        parse(_args({**plugin, "runtimeConfig": runtime}))
    assert err.value.code == ErrorCode.UNSUPPORTED_FIELD
    assert err.value.msg == "unsupported field runtimeConfig.IngressBandwidth"


def test_bridge_and_tuning_read_go_spellings_of_mac_everywhere() -> None:
    bridge = _args({"type": "bridge", "ipam": {"Type": "host-local"},
                    "args": {"CNI": {"MAC": "0e:00:00:00:00:01"}}})
    assert parse_bridge_config(bridge).mac == "0e:00:00:00:00:01"
    assert parse_bridge_config(bridge).ipam_type == "host-local"
    tuning = _args({"type": "tuning", "runtimeConfig": {"Mac": "0e:00:00:00:00:02"}})
    assert parse_tuning_config(tuning).link.mac == "0e:00:00:00:00:02"
    assert parse_data_dir({"DATADIR": "/tmp/t", "Unknown": 1}) == "/tmp/t"  # DEL's read


def test_host_local_reads_go_cni_ip_ranges_and_capitalised_ipam_keys() -> None:
    netconf = json.loads(go_json({
        "cniVersion": "1.0.0", "name": "net", "type": "bridge", "Bridge": "br0",
        "IPAM": {"Type": "host-local", "DataDir": "/tmp/ipam", "Subnet": "10.1.0.0/24",
                 "Routes": [{"Dst": "0.0.0.0/0", "GW": "10.1.0.1"}]},
        "runtimeConfig": {"ipRanges": [[go_cni_ip_range("10.2.0.0/24", gateway="10.2.0.9")]],
                          "IPs": ["10.1.0.7"], "mac": "0e:00:00:00:00:01"},
    }))
    config = load_config(netconf)
    assert [str(s[0].subnet) for s in config.range_sets] == ["10.2.0.0/24", "10.1.0.0/24"]
    assert str(config.range_sets[0][0].gateway) == "10.2.0.9"
    assert str(config.routes[0].gw) == "10.1.0.1"
    assert config.data_dir == "/tmp/ipam"
    assert [str(ip) for ip in requested_ips(runtime_config=netconf["runtimeConfig"])] == [
        "10.1.0.7"]


@pytest.mark.parametrize(("ipam", "field"), [
    ({"type": "host-local", "subnet": "10.1.0.0/24", "subnets": []}, "ipam.subnets"),
    ({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24", "start": "x"}]]},
     "ipam.ranges[0][0].start"),
    ({"type": "host-local", "subnet": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0",
                                                                  "via": "x"}]},
     "ipam.routes[0].via"),
])
def test_host_local_refuses_an_ipam_range_or_route_key_that_matches_nothing(
    ipam: dict[str, Any], field: str
) -> None:
    with pytest.raises(CNIError) as err:
        load_config({"cniVersion": "1.0.0", "name": "net", "ipam": ipam})
    assert err.value.code == ErrorCode.UNSUPPORTED_FIELD
    assert err.value.msg == f"unsupported field {field}"
