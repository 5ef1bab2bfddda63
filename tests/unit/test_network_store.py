"""The conf dir store, the results cache read per network, the settings and the report."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import cache
from pycni.cni.errors import CNIError
from pycni.dns.records import RecordStore, Registration
from pycni.network import manager, report, store
from pycni.network.attachments import container_names, count_attachments, list_attachments
from pycni.network.config import load_settings
from pycni.network.manager import NetworkSummary
from pycni.network.render import dns_plugin, render_conflist
from pycni.network.spec import NetworkSpec, SubnetSpec
from pycni.network.subnets import AddressPool
from pycni.network.view import DNS_PLUGIN_TYPES
from pycni.plugins.dns_conf import DNSNAME_DOMAIN


def doc_for(name: str, subnet: str = "10.100.3.0/24") -> dict[str, Any]:
    net = ipaddress.ip_network(subnet)
    return render_conflist(NetworkSpec(
        name=name, bridge=f"br-{name}"[:15],
        subnets=(SubnetSpec(subnet=net, gateway=net.network_address + 1),),
        labels=(("team", "a"),)))


def test_write_new_is_atomic_and_never_replaces(tmp_path: Path) -> None:
    path = store.write_new(str(tmp_path), "appnet", doc_for("appnet"))
    assert path == str(tmp_path / "50-appnet.conflist")
    before = Path(path).read_bytes()
    with pytest.raises(CNIError, match="already exists"):
        store.write_new(str(tmp_path), "appnet", doc_for("appnet", "10.9.9.0/24"))
    assert Path(path).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["50-appnet.conflist"]  # no temp file left
    (network,) = store.load_networks(str(tmp_path))
    assert (network.name, network.path, network.view.bridge) == ("appnet", path, "br-appnet")
    assert network.conflist.cni_version == "1.1.0"


def test_load_skips_what_libcni_skips_and_keeps_its_order(tmp_path: Path) -> None:
    (tmp_path / "00-broken.conflist").write_text("{not json")
    (tmp_path / "01-noplugins.conflist").write_text('{"name": "x", "cniVersion": "1.0.0"}')
    (tmp_path / "05-single.conf").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "single", "type": "bridge"}))
    store.write_new(str(tmp_path), "appnet", doc_for("appnet"))
    (tmp_path / "notes.txt").write_text("ignored")
    names = [n.name for n in store.load_networks(str(tmp_path))]
    assert names == ["appnet", "single"]  # conflists first, then single-plugin files
    with pytest.raises(CNIError, match="no such network: nope"):
        store.find_network(store.load_networks(str(tmp_path)), "nope", str(tmp_path))


def test_withdraw_hides_the_network_and_restore_brings_it_back(tmp_path: Path) -> None:
    store.write_new(str(tmp_path), "appnet", doc_for("appnet"))
    (network,) = store.load_networks(str(tmp_path))
    hidden = store.withdraw(network)
    assert store.load_networks(str(tmp_path)) == []
    store.restore(hidden, network)
    assert [n.name for n in store.load_networks(str(tmp_path))] == ["appnet"]


def _cache_entry(cache_dir: Path, network: str, cid: str, ifname: str = "eth0",
                 **kw: Any) -> None:
    result = {"cniVersion": "1.0.0",
              "interfaces": [{"name": "br"}, {"name": "veth1"},
                             {"name": ifname, "mac": "02:00:00:00:00:01", "sandbox": "/n"}],
              "ips": [{"address": "10.1.0.5/24", "interface": 2},
                      {"address": "fd00::5/64", "interface": 2}]}
    cache.write(str(cache_dir), cache.CachedAttachment(
        network=network, container_id=cid, ifname=ifname, netns="/n", result=result, **kw))


def test_attachments_are_counted_from_file_names_and_ambiguous_ones_are_read(
        tmp_path: Path) -> None:
    _cache_entry(tmp_path, "app", "c1")
    _cache_entry(tmp_path, "app", "db-c2")  # file app-db-c2-eth0: app's or app-db's?
    _cache_entry(tmp_path, "app-db", "c3")
    _cache_entry(tmp_path, "gone", "c4")  # a network that no longer exists
    (tmp_path / "results" / ".tmp-x").write_text("")
    assert count_attachments(str(tmp_path), {"app", "app-db", "empty"}) == \
        {"app": 2, "app-db": 1, "empty": 0}
    assert count_attachments(str(tmp_path / "nocache"), {"app"}) == {"app": 0}


def test_attachments_carry_names_addresses_and_mac(tmp_path: Path) -> None:
    _cache_entry(tmp_path, "app", "podmanid",
                 cni_args=(("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web")))
    _cache_entry(tmp_path, "app", "runid")
    _cache_entry(tmp_path, "app", "stranger")
    state = tmp_path / "state" / "containers" / "db"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"name": "db", "id": "runid"}))
    names = container_names(str(tmp_path / "state"))
    assert names == {"runid": "db"}
    found = list_attachments(str(tmp_path), "app", names=names)
    assert [(a.label, a.container_id) for a in found] == \
        [("db", "runid"), ("strangerxxxx"[:8], "stranger"), ("web", "podmanid")]
    web = found[-1]
    assert (web.ips, web.mac, web.ifname, web.in_progress) == \
        (("10.1.0.5/24", "fd00::5/64"), "02:00:00:00:00:01", "eth0", False)


def test_settings_from_the_file_the_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "pycni.yaml"
    path.write_text("runtime:\n  conf_dir: /c\n  cni_path: [/a, /b]\n  cni_cache_dir: /k\n"
                    "network:\n  default_address_pools:\n    - {base: 172.30.0.0/16, size: 26}\n"
                    "  ipv6_pool: {base: 'fd12:3456::/48', size: 64}\n"
                    "  ipam_data_dir: /i\n  firewall_backend: iptables\n")
    s = load_settings(path)
    assert (s.conf_dir, s.cni_path, s.cache_dir, s.ipam_data_dir, s.firewall_backend) == \
        ("/c", ("/a", "/b"), "/k", "/i", "iptables")
    assert [str(p) for p in s.pools()] == ["172.30.0.0/16 (/26 each)",
                                           "fd12:3456::/48 (/64 each)"]
    s = load_settings(path, env={"NETCONFPATH": "/e", "CNI_PATH": "/x:/y"},
                      overrides={"conf_dir": None, "cache_dir": "/flag"})
    assert (s.conf_dir, s.cni_path, s.cache_dir) == ("/e", ("/x", "/y"), "/flag")
    assert load_settings(None).pools()[0] == AddressPool(
        ipaddress.ip_network("10.100.0.0/14"), 24)


@pytest.mark.parametrize(("text", "message"), [
    ("network:\n  nosuch: 1\n", "unknown network setting 'nosuch'"),
    ("network:\n  default_address_pools: []\n", "non-empty list"),
    ("network:\n  default_address_pools: [{base: 'fd00::/48', size: 64}]\n", "are IPv4"),
    ("network:\n  ipv6_pool: {base: 10.0.0.0/8, size: 24}\n", "must be an IPv6 prefix"),
    ("network:\n  firewall_backend: firewalld\n", "invalid network.firewall_backend"),
    ("network:\n  ipam_data_dir: relative\n", "absolute path"),
    ("network:\n  dns_run_dir: relative\n", "network.dns_run_dir must be an absolute path"),
    ("network:\n  dns_domain: -bad.test\n", "network.dns_domain '-bad.test' has a label"),
    ("network: [1]\n", "must be a mapping"),
])
def test_bad_settings_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pycni.yaml"
    path.write_text(text)
    with pytest.raises(CNIError, match=message):
        load_settings(path)


def test_ls_and_inspect_output(tmp_path: Path) -> None:
    store.write_new(str(tmp_path), "appnet", doc_for("appnet"))
    (network,) = store.load_networks(str(tmp_path))
    rows = [NetworkSummary(network=network, attachments=3)]
    table = report.ls_table(rows).splitlines()
    assert table[0].split() == ["NAME", "DRIVER", "SUBNETS", "GATEWAYS", "BRIDGE", "CONTAINERS",
                                "INTERNAL", "DNS"]
    assert table[1].split() == ["appnet", "bridge", "10.100.3.0/24", "10.100.3.1", "br-appnet",
                                "3", "no", "no"]
    line = json.loads(report.ls_json_lines(rows))
    assert (line["Name"], line["Containers"], line["Labels"], line["DNSEnabled"]) == \
        ("appnet", 3, {"team": "a"}, False)
    _cache_entry(tmp_path / "cache", "appnet", "c1")
    doc = report.inspect_document(network, list_attachments(str(tmp_path / "cache"), "appnet"))
    assert doc["IPAM"]["Config"] == [{"Subnet": "10.100.3.0/24", "Gateway": "10.100.3.1",
                                      "IPRange": ""}]
    assert doc["Labels"] == {"team": "a"}
    assert doc["Containers"] == [{
        "ContainerID": "c1", "Name": "", "Interface": "eth0", "IPv4Address": "10.1.0.5/24",
        "IPv6Address": "fd00::5/64", "IPs": ["10.1.0.5/24", "fd00::5/64"],
        "MacAddress": "02:00:00:00:00:01", "Netns": "/n", "InProgress": False, "DNSNames": []}]
    assert (doc["DNSEnabled"], doc["DNSDomain"]) == (False, "")
    assert doc["Config"]["name"] == "appnet"
    assert doc["Id"] == report.network_id("appnet")


def test_a_dns_network_shows_dns_and_the_names_its_resolver_holds(tmp_path: Path) -> None:
    """`create`'s pycni-dns plugin (and podman's dnsname) mark the network; inspect reads
    each attachment's names from the resolver's record store."""
    run_dir = tmp_path / "dns"
    doc = doc_for("appnet")
    doc["plugins"].insert(-1, dns_plugin(domain="dns.pycni", run_dir=str(run_dir)))
    (tmp_path / "conf").mkdir()
    store.write_new(str(tmp_path / "conf"), "appnet", doc)
    podman = doc_for("podnet", "10.100.4.0/24")
    podman["plugins"].append({"type": "dnsname", "capabilities": {"aliases": True}})
    store.write_new(str(tmp_path / "conf"), "podnet", podman)
    for cid in ("c1", "c2"):
        _cache_entry(tmp_path / "cache", "appnet", cid)
    RecordStore(str(run_dir)).write(Registration(network="appnet", container_id="c1",
                                                 ifname="eth0", names=("web", "www")))
    settings = load_settings(None, overrides={"conf_dir": str(tmp_path / "conf"),
                                              "cache_dir": str(tmp_path / "cache")})
    rows = manager.list_networks(settings)
    assert [r.split()[-1] for r in report.ls_table(rows).splitlines()] == ["DNS", "yes", "yes"]
    [(appnet, attached), (podnet, _)] = manager.inspect_networks(settings, ["appnet", "podnet"])
    doc = report.inspect_document(appnet, attached)
    assert (doc["DNSEnabled"], doc["DNSDomain"]) == (True, "dns.pycni")
    assert [(c["ContainerID"], c["DNSNames"]) for c in doc["Containers"]] == [
        ("c1", ["web", "www"]), ("c2", [])]
    assert report.inspect_document(podnet, [])["DNSDomain"] == DNSNAME_DOMAIN
    assert DNS_PLUGIN_TYPES == {"pycni-dns": "", "dnsname": DNSNAME_DOMAIN}
