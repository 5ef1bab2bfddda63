"""The connectivity matrix, asserted with `pycni probe` (scapy, from inside each namespace).

Who reaches whom on a sandbox host: containers on one bridge network, the gateway (ARP from
the bridge's MAC), a published port from the host and from an "outside" netns, a second name
for one netns (``container:NAME``), a ``none`` container, two isolated networks, and what the
outside sees as the source address with and without masquerade. Every namespace is a
throwaway one made by the fixtures, every address is in subnets assigned here, listeners run
inside container namespaces (``nsenter --net=``) and are killed by PID in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from pycni.cni.types import Result
from pycni.net import netns
from pycni.probe import Report, parse_destination, resolve_target
from pycni.probe.run import run
from tests.e2e.bridge_support import Sandbox, bridge_conflist
from tests.e2e.runtime_support import RuntimeSandbox

HOST_IP = "10.200.0.1"  # the sandbox host on the outside link
OUTSIDE_IP = "10.200.0.2"
GATEWAY = "10.99.0.1"
TIMEOUT = 0.5  # per probe; silence (filtered, no-reply) costs this much

Listen = Callable[..., None]

_SERVER = """
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
if proto == "tcp":
    s.listen(16)
print("ready", flush=True)
while True:
    if proto == "tcp":
        s.accept()[0].close()
    else:
        data, peer = s.recvfrom(100)
        s.sendto(data, peer)
"""


# ---------------------------------------------------------------------------- helpers


def matrix_conflist(
    sandbox: Sandbox,
    *,
    name: str = "testnet",
    octet: int = 0,
    firewall: bool = False,
    **bridge_keys: Any,
) -> dict[str, Any]:
    """bridge (+portmap) (+firewall) + loopback on 10.99.<octet>.0/24, bridge br-<name>."""
    conf = bridge_conflist(
        name=name,
        data_dir=sandbox.data_dir,
        bridge=f"br-{name}"[:15],
        ranges=[[{"subnet": f"10.99.{octet}.0/24"}]],
        **bridge_keys,
    )
    conf["plugins"].append(
        {
            "type": "portmap",
            "capabilities": {"portMappings": True},
            "dataDir": str(sandbox.data_dir.parent / "hostports"),
        }
    )
    if firewall:
        conf["plugins"].append({"type": "firewall"})
    conf["plugins"].append({"type": "loopback"})
    return conf


def publish(*pairs: tuple[int, int]) -> dict[str, Any]:
    return {
        "portMappings": [{"hostPort": h, "containerPort": c, "protocol": "tcp"} for h, c in pairs]
    }


def probe(sandbox: Sandbox, target: str, *to: str) -> Report:
    """`pycni probe TARGET --to ...`, in-process; the results cache is the sandbox's."""
    resolved = resolve_target(target, cache_dir=str(sandbox.cache_dir))
    return run(resolved, destinations=[parse_destination(t) for t in to], timeout=TIMEOUT)


def status(report: Report, probe_kind: str, target: str, *, over: bool = False) -> str:
    return report.finding(probe_kind, target, over=over).status


def _ip(result: Result) -> str:
    return result.ips[0].ip


def link_mac(ns: str, name: str) -> str:
    with netns.enter(ns), IPRoute() as ipr:
        return str(ipr.get_links(ifname=name)[0].get_attr("IFLA_ADDRESS"))


def set_mtu(ns: str, name: str, mtu: int) -> None:
    with netns.enter(ns), IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], mtu=mtu)


def addresses(report: Report, ifname: str) -> tuple[str, ...]:
    return next(i.addresses for i in report.interfaces if i.name == ifname)


