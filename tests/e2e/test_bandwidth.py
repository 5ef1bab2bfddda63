"""`bridge` -> `bandwidth` end to end through the installed executables.

Rates are measured with iperf3 between the sandbox host and a container (server in the host
netns, client in the container: plain = the container sends = egress, ``-R`` = ingress), with
different ingress and egress limits so swapped directions fail. Kernel state is read back with
``tc -j`` / ``ip -j``, the independent oracle, and compared with the reference plugin's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from pycni.cni.conf import find_conflist
from pycni.cni.errors import CNIError
from pycni.cni.handle import open_netns_handle
from pycni.cni.skel import CmdArgs
from pycni.cni.types import PluginRequest, Result
from pycni.net import netns, tc
from pycni.plugins import bandwidth
from pycni.plugins.bandwidth import ifb_name
from tests.e2e.bridge_support import REFERENCE_BIN, Sandbox, bridge_conflist, link_names, nsexec
from tests.support import exec_plugin, go_cni_bandwidth, libcni_stdin

INGRESS = {"ingressRate": 8_000_000, "ingressBurst": 160_000}  # into the container
EGRESS = {"egressRate": 20_000_000, "egressBurst": 400_000}  # out of the container
SECONDS = 3
TOLERANCE = 0.30


def chained(
    sandbox: Sandbox, static: Mapping[str, int] | None = None, *, version: str = "1.1.0"
) -> dict[str, Any]:
    """bridge -> bandwidth, with ``static`` limit keys in the bandwidth plugin's config."""
    conf = bridge_conflist(data_dir=sandbox.data_dir, version=version)
    plugin = {"type": "bandwidth", "capabilities": {"bandwidth": True}, **(static or {})}
    conf["plugins"].append(plugin)
    return conf


def tc_json(ns: str, *argv: str) -> Any:
    out = nsexec(ns, "tc", "-j", *argv)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout or "[]")


def root_tbf(ns: str, dev: str) -> dict[str, Any] | None:
    roots = [q for q in tc_json(ns, "qdisc", "show", "dev", dev) if q.get("root")]
    return roots[0]["options"] if roots and roots[0]["kind"] == "tbf" else None


def host_veth(result: Result) -> str:
    return result.interfaces[1].name


def ip_link(ns: str, dev: str) -> dict[str, Any]:
    out = nsexec(ns, "ip", "-j", "-d", "link", "show", "dev", dev)
    assert out.returncode == 0, out.stderr
    found: dict[str, Any] = json.loads(out.stdout)[0]
    return found


def ifbs(ns: str) -> set[str]:
    return {n for n in link_names(ns) if n.startswith("bwp")}


# ---------------------------------------------------------------------------- iperf3


