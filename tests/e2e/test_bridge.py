"""`bridge` + `host-local` + masquerade, end to end through the installed executables.

Everything runs in a sandbox host netns; containers and an "outside" host are throwaway
namespaces. Connectivity is proven with packets (ping), state is read back from the kernel.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from pycni.cni.conf import find_conflist
from pycni.cni.errors import CNIError
from pycni.cni.types import Result
from pycni.net import netns
from tests.e2e.bridge_support import (
    REFERENCE_BIN,
    Sandbox,
    bridge_conflist,
    ip_json,
    link_names,
    nsexec,
    ping,
)
from tests.support import exec_plugin, go_cni_ip_range, libcni_stdin, run_cli


@pytest.fixture(params=["nftables", "iptables"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _ip(result: Result) -> str:
    return result.ips[0].ip


def test_two_containers_reach_each_other_and_the_gateway(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    a, b = sandbox.add("a"), sandbox.add("b")
    assert [i.name for i in a.interfaces][0::2] == ["pycni0", "eth0"]
    assert a.interfaces[2].sandbox == sandbox.containers["a"]
    assert a.ips[0].gateway == "10.99.0.1"
    assert a.ips[0].interface == 2
    assert [(r.dst, r.gw) for r in a.routes] == [("0.0.0.0/0", "10.99.0.1")]
    assert _ip(a) != _ip(b)
    assert ping(sandbox.containers["a"], _ip(b))
    assert ping(sandbox.containers["b"], "10.99.0.1")
    # the gateway lives on the bridge, forwarding is on in the sandbox host only
    bridge = ip_json(sandbox.host_ns, "addr", "show", "pycni0")[0]
    assert {"10.99.0.1"} <= {x["local"] for x in bridge["addr_info"]}
    assert nsexec(sandbox.host_ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"


def test_masquerade_reaches_an_outside_host_with_no_route_back(
    sandbox: Sandbox, backend: str
) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, ipMasqBackend=backend))
    outside = sandbox.connect_outside()
    sandbox.add("a")
    assert ping(sandbox.containers["a"], "10.200.0.2")
    sandbox.delete("a")
    netns.remove(sandbox.containers.pop("a"))
    sandbox.add("a")  # a new container in a new netns, same id
    assert ping(sandbox.containers["a"], "10.200.0.2")
    assert outside


def test_without_masquerade_the_outside_host_cannot_answer(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, ipMasq=False))
    sandbox.connect_outside()
    sandbox.add("a")
    assert not ping(sandbox.containers["a"], "10.200.0.2", wait=1)


def test_check_passes_after_add_and_fails_after_damage(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    sandbox.add("a")
    sandbox.check("a")
    assert nsexec(sandbox.containers["a"], "ip", "addr", "flush", "dev", "eth0").returncode == 0
    with pytest.raises(CNIError, match=r"address 10\.99\.0"):
        sandbox.check("a")


def test_del_twice_and_del_after_netns_is_gone_free_ip_and_rules(
    sandbox: Sandbox, backend: str
) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, ipMasqBackend=backend))
    sandbox.add("a")
    sandbox.add("b")
    assert len(sandbox.allocations()) == 2
    assert len(_container_rules(sandbox, backend)) == 2  # the probe sees rules when they exist
    sandbox.delete("a")
    sandbox.delete("a")
    netns.remove(sandbox.containers["b"])  # the container died: its netns and veth are gone
    sandbox.delete("b")
    assert sandbox.allocations() == []
    assert sandbox.host_veths() == set()
    assert _container_rules(sandbox, backend) == [], _firewall_state(sandbox, backend)
    assert list((sandbox.cache_dir / "results").iterdir()) == []


def _container_rules(sandbox: Sandbox, backend: str) -> list[str]:
    """Per-container firewall state (nft map elements / iptables rules naming a container IP);
    the per-network chain that says what to exempt is shared and stays."""
    if backend == "nftables":
        pattern = r"(10\.99\.0\.\d+)(?: comment \"[^\"]*\")? :"
    else:
        pattern = r"-s (10\.99\.0\.\d+)/32"
    return re.findall(pattern, _firewall_state(sandbox, backend))


def _firewall_state(sandbox: Sandbox, backend: str) -> str:
    if backend == "nftables":
        return sandbox.nft_ruleset()
    out = nsexec(sandbox.host_ns, "iptables-save", "-t", "nat")
    return out.stdout


def test_go_cni_ip_ranges_and_capitalised_static_keys_are_read_as_the_reference_reads_them(
    sandbox: Sandbox,
) -> None:
    """bridge (delegating to host-local) run with the exact bytes libcni 1.1 writes for go-cni's
    ``ipRanges`` capability (its ``IPRanges`` struct: ``Subnet``, ``RangeStart``...), from a
    conflist spelling static keys as Go's decoder also accepts them."""
    conf = bridge_conflist(data_dir=sandbox.data_dir, version="1.0.0")
    plugin = conf["plugins"][0]
    plugin["IsGateway"] = plugin.pop("isGateway")
    plugin["IPAM"] = {"Type": "host-local", "DataDir": str(sandbox.data_dir),
                      "Ranges": plugin.pop("ipam")["ranges"]}
    plugin["capabilities"] = {"ipRanges": True}
    ranges = [[go_cni_ip_range("10.98.7.0/24", range_start="10.98.7.50",
                               range_end="10.98.7.60", gateway="10.98.7.1")]]
    stdin = libcni_stdin(plugin, name="testnet", cni_version="1.0.0",
                         capability_args={"ipRanges": ranges})
    assert b'"runtimeConfig":{"ipRanges":[[{"Subnet":"10.98.7.0/24","RangeStart":"10.98.7.50",' \
           b'"RangeEnd":"10.98.7.60","Gateway":"10.98.7.1"}]]}' in stdin
    container = sandbox.make_netns("go", lo_up=False)
    env = {"CNI_CONTAINERID": "go", "CNI_NETNS": container, "CNI_IFNAME": "eth0",
           "CNI_PATH": str(sandbox.bin_dir)}
    added = exec_plugin(sandbox.bin_dir / "bridge", command="ADD", config=stdin, env=env,
                        run_in=sandbox.host_ns)
    assert added.code == 0, added.stdout + added.stderr
    ips = [(ip["address"], ip["gateway"]) for ip in added.json()["ips"]]
    assert ips == [("10.98.7.50/24", "10.98.7.1"), ("10.99.0.2/24", "10.99.0.1")]
    assert ping(container, "10.98.7.1")
    assert sandbox.allocations() == ["10.98.7.50", "10.99.0.2"]
    deleted = exec_plugin(sandbox.bin_dir / "bridge", command="DEL", config=stdin,
                          env={**env, "CNI_NETNS": ""}, run_in=sandbox.host_ns)
    assert deleted.code == 0, deleted.stdout + deleted.stderr
    assert sandbox.allocations() == []
    assert sandbox.host_veths() == set()