@pytest.fixture
def listen() -> Iterator[Listen]:
    """``listen(ns, port, "tcp"|"udp")``: a listener (UDP: an echo) inside ``ns``."""
    procs: list[subprocess.Popen[str]] = []

    def start(ns: str, port: int, proto: str = "tcp") -> None:
        proc = subprocess.Popen(
            ["nsenter", f"--net={ns}", sys.executable, "-c", _SERVER, proto, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


# ------------------------------------------------------------------------------ tests


def test_bridge_to_bridge_on_one_network(sandbox: Sandbox, listen: Listen) -> None:
    sandbox.write_conf(matrix_conflist(sandbox))
    a, b = sandbox.add("a"), sandbox.add("b")
    ip_a, ip_b = _ip(a), _ip(b)
    listen(sandbox.containers["b"], 80, "tcp")
    listen(sandbox.containers["b"], 5353, "udp")
    seen = probe(
        sandbox,
        sandbox.containers["a"],
        f"{ip_b}:80",
        f"{ip_b}:81",
        f"{ip_b}:5353/udp",
        f"{ip_b}:5354/udp",
    )
    assert status(seen, "icmp", ip_b) == "reachable"
    assert status(seen, "tcp", f"{ip_b}:80/tcp") == "open"
    assert status(seen, "tcp", f"{ip_b}:81/tcp") == "closed"
    assert status(seen, "udp", f"{ip_b}:5353/udp") == "open"
    assert status(seen, "udp", f"{ip_b}:5354/udp") == "closed"
    assert seen.finding("tcp", f"{ip_b}:80/tcp").responder == ip_b
    back = probe(sandbox, sandbox.containers["b"], ip_a)
    assert status(back, "icmp", ip_a) == "reachable"


def test_gateway_answers_arp_with_the_bridge_mac(sandbox: Sandbox) -> None:
    sandbox.write_conf(matrix_conflist(sandbox))
    sandbox.add("a")
    seen = probe(sandbox, sandbox.containers["a"])
    assert seen.gateway == GATEWAY
    arp = seen.finding("arp", GATEWAY)
    assert arp.status == "answered"
    assert arp.mac == link_mac(sandbox.host_ns, "br-testnet")
    assert status(seen, "icmp", GATEWAY) == "reachable"
    # path MTU to the gateway: DF at the interface MTU passes, one byte over is refused
    assert status(seen, "pmtu", GATEWAY) == "passes"
    assert seen.finding("pmtu", GATEWAY).size == 1500
    assert status(seen, "pmtu", GATEWAY, over=True) == "refused"
    assert seen.finding("pmtu", GATEWAY, over=True).size == 1501


def test_path_mtu_finds_a_narrower_link_beyond_the_gateway(sandbox: Sandbox) -> None:
    sandbox.write_conf(matrix_conflist(sandbox))
    outside = sandbox.connect_outside()
    set_mtu(sandbox.host_ns, "up0", 1400)
    set_mtu(outside, "wan0", 1400)
    sandbox.add("a")
    seen = probe(sandbox, sandbox.containers["a"], OUTSIDE_IP)
    assert status(seen, "icmp", OUTSIDE_IP) == "reachable"
    narrow = seen.finding("pmtu", OUTSIDE_IP)
    assert (narrow.status, narrow.mtu, narrow.responder) == ("frag-needed", 1400, GATEWAY)
    assert status(seen, "pmtu", OUTSIDE_IP, over=True) == "refused"
    assert status(seen, "pmtu", GATEWAY) == "passes"


def test_published_port_from_the_container_the_host_and_outside(
    sandbox: Sandbox, listen: Listen
) -> None:
    sandbox.write_conf(matrix_conflist(sandbox))
    outside = sandbox.connect_outside()
    sandbox.add("a", capability_args=publish((8080, 80)))
    listen(sandbox.containers["a"], 80)
    # default targets: the gateway and the published port (through the host: hairpin)
    own = probe(sandbox, sandbox.containers["a"])
    published = own.finding("tcp", f"{GATEWAY}:8080/tcp")
    assert (published.status, published.origin) == ("open", "published 8080->80/tcp")
    host = probe(sandbox, sandbox.host_ns, f"{HOST_IP}:8080", f"{HOST_IP}:8081")
    assert status(host, "tcp", f"{HOST_IP}:8080/tcp") == "open"
    assert status(host, "tcp", f"{HOST_IP}:8081/tcp") == "closed"
    far = probe(sandbox, outside, f"{HOST_IP}:8080", f"{HOST_IP}:8081")
    assert status(far, "tcp", f"{HOST_IP}:8080/tcp") == "open"
    assert far.finding("tcp", f"{HOST_IP}:8080/tcp").responder == HOST_IP
    assert status(far, "tcp", f"{HOST_IP}:8081/tcp") == "closed"


def test_container_mode_shares_the_owners_address_and_ports(
    sandbox: Sandbox, listen: Listen, netns_dir: Path
) -> None:
    """A second name for the owner's netns (what ``container:NAME`` joins) is the same netns:
    the same id, addresses, and listeners, whichever name the probe is given."""
    sandbox.write_conf(matrix_conflist(sandbox))
    sandbox.write_conf(
        {"cniVersion": "1.1.0", "name": "shared", "plugins": [{"type": "container"}]},
        "40-shared.conflist",
    )
    owner = sandbox.add("owner", capability_args=publish((8080, 80)))
    peer = sandbox.add("peer")
    ip_owner = _ip(owner)
    joined = str(netns_dir / "joined")
    netns.pin(sandbox.containers["owner"], joined)
    sandbox.containers["joined"] = joined
    sandbox.add("joined", network="shared")
    listen(sandbox.containers["owner"], 80)

    by_owner = probe(sandbox, sandbox.containers["owner"], f"{ip_owner}:80")
    cli = subprocess.run(
        [sys.executable, "-m", "pycni.cli", "probe", joined, "--json", "--timeout", str(TIMEOUT),
         "--cache-dir", str(sandbox.cache_dir), "--to", f"{ip_owner}:80"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    by_joined: dict[str, Any] = json.loads(cli.stdout)
    joined_status = {(f["probe"], f["target"]): f["status"] for f in by_joined["findings"]}

    assert by_joined["netns_id"] == by_owner.netns_id
    assert by_joined["network"] == "shared"
    eth0 = next(i for i in by_joined["interfaces"] if i["name"] == "eth0")
    assert tuple(eth0["addresses"]) == addresses(by_owner, "eth0")
    assert f"{ip_owner}/24" in addresses(by_owner, "eth0")
    # the owner's listener answers on the shared address (its own: through the kernel)
    assert status(by_owner, "tcp", f"{ip_owner}:80/tcp") == "open"
    assert joined_status[("tcp", f"{ip_owner}:80/tcp")] == "open"
    # and the owner's published port, a default target for both names, answers through
    # the host (the joined name finds it in the owner's cached attachment of the same netns)
    assert status(by_owner, "tcp", f"{GATEWAY}:8080/tcp") == "open"
    assert joined_status[("tcp", f"{GATEWAY}:8080/tcp")] == "open"
    published = next(f for f in by_joined["findings"] if f["target"] == f"{GATEWAY}:8080/tcp")
    assert published["origin"] == "published 8080->80/tcp"
    assert joined_status[("arp", GATEWAY)] == "answered"  # gateway from the netns's route
    from_peer = probe(sandbox, sandbox.containers["peer"], f"{ip_owner}:80")
    assert status(from_peer, "tcp", f"{ip_owner}:80/tcp") == "open"
    assert _ip(peer) != ip_owner


def test_none_has_only_lo_and_reaches_nothing(sandbox: Sandbox, listen: Listen) -> None:
    sandbox.write_conf(matrix_conflist(sandbox))
    sandbox.write_conf(
        {"cniVersion": "1.1.0", "name": "none", "plugins": [{"type": "none"}]},
        "20-none.conflist",
    )
    b = sandbox.add("b")
    listen(sandbox.containers["b"], 80)
    sandbox.add("n", network="none")
    seen = probe(sandbox, sandbox.containers["n"], GATEWAY, f"{_ip(b)}:80", f"{_ip(b)}:53/udp")
    assert [i.name for i in seen.interfaces] == ["lo"]
    assert seen.interfaces[0].up
    assert seen.gateway is None
    assert seen.findings
    assert {f.status for f in seen.findings} == {"no-route"}
    # the listener is there: a bridge neighbour does reach it
    assert status(probe(sandbox, sandbox.containers["b"], f"{_ip(b)}:80"), "tcp",
                  f"{_ip(b)}:80/tcp") == "open"


def test_two_networks_are_isolated(sandbox: Sandbox, listen: Listen) -> None:
    for name, octet in (("n1", 1), ("n2", 2)):
        sandbox.write_conf(
            matrix_conflist(sandbox, name=name, octet=octet, firewall=True), f"{name}.conflist"
        )
    a, a2 = sandbox.add("a", network="n1"), sandbox.add("a2", network="n1")
    b = sandbox.add("b", network="n2")
    listen(sandbox.containers["b"], 80)
    listen(sandbox.containers["a2"], 80)
    ip_a2, ip_b = _ip(a2), _ip(b)
    seen = probe(sandbox, sandbox.containers["a"], f"{ip_b}:80", f"{ip_a2}:80")
    assert status(seen, "arp", "10.99.1.1") == "answered"
    assert status(seen, "icmp", ip_b) in ("no-reply", "unreachable")
    assert status(seen, "tcp", f"{ip_b}:80/tcp") == "filtered"
    assert status(seen, "tcp", f"{ip_a2}:80/tcp") == "open"  # its own network is open
    back = probe(sandbox, sandbox.containers["b"], _ip(a))
    assert status(back, "arp", "10.99.2.1") == "answered"
    assert status(back, "icmp", _ip(a)) in ("no-reply", "unreachable")


@pytest.mark.parametrize("masq", [True, False], ids=["ipMasq", "noMasq"])
def test_outside_sees_the_host_address_only_with_masquerade(
    sandbox: Sandbox, masq: bool
) -> None:
    from scapy.arch.linux import L2ListenSocket
    from scapy.layers.inet import ICMP, IP
    from scapy.sendrecv import AsyncSniffer

    sandbox.write_conf(matrix_conflist(sandbox, ipMasq=masq))
    outside = sandbox.connect_outside()
    a = sandbox.add("a")
    with netns.enter(outside):
        sock = L2ListenSocket(iface="wan0")  # bound to the outside netns
    requests: list[Any] = []
    sniffer = AsyncSniffer(
        opened_socket=sock,
        lfilter=lambda p: IP in p and ICMP in p and p[ICMP].type == 8 and p[IP].dst == OUTSIDE_IP,
        prn=requests.append,
        store=False,
    )
    sniffer.start()
    try:
        # The socket is open before the probe, so the request waits in it until the
        # sniffer's thread reads it: wait for that rather than for a fixed time.
        seen = probe(sandbox, sandbox.containers["a"], OUTSIDE_IP)
        deadline = time.monotonic() + 10
        while not requests and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sniffer.stop()
        sock.close()
    sources = {str(p[IP].src) for p in requests}
    if masq:
        assert sources == {HOST_IP}
        assert status(seen, "icmp", OUTSIDE_IP) == "reachable"
    else:
        assert sources == {_ip(a)}
        assert status(seen, "icmp", OUTSIDE_IP) == "no-reply"  # no route back to 10.99.0.0/24


# ----------------------------------------------------------- pycni-run, by container name



def _probe_in_box(box: RuntimeSandbox, name: str) -> dict[str, Any]:
    ran = box.sh(sys.executable, "-m", "pycni.cli", "probe", name, "--json", "--timeout", "1")
    assert ran.code == 0, ran.stderr
    doc: dict[str, Any] = ran.json()
    return doc


@pytest.mark.runtime_sandbox
def test_pycni_run_containers_by_name_and_container_mode(box: RuntimeSandbox) -> None:
    box.ok("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "httpd", "-f", "-p", "80")
    box.ok("run", "-d", "--name", "side", "--net=container:web", "busybox", "sleep", "60")
    bridge_mac = box.ip_json("link", "show", "pycni0")[0]["address"]
    web, side = _probe_in_box(box, "web"), _probe_in_box(box, "side")
    for doc, name in ((web, "web"), (side, "side")):
        found = {(f["probe"], f["target"]): f for f in doc["findings"]}
        assert (doc["target"], doc["kind"]) == (name, "container")
        assert found[("arp", GATEWAY)]["mac"] == bridge_mac
        assert found[("tcp", f"{GATEWAY}:8080/tcp")]["status"] == "open"  # web's httpd
        assert found[("tcp", f"{GATEWAY}:8080/tcp")]["origin"] == "published 8080->80/tcp"
    assert side["netns_id"] == web["netns_id"]
    assert side["interfaces"] == web["interfaces"]
    box.ok("rm", "-f", "side")
    box.ok("rm", "-f", "web")
