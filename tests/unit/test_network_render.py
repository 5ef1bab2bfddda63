"""A NetworkSpec as a conflist, and any conflist back as a NetworkView (pure)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from pycni.cni.conf import conflist_from_doc, parse_conflist
from pycni.ipam.config import parse_ipam_config
from pycni.network.render import render_conflist
from pycni.network.spec import NetworkSpec, SubnetSpec
from pycni.network.view import MANAGED_MARK, view_of

net = ipaddress.ip_network
addr = ipaddress.ip_address


def spec(**kw: Any) -> NetworkSpec:
    subnets = (SubnetSpec(subnet=net("10.100.3.0/24"), gateway=addr("10.100.3.1")),)
    return NetworkSpec(**{"name": "appnet", "bridge": "pycni-0123456789", "subnets": subnets,
                          **kw})


def loaded(doc: dict[str, Any]) -> Any:
    data = json.dumps(doc).encode()
    return conflist_from_doc(json.loads(data), data, "test")


def test_the_default_networks_chain_with_its_capabilities_and_versions() -> None:
    doc = render_conflist(spec())
    assert [p["type"] for p in doc["plugins"]] == \
        ["bridge", "portmap", "bandwidth", "firewall", "loopback"]
    caps = {p["type"]: p.get("capabilities") for p in doc["plugins"]}
    assert caps["bridge"] == {"mac": True, "ips": True}
    assert caps["portmap"] == {"portMappings": True}
    assert caps["bandwidth"] == {"bandwidth": True}
    assert doc["cniVersion"] == "1.0.0"  # what libcni 1.1 (podman 4.3, containerd 1.6) decodes
    assert "1.1.0" in doc["cniVersions"]
    conflist = loaded(doc)
    assert conflist.cni_version == "1.1.0"  # a runtime reading cniVersions gets STATUS and GC
    bridge = doc["plugins"][0]
    assert (bridge["isGateway"], bridge["isDefaultGateway"], bridge["ipMasq"]) == (True,) * 3
    assert bridge["ipam"] == {"type": "host-local", "ranges": [[
        {"subnet": "10.100.3.0/24", "gateway": "10.100.3.1"}]]}
    assert doc["plugins"][3] == {"type": "firewall", "ingressPolicy": "same-bridge"}


def test_the_defaults_chain_is_the_shape_of_conf_default_network() -> None:
    from tests.support import CONF_DIR

    default = parse_conflist((CONF_DIR / "10-pycni.conflist").read_bytes())
    ours = loaded(render_conflist(spec()))
    assert ours.plugin_types == default.plugin_types
    for mine, theirs in zip(ours.plugins, default.plugins, strict=True):
        assert mine.get("capabilities") == theirs.get("capabilities")


def test_internal_has_no_default_route_no_masquerade_and_a_firewall_that_drops() -> None:
    doc = render_conflist(spec(internal=True, ip_masq=False))
    bridge, firewall = doc["plugins"][0], doc["plugins"][3]
    assert (bridge["isGateway"], bridge["isDefaultGateway"], bridge["ipMasq"]) == \
        (True, False, False)
    assert "routes" not in bridge["ipam"]
    assert firewall["internal"] is True
    assert view_of(loaded(doc), doc["args"]).internal


def test_dual_stack_ranges_ip_range_mtu_isolation_and_data_dir() -> None:
    subnets = (
        SubnetSpec(subnet=net("10.1.0.0/24"), gateway=addr("10.1.0.1"),
                   ip_range=net("10.1.0.128/25")),
        SubnetSpec(subnet=net("fd00:1::/64"), gateway=addr("fd00:1::1"),
                   ip_range=net("fd00:1::/120")),
    )
    doc = render_conflist(spec(subnets=subnets, mtu=1400, icc=False, isolate=False),
                          ipam_data_dir="/d", firewall_backend="iptables")
    bridge = doc["plugins"][0]
    assert bridge["ipam"]["ranges"] == [
        [{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1",
          "rangeStart": "10.1.0.128", "rangeEnd": "10.1.0.254"}],
        [{"subnet": "fd00:1::/64", "gateway": "fd00:1::1",
          "rangeStart": "fd00:1::1", "rangeEnd": "fd00:1::ff"}]]
    assert bridge["ipam"]["dataDir"] == "/d"
    assert (bridge["mtu"], bridge["portIsolation"], bridge["ipMasqBackend"]) == \
        (1400, True, "iptables")
    assert doc["plugins"][3] == {"type": "firewall", "backend": "iptables",
                                 "ingressPolicy": "open"}
    parsed = parse_ipam_config(bridge["ipam"])  # host-local's own parser takes it
    assert [str(r.range_start) for s in parsed.range_sets for r in s] == \
        ["10.1.0.128", "fd00:1::1"]


def test_extra_plugins_go_after_the_firewall_before_loopback() -> None:
    doc = render_conflist(spec(extra_plugins=({"type": "dnsname", "capabilities":
                                               {"aliases": True}},)))
    assert [p["type"] for p in doc["plugins"]][-3:] == ["firewall", "dnsname", "loopback"]


def test_labels_and_options_ride_in_top_level_args_and_come_back() -> None:
    doc = render_conflist(spec(labels=(("app", "web"),), options=(("mtu", "1400"),)))
    assert doc["args"] == {"pycni": MANAGED_MARK, "podman_labels": {"app": "web"},
                           "podman_options": {"mtu": "1400"}}
    assert all("args" not in p for p in doc["plugins"])  # no plugin sees them
    view = view_of(loaded(doc), doc["args"])
    assert (view.labels, view.options, view.managed) == \
        ((("app", "web"),), (("mtu", "1400"),), True)
    assert (view.name, view.driver, view.bridge, view.ipam_driver) == \
        ("appnet", "bridge", "pycni-0123456789", "host-local")
    assert [(s.subnet, s.gateway, s.ip_range) for s in view.subnets] == \
        [("10.100.3.0/24", "10.100.3.1", "")]


@pytest.mark.parametrize(("plugin", "internal", "bridge"), [
    ({"type": "bridge", "bridge": "cni-podman1", "isGateway": False}, True, "cni-podman1"),
    ({"type": "bridge", "isGateway": True}, False, "pycni0"),
    ({"type": "macvlan", "master": "eth0"}, False, ""),
])
def test_foreign_conflists_are_described_too(plugin: dict[str, Any], internal: bool,
                                             bridge: str) -> None:
    doc = {"cniVersion": "0.4.0", "name": "podnet", "args": {"podman_labels": {"k": "v"}},
           "plugins": [{**plugin, "ipam": {"type": "host-local", "ranges": [[
               {"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]}}]}
    view = view_of(loaded(doc), doc["args"])
    assert (view.internal, view.bridge, view.managed, view.labels) == \
        (internal, bridge, False, (("k", "v"),))
    assert [s.subnet for s in view.subnets] == ["10.89.0.0/24"]
