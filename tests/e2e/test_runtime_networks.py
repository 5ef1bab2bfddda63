"""pycni-run on user networks, in the runtime sandbox: several networks per container (one
default route), reachability per network, connect/disconnect of a running container, static
addresses, port ranges, resolver options, removal, and the package's own networks and
plugins where `pycni install` never ran. Everything is read back from the kernel and the
files the plugins keep (bridge ports, routes, nftables, IPAM reservations, results cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.runtime_support import RuntimeSandbox, until

FRONT, BACK = "10.100.7", "10.100.8"


def _networks(box: RuntimeSandbox, *names: str) -> None:
    for name, prefix in zip(names, (FRONT, BACK, "10.100.9"), strict=False):
        box.ok("network", "create", "--subnet", f"{prefix}.0/24", name)


def _bridge(box: RuntimeSandbox, network: str) -> str:
    return str(json.loads(box.ok("network", "inspect", network))[0]["Bridge"])


def _ports_of(box: RuntimeSandbox, bridge: str) -> list[str]:
    """The bridge's ports (none when no ADD ever made the bridge)."""
    if not any(link["ifname"] == bridge for link in box.ip_json("link")):
        return []
    return [link["ifname"] for link in box.ip_json("link", "show", "master", bridge)]


def _ip_on(box: RuntimeSandbox, name: str, network: str) -> str:
    return str(box.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"])


def _reaches(box: RuntimeSandbox, name: str, ip: str) -> bool:
    return box.run("exec", name, "ping", "-c", "1", "-W", "1", ip).code == 0


def _cache_entries(box: RuntimeSandbox) -> set[str]:
    return set(box.sh("ls", "/var/lib/cni/results").stdout.split())


def _reservations(box: RuntimeSandbox, network: str) -> set[str]:
    listed = box.sh("ls", f"/run/pycni/ipam/{network}").stdout.split()
    return {n for n in listed if n[0].isdigit()}


def _ruleset(box: RuntimeSandbox) -> str:
    return box.sh("nft", "list", "ruleset").stdout


def _sleeper(box: RuntimeSandbox, name: str, *options: str) -> None:
    box.ok("run", "-d", "--name", name, *options, "busybox", "sleep", "600")


def test_two_networks_give_eth0_and_eth1_with_one_default_route(box: RuntimeSandbox) -> None:
    """The second network's chain adds no default route of its own: not even one its IPAM
    asks for with a metric (as runtimes with per-network route metrics write them), which
    the kernel would take beside the first."""
    _networks(box, "front", "back")
    conf = box.conf_dir / "50-back.conflist"
    doc = json.loads(conf.read_text())
    doc["plugins"][0]["ipam"]["routes"] = [{"dst": "0.0.0.0/0", "priority": 100}]
    conf.write_text(json.dumps(doc))
    _sleeper(box, "two", "--network", "front", "--net", "back")
    out = box.ok("exec", "two", "sh", "-c",
                 "ip -o -4 addr show eth0; ip -o -4 addr show eth1; ip route")
    assert f"eth0    inet {FRONT}." in out
    assert f"eth1    inet {BACK}." in out
    defaults = [line.split() for line in out.splitlines() if line.startswith("default")]
    assert defaults == [["default", "via", f"{FRONT}.1", "dev", "eth0"]]
    back = box.inspect("two")["NetworkSettings"]["Networks"]["back"]["CNIResult"]
    assert [r for r in back.get("routes") or [] if r["dst"] == "0.0.0.0/0"] == []


def test_containers_reach_their_network_and_not_another(box: RuntimeSandbox) -> None:
    _networks(box, "front", "back")
    for name, net in (("a1", "front"), ("a2", "front"), ("b1", "back")):
        _sleeper(box, name, "--network", net)
    assert _reaches(box, "a1", _ip_on(box, "a2", "front"))
    assert _reaches(box, "a2", _ip_on(box, "a1", "front"))
    assert not _reaches(box, "a1", _ip_on(box, "b1", "back"))
    assert not _reaches(box, "b1", _ip_on(box, "a1", "front"))


def test_connect_reaches_the_second_network_and_disconnect_leaves_nothing(
    box: RuntimeSandbox,
) -> None:
    _networks(box, "front", "back")
    _sleeper(box, "a", "--network", "front")
    _sleeper(box, "b", "--network", "back")
    b_ip = _ip_on(box, "b", "back")
    assert not _reaches(box, "a", b_ip)
    before = (_ports_of(box, _bridge(box, "back")), _reservations(box, "back"),
              _cache_entries(box))

    box.ok("network", "connect", "--alias", "web", "back", "a")
    on_back = box.inspect("a")["NetworkSettings"]["Networks"]["back"]
    assert (on_back["Interface"], on_back["DefaultRoute"], on_back["Aliases"]) == (
        "eth1", False, ["web"])
    assert on_back["IPAddress"].startswith(f"{BACK}.")
    assert _reaches(box, "a", b_ip)
    assert f"default via {FRONT}.1 dev eth0" in box.ok("exec", "a", "ip", "route")
    assert len(_ports_of(box, _bridge(box, "back"))) == 2
    assert on_back["IPAddress"] in _reservations(box, "back")
    assert on_back["IPAddress"] in _ruleset(box)
    assert any(e.startswith("back-") and e.endswith("-eth1") for e in _cache_entries(box))
    refused = box.run("network", "connect", "back", "a")
    assert refused.code == 125
    assert "already connected" in refused.stderr

    box.ok("network", "disconnect", "back", "a")
    assert not _reaches(box, "a", b_ip)
    assert "eth1" not in box.ok("exec", "a", "ip", "-o", "link")
    after = (_ports_of(box, _bridge(box, "back")), _reservations(box, "back"),
             _cache_entries(box))
    assert after == before
    assert on_back["IPAddress"] not in _ruleset(box)
    assert list(box.inspect("a")["NetworkSettings"]["Networks"]) == ["front"]


def test_a_static_ip_is_honoured_and_a_conflicting_one_refused_with_nothing_made(
    box: RuntimeSandbox,
) -> None:
    _networks(box, "front")
    _sleeper(box, "a", "--network", "front", "--ip", f"{FRONT}.50")
    assert f"inet {FRONT}.50/24" in box.ok("exec", "a", "ip", "-o", "-4", "addr", "show", "eth0")
    made = (box.sh("ip", "-o", "link").stdout, _cache_entries(box),
            _reservations(box, "front"), box.sh("ip", "netns", "list").stdout)
    for ip, message in ((f"{FRONT}.50", f"{FRONT}.50 is already in use in network front"),
                        ("10.100.99.5", "10.100.99.5 is outside network front")):
        ran = box.run("run", "-d", "--name", "b", "--network", "front", "--ip", ip,
                      "busybox", "sleep", "600")
        assert ran.code == 125, ran.stderr
        assert message in ran.stderr
        assert box.run("inspect", "b").code == 125
        assert (box.sh("ip", "-o", "link").stdout, _cache_entries(box),
                _reservations(box, "front"), box.sh("ip", "netns", "list").stdout) == made
    # network connect --ip: the same checks, on a running container
    ran = box.run("network", "connect", "--ip", f"{FRONT}.60", "bridge", "a")
    assert ran.code == 125, ran.stderr
    assert "outside network pycni" in ran.stderr
    assert _cache_entries(box) == made[1]
    box.ok("network", "connect", "--ip", "10.99.0.77", "bridge", "a")
    assert "inet 10.99.0.77/16" in box.ok("exec", "a", "ip", "-o", "-4", "addr", "show", "eth1")
    box.ok("network", "disconnect", "bridge", "a")  # `bridge` names the pycni network here too
    assert list(box.inspect("a")["NetworkSettings"]["Networks"]) == ["front"]


def test_a_port_range_publishes_every_port(box: RuntimeSandbox) -> None:
    serve = ("for p in 80 81 82; do mkdir /w$p && echo served-$p > /w$p/index.html && "
             "httpd -p $p -h /w$p; done; exec sleep 600")
    box.ok("run", "-d", "--name", "web", "-p", "8000-8002:80-82", "busybox", "sh", "-c", serve)
    ports = box.inspect("web")["NetworkSettings"]["Ports"]
    assert [(p["hostPort"], p["containerPort"]) for p in ports] == [(8000, 80), (8001, 81),
                                                                    (8002, 82)]
    fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read())"
    for host, container in ((8000, 80), (8001, 81), (8002, 82)):
        url = f"http://127.0.0.1:{host}/"
        got = until(f"{url} answers",
                    lambda u=url: box.sh(sys.executable, "-c", fetch, u).stdout)
        assert f"served-{container}" in got


