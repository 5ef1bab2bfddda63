"""User networks end to end: `pycni network create` writes a conflist, containers (throwaway
netns + CNI ADD of that conflist through the installed executables, as a runtime runs it) are
attached with ``pycni.network.attach``, and packets prove who reaches whom.

Everything lives in the sandbox host netns: the routes the picker reads, the bridges, the
firewall. The network commands run in-process (``pycni.cli.main``) inside it, the plugins as
executables (in-process or through `pycni serve`, the two plugin modes).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycni.cni.types import Result
from pycni.firewall.model import network_tag
from pycni.net import netns
from pycni.network import store
from pycni.network.attach import AttachRequest, attach, detach
from pycni.network.attachments import list_attachments
from tests.e2e.bridge_support import Sandbox, link_names, nsexec, ping
from tests.e2e.dns_support import stop_resolver
from tests.support import run_cli, run_cli_in_process

OUTSIDE = "10.200.0.2"


@dataclass
class Networks:
    """`pycni network` on the sandbox's dirs, and containers attached to its networks."""

    sandbox: Sandbox
    config: Path
    capsys: pytest.CaptureFixture[str]

    def flags(self) -> list[str]:
        box = self.sandbox
        return ["--config", str(self.config), "--conf-dir", str(box.conf_dir),
                "--cache-dir", str(box.cache_dir), "--cni-path", str(box.bin_dir),
                "--state-dir", str(box.data_dir.parent / "state")]

    def run(self, *args: str) -> tuple[int, str, str]:
        ran = run_cli_in_process(["network", *args, *self.flags()],
                                 run_in=self.sandbox.host_ns, capsys=self.capsys)
        return ran.code, ran.stdout, ran.stderr

    def ok(self, *args: str) -> str:
        code, out, err = self.run(*args)
        assert code == 0, err
        return out

    def network(self, name: str) -> store.StoredNetwork:
        conf_dir = str(self.sandbox.conf_dir)
        return store.find_network(store.load_networks(conf_dir), name, conf_dir)

    def attach(self, network: str, cid: str, *, name: str = "") -> Result:
        rt = self.sandbox.runtime_conf(cid)  # makes the container's netns
        req = AttachRequest(container_id=cid, netns=rt.netns, name=name or cid)
        with netns.enter(self.sandbox.host_ns):
            return attach(self.sandbox.invoker(), self.network(network), req)

    def detach_all(self, network: str) -> None:
        stored = self.network(network)
        with netns.enter(self.sandbox.host_ns):
            for attachment in list_attachments(str(self.sandbox.cache_dir), network):
                detach(self.sandbox.invoker(), stored, attachment)

    def inspect(self, name: str) -> dict[str, Any]:
        (doc,) = json.loads(self.ok("inspect", name))
        return dict(doc)


def _config(path: Path, data_dir: Path, backend: str | None = None) -> Path:
    """The networks' settings; their name resolver's run dir is the test's own (its ADDs
    start one there, never at /run/pycni/dns), stopped by the fixtures."""
    text = ("network:\n  default_address_pools: [{base: 10.100.0.0/16, size: 24}]\n"
            f"  ipam_data_dir: {data_dir}\n  dns_run_dir: {path.parent / 'dns'}\n")
    if backend:
        text += f"  firewall_backend: {backend}\n"
    path.write_text(text)
    return path