def test_exhausted_pool_leaves_nothing_behind(sandbox: Sandbox) -> None:
    one = [[{"subnet": "10.99.0.0/29", "rangeStart": "10.99.0.2", "rangeEnd": "10.99.0.2"}]]
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, ranges=one))
    sandbox.add("a")
    before_rules = sandbox.nft_ruleset()
    with pytest.raises(CNIError, match="no IP addresses available"):
        sandbox.add("b")
    assert sandbox.allocations() == ["10.99.0.2"]
    assert len(sandbox.host_veths()) == 1
    assert "eth0" not in link_names(sandbox.containers["b"])
    assert sandbox.nft_ruleset() == before_rules
    assert sorted(p.name for p in (sandbox.cache_dir / "results").iterdir()) == ["testnet-a-eth0"]


def test_a_failed_second_attachment_in_a_netns_leaves_the_first_alone(sandbox: Sandbox) -> None:
    """A second attachment (another container id) asking for the same CNI_IFNAME in the same
    netns fails on the name; the rollback DEL of that failure removes only what is provably
    its own (its derived host veth), never the first attachment's eth0."""
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    first = sandbox.add("a")
    sandbox.containers["b"] = sandbox.containers["a"]
    with pytest.raises(CNIError, match="eth0 already exists"):
        sandbox.add("b")
    assert "eth0" in link_names(sandbox.containers["a"])
    assert sandbox.host_veths() == {first.interfaces[1].name}
    assert sandbox.allocations() == [_ip(first)]
    assert ping(sandbox.containers["a"], "10.99.0.1")
    sandbox.delete("b")  # the runtime's DEL of the failed attachment: still not a's
    assert "eth0" in link_names(sandbox.containers["a"])
    assert ping(sandbox.containers["a"], "10.99.0.1")