def test_dns_options_and_extra_hosts_land_in_the_files(box: RuntimeSandbox) -> None:
    _networks(box, "front")
    out = box.ok("run", "--rm", "--network", "front", "--dns", "10.0.0.53", "--dns-search",
                 "corp.example", "--dns-option", "ndots:2", "--add-host", "db:10.9.9.9",
                 "--add-host", "gw:host-gateway", "busybox", "cat", "/etc/resolv.conf",
                 "/etc/hosts")
    assert "nameserver 10.0.0.53\nsearch corp.example\noptions ndots:2\n" in out
    assert "10.9.9.9\tdb\n" in out
    assert f"{FRONT}.1\tgw\n" in out  # host-gateway: the first network's gateway


def test_rm_dels_every_network(box: RuntimeSandbox) -> None:
    _networks(box, "front", "back")
    _sleeper(box, "a", "--network", "front", "--network", "back")
    box.ok("network", "connect", "bridge", "a")
    assert list(box.inspect("a")["NetworkSettings"]["Networks"]) == ["front", "back", "pycni"]
    assert len(_cache_entries(box)) == 3
    box.ok("rm", "-f", "a")
    for network in ("front", "back"):
        assert _ports_of(box, _bridge(box, network)) == []
        assert _reservations(box, network) == set()
    assert _reservations(box, "pycni") == set()
    assert _cache_entries(box) == set()
    assert box.sh("ip", "netns", "list").stdout.strip() == ""


