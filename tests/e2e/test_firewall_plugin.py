"""`bridge` -> `firewall`, end to end, on a sandbox host whose forward policy drops.

The sandbox host gets Docker's ``iptables -P FORWARD DROP`` (iptables-nft), an nft table with
a ``policy drop`` forward chain, or both. Reachability is proven with packets (ping) from
container namespaces to an "outside" namespace and between containers; everything lives in
throwaway namespaces that the fixtures delete whatever happens.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from pycni.cni.conf import find_conflist
from pycni.cni.errors import CNIError
from pycni.cni.types import Result
from pycni.net import netns
from tests.e2e.bridge_support import REFERENCE_BIN, Sandbox, bridge_conflist, nsexec, ping

OUTSIDE = "10.200.0.2"


def fw_conflist(
    sandbox: Sandbox,
    *,
    name: str = "testnet",
    octet: int = 0,
    backend: str = "nftables",
    **fw_keys: Any,
) -> dict[str, Any]:
    conf = bridge_conflist(
        name=name,
        data_dir=sandbox.data_dir,
        bridge=f"br-{name}"[:15],
        ranges=[[{"subnet": f"10.99.{octet}.0/24"}]],
        ipMasqBackend=backend,
    )
    conf["plugins"].append({"type": "firewall", "backend": backend, **fw_keys})
    return conf


def drop_forward(sandbox: Sandbox, kind: str) -> None:
    """Make the sandbox host drop forwarded packets by policy, the way Docker or an nft
    firewall does."""
    if kind in ("iptables", "both"):
        for tool in ("iptables", "ip6tables"):
            out = nsexec(sandbox.host_ns, tool, "-P", "FORWARD", "DROP")
            assert out.returncode == 0, out.stderr
    if kind in ("nft", "both"):
        script = (
            "add table inet hostfw\n"
            "add chain inet hostfw forward { type filter hook forward priority 0; policy drop; }\n"
        )
        out = _nft_stdin(sandbox, script)
        assert out.returncode == 0, out.stderr


def _nft_stdin(sandbox: Sandbox, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net={sandbox.host_ns}", "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def firewall_only(sandbox: Sandbox, verb: str, cid: str, *, network: str = "testnet") -> None:
    """Run one verb of the firewall plugin alone (not the chain), as a runtime would."""
    conf = find_conflist(str(sandbox.conf_dir), network)
    plugin = next(p for p in conf.plugins if p["type"] == "firewall")
    stdin = json.dumps({"cniVersion": conf.cni_version, "name": conf.name, **plugin}).encode()
    with netns.enter(sandbox.host_ns):
        sandbox.invoker().exec_plugin("firewall", verb, stdin, sandbox.runtime_conf(cid))


def _ip(result: Result) -> str:
    return result.ips[0].ip


@pytest.fixture(params=["nftables", "iptables"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("drop", ["iptables", "nft", "both"])
def test_traffic_flows_despite_forward_drop_and_stops_after_del(
    sandbox: Sandbox, drop: str
) -> None:
    sandbox.write_conf(fw_conflist(sandbox))
    outside = sandbox.connect_outside()
    drop_forward(sandbox, drop)
    a, b = sandbox.add("a"), sandbox.add("b")
    ca, cb = sandbox.containers["a"], sandbox.containers["b"]
    assert ping(ca, OUTSIDE)
    assert ping(cb, OUTSIDE)
    # br_netfilter is on: bridged container-to-container traffic crosses the forward hook
    assert ping(ca, _ip(b))
    assert ping(cb, _ip(a))
    firewall_only(sandbox, "DEL", "a")
    assert not ping(ca, OUTSIDE, wait=1)
    assert ping(cb, OUTSIDE)  # the other container keeps its accept
    assert outside
    sandbox.delete("a")
    sandbox.delete("b")
    assert 'comment "' not in _set_elements(sandbox)


def test_iptables_backend_beats_docker_forward_drop(sandbox: Sandbox) -> None:
    sandbox.write_conf(fw_conflist(sandbox, backend="iptables"))
    sandbox.connect_outside()
    drop_forward(sandbox, "iptables")
    a, b = sandbox.add("a"), sandbox.add("b")
    assert ping(sandbox.containers["a"], OUTSIDE)
    assert ping(sandbox.containers["a"], _ip(b))
    sandbox.check("a")
    save = nsexec(sandbox.host_ns, "iptables-save", "-t", "filter").stdout
    assert "-A FORWARD -m comment --comment pycni-forward -j PYCNI-FORWARD" in save
    assert "table inet pycni" not in sandbox.nft_ruleset()  # one backend, never both
    firewall_only(sandbox, "DEL", "a")
    assert not ping(sandbox.containers["a"], OUTSIDE, wait=1)
    assert ping(sandbox.containers["b"], _ip(a).rsplit(".", 1)[0] + ".1")
    sandbox.delete("a")
    sandbox.delete("b")
    save = nsexec(sandbox.host_ns, "iptables-save", "-t", "filter").stdout
    assert "-s 10.99.0." not in save.replace("-s 10.99.0.0/24", "")


def _set_elements(sandbox: Sandbox) -> str:
    out = nsexec(sandbox.host_ns, "nft", "list", "map", "inet", "pycni", "fwd4")
    return out.stdout


def _two_networks(sandbox: Sandbox, backend: str, **n2_keys: Any) -> tuple[str, str, str, str]:
    sandbox.write_conf(fw_conflist(sandbox, name="n1", octet=1, backend=backend), "n1.conflist")
    sandbox.write_conf(
        fw_conflist(sandbox, name="n2", octet=2, backend=backend, **n2_keys), "n2.conflist"
    )
    sandbox.connect_outside()
    drop_forward(sandbox, "iptables")
    a = sandbox.add("a", network="n1")
    b = sandbox.add("b", network="n2")
    return sandbox.containers["a"], _ip(a), sandbox.containers["b"], _ip(b)


def test_two_networks_are_isolated_and_both_reach_outside(sandbox: Sandbox, backend: str) -> None:
    ca, ip_a, cb, ip_b = _two_networks(sandbox, backend)
    assert ping(ca, OUTSIDE)
    assert ping(cb, OUTSIDE)
    assert not ping(ca, ip_b, wait=1)
    assert not ping(cb, ip_a, wait=1)
    sandbox.delete("a", network="n1")
    sandbox.delete("b", network="n2")


def test_isolation_holds_on_a_host_whose_forward_policy_accepts(sandbox: Sandbox) -> None:
    """Isolation is pycni's own drop, not a side effect of the host's DROP policy."""
    sandbox.write_conf(fw_conflist(sandbox, name="n1", octet=1), "n1.conflist")
    sandbox.write_conf(fw_conflist(sandbox, name="n2", octet=2), "n2.conflist")
    a, b = sandbox.add("a", network="n1"), sandbox.add("b", network="n2")
    assert not ping(sandbox.containers["a"], _ip(b), wait=1)
    assert not ping(sandbox.containers["b"], _ip(a), wait=1)


def test_open_ingress_policy_lets_the_other_network_in(sandbox: Sandbox, backend: str) -> None:
    ca, ip_a, cb, ip_b = _two_networks(sandbox, backend, ingressPolicy="open")
    assert ping(ca, ip_b)  # n2 is open: n1 may connect in, and the replies return
    assert not ping(cb, ip_a, wait=1)  # n1 keeps the default: n2 may not connect in


def test_gc_removes_entries_of_attachments_not_valid(sandbox: Sandbox, backend: str) -> None:
    sandbox.write_conf(fw_conflist(sandbox, backend=backend))
    sandbox.connect_outside()
    drop_forward(sandbox, "iptables")
    a, b = sandbox.add("a"), sandbox.add("b")
    conf = find_conflist(str(sandbox.conf_dir), "testnet")
    (sandbox.cache_dir / "results" / "testnet-b-eth0").unlink()  # the runtime forgot b
    with netns.enter(sandbox.host_ns):
        sandbox.invoker().gc(conf, [("a", "eth0")])
    state = _fw_state(sandbox, backend)
    assert _ip(a) in state
    assert _ip(b) not in state
    assert ping(sandbox.containers["a"], OUTSIDE)
    assert not ping(sandbox.containers["b"], OUTSIDE, wait=1)
    sandbox.check("a")


def _fw_state(sandbox: Sandbox, backend: str) -> str:
    if backend == "nftables":
        return _set_elements(sandbox)
    return nsexec(sandbox.host_ns, "iptables-save", "-t", "filter").stdout


def test_check_and_status_notice_a_host_that_rebuilt_its_forward_chain(sandbox: Sandbox) -> None:
    sandbox.write_conf(fw_conflist(sandbox))
    sandbox.connect_outside()
    drop_forward(sandbox, "iptables")
    sandbox.add("a")
    sandbox.check("a")
    conf = find_conflist(str(sandbox.conf_dir), "testnet")
    with netns.enter(sandbox.host_ns):
        sandbox.invoker().status(conf)
    # Docker restarting rebuilds FORWARD: our accept at its top is gone.
    assert nsexec(sandbox.host_ns, "iptables", "-F", "FORWARD").returncode == 0
    assert not ping(sandbox.containers["a"], OUTSIDE, wait=1)
    with netns.enter(sandbox.host_ns), pytest.raises(CNIError) as err:
        sandbox.invoker().status(conf)
    assert err.value.code == 51
    assert "ip filter FORWARD" in err.value.details
    with pytest.raises(CNIError, match="no pycni accept"):
        sandbox.check("a")
    sandbox.add("b")  # the next ADD puts the accept back
    assert ping(sandbox.containers["a"], OUTSIDE)
    sandbox.check("a")


def test_add_without_prev_result_is_refused(sandbox: Sandbox) -> None:
    sandbox.write_conf(fw_conflist(sandbox))
    with pytest.raises(CNIError, match="prevResult") as err:
        firewall_only(sandbox, "ADD", "a")
    assert err.value.code == 7


@pytest.mark.parametrize(
    ("key", "value"),
    [("ingressPolicy", "isolated"), ("backend", "firewalld"), ("iptablesAdminChainName", "X")],
)
def test_unimplemented_reference_keys_are_code_2(sandbox: Sandbox, key: str, value: str) -> None:
    conf = fw_conflist(sandbox)
    conf["plugins"][1][key] = value
    sandbox.write_conf(conf)
    with pytest.raises(CNIError) as err:
        sandbox.add("a")
    assert err.value.code == 2
    assert key in err.value.msg
    assert sandbox.allocations() == []
    assert sandbox.host_veths() == set()


def test_same_reachability_as_the_reference_firewall_plugin(sandbox: Sandbox) -> None:
    """Differential, on the feature both have: a FORWARD DROP host (iptables)."""
    if not (REFERENCE_BIN / "firewall").exists():
        pytest.fail("containernetworking-plugins is not installed (make test installs it)")
    sandbox.connect_outside()
    drop_forward(sandbox, "iptables")
    seen: dict[str, list[bool]] = {}
    for name, bin_dir, octet in (("ours", sandbox.bin_dir, 1), ("ref", REFERENCE_BIN, 2)):
        conf = fw_conflist(sandbox, name=name, octet=octet, backend="iptables")
        conf["cniVersion"] = "1.0.0"
        sandbox.write_conf(conf, f"{name}.conflist")
        ids = [f"{name}-1", f"{name}-2"]
        results = [sandbox.add(cid, network=name, bin_dir=bin_dir) for cid in ids]
        first, second = (sandbox.containers[cid] for cid in ids)
        reach = [ping(first, OUTSIDE, wait=1), ping(first, _ip(results[1]), wait=1)]
        sandbox.delete(ids[0], network=name, bin_dir=bin_dir)
        reach.append(ping(second, OUTSIDE, wait=1))
        sandbox.delete(ids[1], network=name, bin_dir=bin_dir)
        reach.append(ping(second, OUTSIDE, wait=1))  # the whole attachment is gone
        seen[name] = reach
    assert seen["ours"] == seen["ref"] == [True, True, True, False]


def test_dual_stack_ipv6_flows_despite_forward_drop(sandbox: Sandbox, backend: str) -> None:
    """IPv6 between containers crosses the forward hook (br_netfilter) and gets accepted."""
    conf = fw_conflist(sandbox, backend=backend)
    conf["plugins"][0]["ipam"]["ranges"].append([{"subnet": "fd00:99::/64"}])
    sandbox.write_conf(conf)
    drop_forward(sandbox, "both" if backend == "nftables" else "iptables")
    sandbox.add("a")
    b = sandbox.add("b")
    v6 = next(ip.ip for ip in b.ips if ip.family == 6)
    assert ping(sandbox.containers["a"], v6)
    firewall_only(sandbox, "DEL", "a")
    firewall_only(sandbox, "DEL", "b")
    assert not ping(sandbox.containers["a"], v6, wait=1)