def test_a_repeated_cli_add_of_a_live_attachment_is_refused_and_keeps_it(
    sandbox: Sandbox,
) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    container = sandbox.make_netns("c", lo_up=False)
    args = ["add", "testnet", container, "--container-id", "c", "--conf-dir",
            str(sandbox.conf_dir), "--cni-path", str(sandbox.bin_dir), "--cache-dir",
            str(sandbox.cache_dir)]
    first = run_cli(args, run_in=sandbox.host_ns)
    assert first.code == 0, first.stdout + first.stderr
    again = run_cli(args, run_in=sandbox.host_ns)
    assert again.code == 1
    assert again.json()["code"] == 4
    assert "already exists" in again.json()["msg"]
    assert sandbox.host_veths() == {first.json()["interfaces"][1]["name"]}
    assert sandbox.allocations() == [first.json()["ips"][0]["address"].split("/")[0]]
    assert ping(container, "10.99.0.1")


def test_missing_ipam_plugin_leaves_nothing_behind(sandbox: Sandbox) -> None:
    conf = bridge_conflist(data_dir=sandbox.data_dir)
    conf["plugins"][0]["ipam"]["type"] = "no-such-ipam"
    sandbox.write_conf(conf)
    with pytest.raises(CNIError, match="no-such-ipam") as err:
        sandbox.add("a")
    assert err.value.code == 7
    assert "pycni0" not in link_names(sandbox.host_ns)
    assert sandbox.host_veths() == set()
    assert "eth0" not in link_names(sandbox.containers["a"])


def test_twenty_parallel_adds_get_distinct_ips_and_parallel_dels_leave_nothing(
    sandbox: Sandbox,
) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    ids = [f"c{i}" for i in range(20)]
    for cid in ids:
        sandbox.runtime_conf(cid)  # make the namespaces up front, in this thread

    def add(cid: str) -> str:
        return _ip(sandbox.add(cid))

    with ThreadPoolExecutor(max_workers=20) as pool:
        ips = list(pool.map(add, ids))
    assert len(set(ips)) == 20
    assert len(sandbox.allocations()) == 20
    assert len(sandbox.host_veths()) == 20
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(sandbox.delete, ids))
    assert sandbox.allocations() == []
    assert sandbox.host_veths() == set()
    assert _container_rules(sandbox, "nftables") == []


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/33"}]]}}, 7, "subnet"),
        (
            {
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.99.0.0/24"}], [{"subnet": "10.99.0.128/25"}]],
                }
            },
            7,
            "overlap",
        ),
        ({"ipMasqBackend": "pf"}, 7, "ipMasqBackend"),
        ({"hairpinMode": True, "promiscMode": True}, 7, "promiscMode"),
        ({"vlanTrunk": [{"id": 5}]}, 2, "vlanTrunk"),
        ({"isGatway": True}, 2, "isGatway"),
        ({"mtu": 20}, 7, "mtu"),
    ],
)
def test_bad_config_is_refused_naming_the_field_with_nothing_created(
    sandbox: Sandbox, change: dict[str, object], code: int, field: str
) -> None:
    conf = bridge_conflist(data_dir=sandbox.data_dir)
    if "ipam" in change:
        change = {"ipam": {**change["ipam"], "dataDir": str(sandbox.data_dir)}}  # type: ignore[dict-item]
    conf["plugins"][0].update(change)
    sandbox.write_conf(conf)
    with pytest.raises(CNIError) as err:
        sandbox.add("a")
    assert err.value.code == code
    assert field.lower() in (err.value.msg + err.value.details).lower()
    assert link_names(sandbox.host_ns) == {"lo"}
    assert sandbox.allocations() == []