def test_through_the_daemon_exit_and_rm_del_every_network(box: RuntimeSandbox) -> None:
    """The --rm exit path and rm -f, with every command in the runtime daemon's workers."""
    _networks(box, "front", "back")
    box.start_daemon()
    out = box.ok("run", "--rm", "--network", "front", "--network", "back", "busybox",
                 "ip", "-o", "-4", "addr", "show", "eth1")
    assert f"inet {BACK}." in out
    _sleeper(box, "a", "--network", "front")
    box.ok("network", "connect", "back", "a")
    assert len(_cache_entries(box)) == 2
    box.ok("rm", "-f", "a")
    for network in ("front", "back"):
        assert _ports_of(box, _bridge(box, network)) == []
        assert _reservations(box, network) == set()
    assert _cache_entries(box) == set()


def test_connect_and_rm_of_one_container_at_once_leave_nothing(box: RuntimeSandbox) -> None:
    _networks(box, "front", "back")
    for round_ in range(4):
        name = f"racer{round_}"
        _sleeper(box, name, "--network", "front")
        env = box._env()  # the sandbox's own environment and argv, for Popen
        runs = [subprocess.Popen(box._argv([sys.executable, "-m", "pycni_run.cli", *args]),
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for args in (("network", "connect", "back", name), ("rm", "-f", name))]
        (_, connect_err), (_, rm_err) = (proc.communicate(timeout=120) for proc in runs)
        # connect either ran first (rm then DELs both networks) or found the container gone
        assert runs[0].returncode == 0 or any(
            m in connect_err.decode() for m in ("is not running", "no such container")
        ), connect_err
        assert runs[1].returncode == 0, rm_err
        assert box.run("inspect", name).code == 125
        for network in ("front", "back"):
            assert _ports_of(box, _bridge(box, network)) == []
            assert _reservations(box, network) == set()
        assert _cache_entries(box) == set()


def test_without_pycni_install_the_package_networks_and_plugins_are_used(
    box: RuntimeSandbox, tmp_path: Path,
) -> None:
    empty_conf, empty_bin = tmp_path / "empty-conf", tmp_path / "empty-bin"
    empty_conf.mkdir()
    empty_bin.mkdir()
    text = box.config.read_text()
    text = text.replace(str(box.conf_dir), str(empty_conf)).replace(str(box.cni_bin),
                                                                    str(empty_bin))
    box.config.write_text(text)
    out = box.ok("run", "--rm", "busybox", "sh", "-c", "ip -o -4 addr show eth0; ip route")
    assert "eth0    inet 10.99." in out
    assert "default via 10.99.0.1 dev eth0" in out
    assert box.ok("run", "--rm", "--net=none", "busybox", "ip", "-o", "link").count(":") >= 1
    assert sorted(box.sh("ls", "/run/pycni/plugins").stdout.split()) == sorted(
        p.name for p in box.cni_bin.iterdir())
    assert list(empty_conf.iterdir()) == []
    assert list(empty_bin.iterdir()) == []
    assert _cache_entries(box) == set()