@pytest.fixture
def iperf_server(sandbox: Sandbox) -> Iterator[None]:
    """``iperf3 -s`` in the sandbox host, killed by PID in teardown."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={sandbox.host_ns}", "iperf3", "-s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def measure(container: str, *, reverse: bool) -> float:
    """Bits per second the receiver saw over SECONDS (client in ``container``)."""
    argv = ["iperf3", "-c", "10.99.0.1", "-t", str(SECONDS), "-J", *(["-R"] if reverse else [])]
    for _ in range(50):  # the server may still be starting
        out = nsexec(container, *argv, timeout=SECONDS + 20)
        report = json.loads(out.stdout or "{}")
        if out.returncode == 0 and "sum_received" in report.get("end", {}):
            return float(report["end"]["sum_received"]["bits_per_second"])
        time.sleep(0.1)
    raise AssertionError(f"iperf3 failed: {out.stdout[-500:]} {out.stderr[-500:]}")


def assert_near(measured: float, configured: int) -> None:
    assert abs(measured - configured) <= TOLERANCE * configured, (
        f"measured {measured / 1e6:.2f} Mbit/s, configured {configured / 1e6:.2f} Mbit/s"
    )


@pytest.mark.slow
@pytest.mark.usefixtures("iperf_server")
def test_measured_rates_follow_ingress_and_egress_limits(sandbox: Sandbox) -> None:
    sandbox.write_conf(chained(sandbox))
    sandbox.add("a", capability_args={"bandwidth": {**INGRESS, **EGRESS}})
    container = sandbox.containers["a"]
    ingress = measure(container, reverse=True)  # the host sends to the container
    egress = measure(container, reverse=False)  # the container sends
    print(f"measured ingress {ingress / 1e6:.2f} Mbit/s, egress {egress / 1e6:.2f} Mbit/s")
    assert_near(ingress, INGRESS["ingressRate"])
    assert_near(egress, EGRESS["egressRate"])


@pytest.mark.slow
@pytest.mark.usefixtures("iperf_server")
def test_without_limits_traffic_is_not_shaped(sandbox: Sandbox) -> None:
    sandbox.write_conf(chained(sandbox))
    sandbox.add("a")
    assert measure(sandbox.containers["a"], reverse=False) > 3 * EGRESS["egressRate"]


# ---------------------------------------------------------------------------- kernel state


def test_add_shapes_host_veth_and_ifb_and_del_removes_the_ifb(sandbox: Sandbox) -> None:
    sandbox.write_conf(chained(sandbox))
    result = sandbox.add("a", capability_args={"bandwidth": {**INGRESS, **EGRESS}})
    veth = host_veth(result)
    ifb = result.interfaces[-1]
    assert ifb.name == ifb_name("testnet", "a", "eth0")
    assert [i.name for i in result.interfaces[:3]] == ["pycni0", veth, "eth0"]
    assert result.ips[0].interface == 2  # indices into interfaces still hold
    # ingress: tbf on the host veth; egress: tbf on the ifb (rates in bytes/s)
    assert root_tbf(sandbox.host_ns, veth) == {"rate": 1_000_000, "burst": 20_000, "lat": 25_000}
    assert root_tbf(sandbox.host_ns, ifb.name) == {
        "rate": 2_500_000,
        "burst": 50_000,
        "lat": 25_000,
    }
    link = ip_link(sandbox.host_ns, ifb.name)
    assert link["linkinfo"]["info_kind"] == "ifb"
    assert link["mtu"] == ip_link(sandbox.host_ns, veth)["mtu"]
    assert link["address"] == ifb.mac
    assert "UP" in link["flags"]
    assert link["ifalias"].endswith("testnet/a/eth0")
    filters = tc_json(sandbox.host_ns, "filter", "show", "dev", veth, "ingress")
    actions = [a for f in filters for a in f.get("options", {}).get("actions", [])]
    assert [(a["mirred_action"], a["direction"], a["to_dev"]) for a in actions] == [
        ("redirect", "egress", ifb.name)
    ]
    sandbox.check("a")
    sandbox.delete("a")
    assert ifbs(sandbox.host_ns) == set()
    sandbox.delete("a")  # twice: already gone is success


def test_an_alias_of_255_bytes_is_cut_to_254_and_del_still_finds_the_ifb(
    sandbox: Sandbox,
) -> None:
    """A container id that makes the alias exactly 255 bytes, which the kernel refuses: the
    ifb used to be created, its alias refused, the ADD failed and the ifb stayed for good
    (no DEL or GC matches an ifb without our alias)."""
    cid = "c" * (255 - len(bandwidth.ifb_alias("testnet", "", "eth0")))
    assert len(f"{bandwidth._network_tag('testnet')}testnet/{cid}/eth0") == 255
    sandbox.write_conf(chained(sandbox))
    sandbox.add(cid, capability_args={"bandwidth": {**INGRESS, **EGRESS}})
    name = ifb_name("testnet", cid, "eth0")
    alias = ip_link(sandbox.host_ns, name)["ifalias"]
    assert len(alias.encode()) == 254
    assert bandwidth.owns_ifb(alias, "testnet")
    sandbox.delete(cid)
    assert ifbs(sandbox.host_ns) == set()


def test_del_with_the_veth_still_there_takes_our_qdiscs_off_it(sandbox: Sandbox) -> None:
    """bandwidth DEL alone (bridge not yet run): no redirect may point at a deleted ifb."""
    sandbox.write_conf(chained(sandbox))
    result = sandbox.add("a", capability_args={"bandwidth": {**INGRESS, **EGRESS}})
    veth = host_veth(result)
    config = {"cniVersion": "1.1.0", "name": "testnet", "type": "bandwidth"}
    run = exec_plugin(
        sandbox.bin_dir / "bandwidth",
        command="DEL",
        config=config,
        env=_env(sandbox, "a"),
        run_in=sandbox.host_ns,
    )
    assert run.code == 0, run.stdout + run.stderr
    assert ifbs(sandbox.host_ns) == set()
    assert root_tbf(sandbox.host_ns, veth) is None
    assert all(
        q["kind"] != "ingress" for q in tc_json(sandbox.host_ns, "qdisc", "show", "dev", veth)
    )


def test_ingress_only_makes_no_ifb_and_egress_only_leaves_the_veth_root_alone(
    sandbox: Sandbox,
) -> None:
    sandbox.write_conf(chained(sandbox))
    a = sandbox.add("a", capability_args={"bandwidth": INGRESS})
    assert ifbs(sandbox.host_ns) == set()
    assert len(a.interfaces) == 3
    assert root_tbf(sandbox.host_ns, host_veth(a)) is not None
    b = sandbox.add("b", capability_args={"bandwidth": EGRESS})
    assert ifbs(sandbox.host_ns) == {ifb_name("testnet", "b", "eth0")}
    assert root_tbf(sandbox.host_ns, host_veth(b)) is None


def test_go_cni_bandwidth_shapes_both_directions_and_del_removes_it(sandbox: Sandbox) -> None:
    """bandwidth run with the exact bytes containerd's CRI (go-cni, libcni 1.1) writes for the
    kubernetes.io/ingress-bandwidth and egress-bandwidth annotations: ``IngressRate`` ...
    capitalised, burst MaxUint32 bits (clamped to the largest tbf buffer, as documented)."""
    conf = chained(sandbox, version="1.0.0")
    sandbox.write_conf(conf)
    prev = sandbox.add("a")  # the chain without limits: what bridge hands bandwidth
    limits = go_cni_bandwidth(ingress_rate=INGRESS["ingressRate"],
                              egress_rate=EGRESS["egressRate"])
    stdin = libcni_stdin(conf["plugins"][1], name="testnet", cni_version="1.0.0",
                         prev_result=prev.to_dict(), capability_args={"bandwidth": limits})
    assert b'"runtimeConfig":{"bandwidth":{"IngressRate":8000000,"IngressBurst":4294967295,' \
           b'"EgressRate":20000000,"EgressBurst":4294967295}}' in stdin
    env = {**_env(sandbox, "a"), "CNI_ARGS": "K8S_POD_NAME=a;IgnoreUnknown=1"}
    added = exec_plugin(sandbox.bin_dir / "bandwidth", command="ADD", config=stdin, env=env,
                        run_in=sandbox.host_ns)
    assert added.code == 0, added.stdout + added.stderr
    ifb = ifb_name("testnet", "a", "eth0")
    assert [i["name"] for i in added.json()["interfaces"]][-1] == ifb
    veth_tbf, ifb_tbf = root_tbf(sandbox.host_ns, host_veth(prev)), root_tbf(sandbox.host_ns, ifb)
    assert veth_tbf is not None
    assert ifb_tbf is not None
    assert veth_tbf["rate"] == INGRESS["ingressRate"] // 8  # bytes/s
    assert ifb_tbf["rate"] == EGRESS["egressRate"] // 8
    deleted = exec_plugin(sandbox.bin_dir / "bandwidth", command="DEL", config=stdin,
                          env={**env, "CNI_NETNS": ""}, run_in=sandbox.host_ns)
    assert deleted.code == 0, deleted.stdout + deleted.stderr
    assert ifbs(sandbox.host_ns) == set()


def test_static_keys_win_over_runtime_config(sandbox: Sandbox) -> None:
    sandbox.write_conf(chained(sandbox, INGRESS))
    result = sandbox.add("a", capability_args={"bandwidth": EGRESS})
    assert root_tbf(sandbox.host_ns, host_veth(result)) == {
        "rate": 1_000_000,
        "burst": 20_000,
        "lat": 25_000,
    }
    assert ifbs(sandbox.host_ns) == set()


def test_without_limits_the_result_passes_through_and_nothing_is_made(sandbox: Sandbox) -> None:
    sandbox.write_conf(chained(sandbox))
    result = sandbox.add("a")
    assert [i.name for i in result.interfaces] == ["pycni0", host_veth(result), "eth0"]
    assert [
        q["kind"] for q in tc_json(sandbox.host_ns, "qdisc", "show", "dev", host_veth(result))
    ] in (
        [],
        ["noqueue"],
    )
    assert ifbs(sandbox.host_ns) == set()
    sandbox.check("a")
    sandbox.delete("a")


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"ingressRate": 1_000_000}, "runtimeConfig.bandwidth.ingressBurst"),
        ({"egressRate": 1_000_000, "egressBurst": 2**40}, "runtimeConfig.bandwidth.egressBurst"),
        ({"egressRate": -1, "egressBurst": 1000}, "runtimeConfig.bandwidth.egressRate"),
    ],
)
def test_bad_limits_fail_add_with_code_7_and_nothing_left(
    sandbox: Sandbox, limits: dict[str, int], field: str
) -> None:
    sandbox.write_conf(chained(sandbox))
    with pytest.raises(CNIError) as err:
        sandbox.add("a", capability_args={"bandwidth": limits})
    assert err.value.code == 7
    assert err.value.msg == f"invalid {field}"
    assert ifbs(sandbox.host_ns) == set()
    assert sandbox.host_veths() == set()  # the chain rolled back bridge too
    assert sandbox.allocations() == []


def test_check_fails_when_a_limit_is_changed_behind_our_back(sandbox: Sandbox) -> None:
    sandbox.write_conf(chained(sandbox, {**INGRESS, **EGRESS}))
    result = sandbox.add("a")
    sandbox.check("a")
    ifb = result.interfaces[-1].name
    changed = nsexec(
        sandbox.host_ns,
        "tc", "qdisc", "replace", "dev", ifb, "root", "tbf",
        "rate", "1mbit", "burst", "50000", "latency", "25ms",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    with pytest.raises(CNIError, match=f"tbf rate on ifb {ifb} is 125000, expected 2500000"):
        sandbox.check("a")
    assert nsexec(sandbox.host_ns, "ip", "link", "del", ifb).returncode == 0
    with pytest.raises(CNIError, match=f"ifb {ifb} is missing"):
        sandbox.check("a")


# ---------------------------------------------------------------------------- GC


def _env(sandbox: Sandbox, cid: str) -> dict[str, str]:
    return {
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": sandbox.containers[cid],
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(sandbox.bin_dir),
    }


def test_gc_removes_ifbs_of_attachments_not_valid(sandbox: Sandbox) -> None:
    """The runtime forgot `b` (no cache entry): plugin GC still removes its ifb, and leaves
    `a`'s and another network's ifbs alone."""
    sandbox.write_conf(chained(sandbox, EGRESS))
    sandbox.write_conf({**chained(sandbox, EGRESS), "name": "other"}, "20-other.conflist")
    sandbox.add("a")
    sandbox.add("b")
    sandbox.add("o", network="other")
    (sandbox.cache_dir / "results" / "testnet-b-eth0").unlink()
    conf = find_conflist(str(sandbox.conf_dir), "testnet")
    with netns.enter(sandbox.host_ns):
        sandbox.invoker().gc(conf, [("a", "eth0")])
    assert ifbs(sandbox.host_ns) == {
        ifb_name("testnet", "a", "eth0"),
        ifb_name("other", "o", "eth0"),
    }


def test_gc_with_no_valid_attachments_removes_all_of_this_networks_ifbs(
    sandbox: Sandbox,
) -> None:
    sandbox.write_conf(chained(sandbox, EGRESS))
    sandbox.add("a")
    config = {
        "cniVersion": "1.1.0",
        "name": "testnet",
        "type": "bandwidth",
        "cni.dev/valid-attachments": [],
    }
    run = exec_plugin(
        sandbox.bin_dir / "bandwidth",
        command="GC",
        config=config,
        env={"CNI_PATH": str(sandbox.bin_dir)},
        run_in=sandbox.host_ns,
    )
    assert run.code == 0, run.stdout + run.stderr
    assert run.stdout == ""
    assert ifbs(sandbox.host_ns) == set()


# ---------------------------------------------------------------------------- reference


@pytest.fixture
def mixed_bin(sandbox: Sandbox, tmp_path: Path) -> Path:
    """Our bridge and host-local with the reference bandwidth plugin."""
    if not (REFERENCE_BIN / "bandwidth").exists():
        pytest.fail("containernetworking-plugins is not installed (make test installs it)")
    path = tmp_path / "mixed-bin"
    path.mkdir()
    for name in ("bridge", "host-local"):
        shutil.copy2(sandbox.bin_dir / name, path / name)
    shutil.copy2(REFERENCE_BIN / "bandwidth", path / "bandwidth")
    return path


def _shape(sandbox: Sandbox, result: Result) -> dict[str, Any]:
    veth, ifb = host_veth(result), result.interfaces[-1].name
    filters = tc_json(sandbox.host_ns, "filter", "show", "dev", veth, "ingress")
    rules = [f for f in filters if "actions" in f.get("options", {})]
    return {
        "veth": root_tbf(sandbox.host_ns, veth),
        "ifb": root_tbf(sandbox.host_ns, ifb),
        "ifb_mtu": ip_link(sandbox.host_ns, ifb)["mtu"],
        "ifb_up": "UP" in ip_link(sandbox.host_ns, ifb)["flags"],
        "filters": [
            (
                r["kind"],
                r["protocol"],
                r["pref"],
                r["options"].get("flowid"),
                # the reference adds its mirred action twice (RedirIndex and Actions): the
                # first one steals the packet, so the second never runs; compare the set.
                sorted(
                    {
                        (a["kind"], a["mirred_action"], a["direction"], a["to_dev"] == ifb)
                        for a in r["options"]["actions"]
                    }
                ),
            )
            for r in rules
        ],
        "interfaces": len(result.interfaces),
    }


@pytest.mark.parametrize(
    "limits",
    [
        {**INGRESS, **EGRESS},
        {
            "ingressRate": 123_456_789,
            "ingressBurst": 9_999_999,
            "egressRate": 800,
            "egressBurst": 96_000,
        },
    ],
)
def test_same_config_gives_the_reference_plugins_qdiscs(
    sandbox: Sandbox, mixed_bin: Path, limits: dict[str, int]
) -> None:
    sandbox.write_conf(chained(sandbox, limits, version="1.0.0"))
    ours = sandbox.add("ours")
    ref = sandbox.add("ref", bin_dir=mixed_bin)
    assert _shape(sandbox, ours) == _shape(sandbox, ref)
    sandbox.delete("ref", bin_dir=mixed_bin)
    sandbox.delete("ours")
    assert ifbs(sandbox.host_ns) == set()


# ---------------------------------------------------------------------------- rollback


def test_failed_add_leaves_no_qdisc_and_no_ifb(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, with a failpoint on the last step (the redirect): all before it is undone."""
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    prev = sandbox.add("a")

    def half_then_fail(host: Any, index: int, _target: int) -> None:
        host.tc("add", "ingress", index, handle=0xFFFF0000)  # the qdisc, then no filter
        raise CNIError(999, "failpoint")

    monkeypatch.setattr(tc, "setup_redirect", half_then_fail)
    doc = {
        "cniVersion": "1.1.0",
        "name": "testnet",
        "type": "bandwidth",
        "prevResult": prev.to_dict(),
        **INGRESS,
        **EGRESS,
    }
    handle = open_netns_handle(sandbox.containers["a"])  # what skel opens from CNI_NETNS
    args = CmdArgs(
        command="ADD",
        container_id="a",
        netns=sandbox.containers["a"],
        netns_handle=handle,
        ifname="eth0",
        config=PluginRequest.from_dict(doc),
    )
    with closing(handle), netns.enter(sandbox.host_ns), pytest.raises(CNIError, match="failpoint"):
        bandwidth.cmd_add(args)
    assert ifbs(sandbox.host_ns) == set()
    qdiscs = tc_json(sandbox.host_ns, "qdisc", "show", "dev", host_veth(prev))
    assert [q["kind"] for q in qdiscs if q["kind"] != "noqueue"] == []