def test_dual_stack_ipv6_is_usable_immediately(sandbox: Sandbox) -> None:
    ranges = [[{"subnet": "10.99.0.0/24"}], [{"subnet": "fd00:99::/64"}]]
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, ranges=ranges))
    a, b = sandbox.add("a"), sandbox.add("b")
    v6 = [ip.ip for ip in b.ips if ip.family == 6]
    assert v6
    assert {ip.family for ip in a.ips} == {4, 6}
    # No DAD stall: the very first packet goes through, with no sleep in between.
    assert ping(sandbox.containers["a"], v6[0])
    assert ping(sandbox.containers["a"], "fd00:99::1")
    addr = ip_json(sandbox.containers["a"], "-6", "addr", "show", "eth0", "scope", "global")[0]
    assert not any(x.get("tentative") for x in addr["addr_info"])
    assert ("::/0", "fd00:99::1") in {(r.dst, r.gw) for r in a.routes}


def test_result_versions_render(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, version="0.3.1"))
    result = sandbox.add("a")
    doc = result.to_dict()
    assert doc["cniVersion"] == "0.3.1"
    assert doc["ips"][0]["version"] == "4"
    assert "mtu" not in json.dumps(doc["interfaces"])


def _container_state(path: str, subnet_octet: str) -> dict[str, object]:
    """Container-side kernel state, with the network's distinguishing octet masked."""

    def mask(text: str) -> str:
        return text.replace(f"10.99.{subnet_octet}.", "10.99.X.")

    link = ip_json(path, "-d", "link", "show", "eth0")[0]
    addrs = ip_json(path, "addr", "show", "eth0", "scope", "global")[0]["addr_info"]
    routes = ip_json(path, "route", "show")
    return {
        "kind": link["linkinfo"]["info_kind"],
        "mtu": link["mtu"],
        "up": "UP" in link["flags"],
        "addrs": sorted(mask(f"{a['local']}/{a['prefixlen']}") for a in addrs if "local" in a),
        "routes": sorted((mask(r["dst"]), mask(r.get("gateway", ""))) for r in routes),
    }


def _result_shape(result: Result, subnet_octet: str) -> dict[str, object]:
    """What must match between the two results (the host veth name and MACs differ)."""
    doc = result.to_dict()
    masked = json.loads(json.dumps(doc).replace(f"10.99.{subnet_octet}.", "10.99.X."))
    return {
        "interfaces": [(i["name"].startswith("veth"), "sandbox" in i) for i in doc["interfaces"]],
        "ips": masked["ips"],
        "routes": masked["routes"],
    }


def test_same_container_state_as_the_reference_plugins(sandbox: Sandbox) -> None:
    """Differential: the Debian reference bridge + host-local and ours, one config."""
    if not (REFERENCE_BIN / "bridge").exists():
        pytest.fail("containernetworking-plugins is not installed (make test installs it)")
    seen = []
    for name, bin_dir, octet in (("ours", sandbox.bin_dir, "1"), ("ref", REFERENCE_BIN, "2")):
        conf = bridge_conflist(
            name=name,
            data_dir=sandbox.data_dir,
            bridge=f"br-{name}",
            mtu=1400,
            version="1.0.0",
            ranges=[[{"subnet": f"10.99.{octet}.0/24"}]],
            ipMasqBackend="iptables",
        )
        sandbox.write_conf(conf, filename=f"{name}.conflist")
        result = sandbox.add(f"c-{name}", network=name, bin_dir=bin_dir)
        seen.append(
            (_container_state(sandbox.containers[f"c-{name}"], octet), _result_shape(result, octet))
        )
    (ours_state, ours_result), (ref_state, ref_result) = seen
    assert ours_state == ref_state
    assert ours_result == ref_result
    for name, bin_dir in (("ours", sandbox.bin_dir), ("ref", REFERENCE_BIN)):
        sandbox.delete(f"c-{name}", network=name, bin_dir=bin_dir)