@pytest.fixture(params=["nftables", "iptables"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def nets(sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
         ) -> Iterator[Networks]:
    try:
        yield Networks(sandbox, _config(tmp_path / "pycni.yaml", sandbox.data_dir), capsys)
    finally:
        stop_resolver(tmp_path / "dns")


@pytest.fixture
def nets_on(sandbox: Sandbox, tmp_path: Path, backend: str,
            capsys: pytest.CaptureFixture[str]) -> Iterator[Networks]:
    try:
        yield Networks(sandbox, _config(tmp_path / "pycni.yaml", sandbox.data_dir, backend),
                       capsys)
    finally:
        stop_resolver(tmp_path / "dns")


def _ip(result: Result) -> str:
    return result.ips[0].ip


def test_containers_reach_their_own_network_and_not_another(nets: Networks) -> None:
    nets.ok("create", "--subnet", "10.100.7.0/24", "front")
    nets.ok("create", "back")  # picked: 10.100.0.0/24
    a1, a2, b1 = nets.attach("front", "a1"), nets.attach("front", "a2"), nets.attach("back", "b1")
    ns = nets.sandbox.containers
    assert _ip(a1).startswith("10.100.7.")
    assert _ip(b1).startswith("10.100.0.")
    assert ping(ns["a1"], _ip(a2))
    assert ping(ns["a2"], _ip(a1))
    assert not ping(ns["a1"], _ip(b1), wait=1)
    assert not ping(ns["b1"], _ip(a1), wait=1)
    # each network has its own bridge, named as ls says
    rows = {r["Name"]: r for r in map(json.loads, nets.ok("ls", "--format", "json").splitlines())}
    assert {rows["front"]["Bridge"], rows["back"]["Bridge"]} <= link_names(nets.sandbox.host_ns)
    assert (rows["front"]["Containers"], rows["back"]["Containers"]) == (2, 1)
    assert nets.ok("ls", "-q").split() == ["back", "front"]
    doc = nets.inspect("front")
    assert [(c["Name"], c["Interface"], c["IPv4Address"]) for c in doc["Containers"]] == [
        ("a1", "eth0", a1.ips[0].address), ("a2", "eth0", a2.ips[0].address)]
    assert doc["Containers"][0]["MacAddress"] == a1.interfaces[2].mac


def _internal_pair(nets: Networks) -> tuple[str, Result, Result]:
    """An --internal network with two containers, and an outside host that a container and
    the outside could reach each other through if only routes decided: the container has a
    route there via the gateway (one with NET_ADMIN could add it), the outside a route back.
    Only the firewall stands in the way."""
    box = nets.sandbox
    outside = box.connect_outside()
    nets.ok("create", "--internal", "--subnet", "10.100.8.0/24", "inner")
    c1, c2 = nets.attach("inner", "c1"), nets.attach("inner", "c2")
    one = box.containers["c1"]
    assert c1.routes == ()  # no default route, and so none in the container
    assert "default" not in nsexec(one, "ip", "route").stdout
    assert nsexec(outside, "ip", "route", "add", "10.100.8.0/24", "via", "10.200.0.1"
                  ).returncode == 0
    assert nsexec(one, "ip", "route", "add", "10.200.0.0/24", "via", "10.100.8.1"
                  ).returncode == 0
    return outside, c1, c2


def _only_the_network_answers(nets: Networks, outside: str, c1: Result, c2: Result) -> None:
    one = nets.sandbox.containers["c1"]
    assert ping(one, _ip(c2))  # the peer on the network answers
    assert ping(nets.sandbox.containers["c2"], _ip(c1))
    assert ping(one, "10.100.8.1")  # the gateway is the host itself (input, not forward)
    assert not ping(one, OUTSIDE, wait=1)
    assert not ping(outside, _ip(c1), wait=1)


def test_an_internal_network_reaches_nothing_outside_it(nets_on: Networks) -> None:
    _only_the_network_answers(nets_on, *_internal_pair(nets_on))


def test_reconcile_restores_an_internal_network_as_internal(nets: Networks) -> None:
    outside, c1, c2 = _internal_pair(nets)
    host = nets.sandbox.host_ns
    assert nsexec(host, "nft", "flush", "ruleset").returncode == 0
    assert ping(nets.sandbox.containers["c1"], OUTSIDE)  # nothing stops it now
    ran = nsexec(host, sys.executable, "-m", "pycni.cli", "reconcile", "--cache-dir",
                 str(nets.sandbox.cache_dir), timeout=60)
    assert ran.returncode == 0, ran.stderr
    _only_the_network_answers(nets, outside, c1, c2)


def _firewall_text(box: Sandbox) -> str:
    dumps = [nsexec(box.host_ns, "nft", "list", "ruleset")]
    dumps += [nsexec(box.host_ns, tool) for tool in ("iptables-save", "ip6tables-save")]
    return "\n".join(d.stdout for d in dumps)


def test_rm_is_refused_while_attached_and_leaves_nothing_after(nets_on: Networks) -> None:
    box = nets_on.sandbox
    nets_on.ok("create", "--subnet", "10.100.9.0/24", "doomed")
    web, _ = nets_on.attach("doomed", "c1", name="web"), nets_on.attach("doomed", "c2", name="db")
    bridge = nets_on.network("doomed").view.bridge
    tag = network_tag("doomed")[:10]  # iptables chains carry 10 characters of it
    assert tag in _firewall_text(box)

    code, out, err = nets_on.run("rm", "doomed")
    assert (code, out) == (1, "")
    assert "containers db, web; disconnect them or use --force" in err
    assert (box.conf_dir / "50-doomed.conflist").exists()
    assert ping(box.containers["c2"], _ip(web))  # nothing was taken apart

    # --force, through the `pycni` executable this time
    ran = run_cli(["network", "rm", "--force", "doomed", *nets_on.flags()], run_in=box.host_ns)
    assert (ran.code, ran.stdout) == (0, "doomed\n"), ran.stderr
    assert os.listdir(box.conf_dir) == [store.LOCK_NAME]
    assert bridge not in link_names(box.host_ns)
    assert box.host_veths() == set()
    assert not (box.data_dir / "doomed").exists()
    assert os.listdir(box.cache_dir / "results") == []
    assert tag not in _firewall_text(box)
    assert not os.path.exists(f"/run/pycni/locks/bridge-{bridge}.lock")
    assert nets_on.ok("ls", "-q") == ""


def test_prune_removes_our_networks_without_attachments_only(nets: Networks) -> None:
    for name in ("keep", "gone", "left"):
        nets.ok("create", name)
    nets.attach("keep", "c1")
    nets.attach("left", "c2")
    nets.detach_all("left")
    foreign = {"cniVersion": "0.4.0", "name": "foreign", "plugins": [{"type": "bridge"}]}
    (nets.sandbox.conf_dir / "87-foreign.conflist").write_text(json.dumps(foreign))
    assert nets.ok("prune").split() == ["gone", "left"]
    assert nets.ok("ls", "-q").split() == ["keep", "foreign"]
    code, _, err = nets.run("rm", "foreign")
    assert code == 1
    assert "was not created by `pycni network create`" in err
    assert ping(nets.sandbox.containers["c1"], str(nets.network("keep").view.subnets[0].gateway))