def test_gc_removes_ip_and_masquerade_of_attachments_not_valid(sandbox: Sandbox) -> None:
    """Plugin-level GC: the runtime forgot `b` (no cache entry), GC still cleans its state."""
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    a, b = sandbox.add("a"), sandbox.add("b")
    (sandbox.cache_dir / "results" / "testnet-b-eth0").unlink()
    conf = find_conflist(str(sandbox.conf_dir), "testnet")
    with netns.enter(sandbox.host_ns):
        sandbox.invoker().gc(conf, [("a", "eth0")])
    assert sandbox.allocations() == [_ip(a)]
    assert _container_rules(sandbox, "nftables") == [_ip(a)]
    assert _ip(b) not in sandbox.nft_ruleset()
    sandbox.check("a")  # the valid attachment is untouched


def test_status_is_ok_on_a_usable_network(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    conf = find_conflist(str(sandbox.conf_dir), "testnet")
    with netns.enter(sandbox.host_ns):
        sandbox.invoker().status(conf)


def test_status_reports_an_exhausted_pool_as_code_50(sandbox: Sandbox) -> None:
    one = [[{"subnet": "10.99.0.0/29", "rangeStart": "10.99.0.2", "rangeEnd": "10.99.0.2"}]]
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, ranges=one))
    sandbox.add("a")
    conf = find_conflist(str(sandbox.conf_dir), "testnet")
    with netns.enter(sandbox.host_ns), pytest.raises(CNIError) as err:
        sandbox.invoker().status(conf)
    assert err.value.code == 50


def _bridge_addrs(sandbox: Sandbox) -> set[str]:
    (bridge,) = ip_json(sandbox.host_ns, "addr", "show", "pycni0")
    return {f"{a['local']}/{a['prefixlen']}" for a in bridge["addr_info"] if a["family"] == "inet"}


def _bridge_with_address(sandbox: Sandbox, cidr: str) -> None:
    for argv in (("ip", "link", "add", "pycni0", "type", "bridge"),
                 ("ip", "addr", "add", cidr, "dev", "pycni0")):
        assert nsexec(sandbox.host_ns, *argv).returncode == 0


def test_a_bridge_with_another_address_in_the_subnet_is_refused(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    _bridge_with_address(sandbox, "10.99.0.5/24")
    refused = re.escape("already has an IP address different from 10.99.0.1/24")
    with pytest.raises(CNIError, match=refused):
        sandbox.add("a")
    assert _bridge_addrs(sandbox) == {"10.99.0.5/24"}  # the gateway we tried is gone again
    assert sandbox.host_veths() == set()


def test_force_address_replaces_the_other_address(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, forceAddress=True))
    _bridge_with_address(sandbox, "10.99.0.5/24")
    a = sandbox.add("a")
    assert _bridge_addrs(sandbox) == {"10.99.0.1/24"}
    assert ping(sandbox.containers["a"], "10.99.0.1")
    sandbox.add("b")  # the address in place: nothing to do
    assert _bridge_addrs(sandbox) == {"10.99.0.1/24"}
    assert a.ips[0].gateway == "10.99.0.1"


def test_the_bridge_mac_is_pinned_at_creation_and_reported(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    results = [sandbox.add(cid) for cid in ("a", "b", "c")]
    (bridge,) = ip_json(sandbox.host_ns, "link", "show", "pycni0")
    assert {r.interfaces[0].mac for r in results} == {bridge["address"]}
    sandbox.delete("a")
    (after,) = ip_json(sandbox.host_ns, "link", "show", "pycni0")
    assert after["address"] == bridge["address"]


def test_an_unpinned_bridge_reports_its_mac_after_our_port_joined(sandbox: Sandbox) -> None:
    """A bridge made by someone else, MAC not pinned, takes the lowest port MAC: the result
    says what it is once our port has joined."""
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    for argv in (("ip", "link", "add", "pycni0", "type", "bridge"),
                 ("ip", "link", "add", "vfore0", "address", "fe:ff:ff:ff:ff:fe", "type", "veth",
                  "peer", "name", "vfore1"),
                 ("ip", "link", "set", "vfore0", "master", "pycni0")):
        assert nsexec(sandbox.host_ns, *argv).returncode == 0
    results = [sandbox.add(cid) for cid in ("a", "b", "c")]
    (bridge,) = ip_json(sandbox.host_ns, "link", "show", "pycni0")
    assert bridge["address"] != "fe:ff:ff:ff:ff:fe"  # it moved to one of our ports
    assert results[-1].interfaces[0].mac == bridge["address"]
