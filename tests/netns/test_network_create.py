"""`pycni network create` against a sandbox host: the subnet picker reads that host's routes
and addresses, and bad input writes nothing.

The command runs in-process (``pycni.cli.main``) inside the sandbox "host" netns, where the
routes are read and where a bridge would be made; the conf dir, cache and IPAM dir are the
test's own. No plugin runs here (``tests/e2e/test_networks.py`` attaches containers).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from pycni.net import netns
from tests.support import run_cli_in_process


@dataclass(frozen=True)
class Manager:
    host_ns: str
    conf_dir: Path
    config: Path
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str, config: Path | None = None) -> tuple[int, str, str]:
        flags = ["--config", str(config or self.config), "--conf-dir", str(self.conf_dir)]
        ran = run_cli_in_process(["network", *args, *flags], run_in=self.host_ns,
                                 capsys=self.capsys)
        return ran.code, ran.stdout, ran.stderr

    def ok(self, *args: str) -> str:
        code, out, err = self.run(*args)
        assert code == 0, err
        return out

    def subnets(self, name: str) -> list[str]:
        rows = [json.loads(line) for line in self.ok("ls", "--format", "json").splitlines()]
        return next(r["Subnets"] for r in rows if r["Name"] == name)

    def snapshot(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.conf_dir.iterdir())}


def write_config(path: Path, *, pool: str, data_dir: Path) -> Path:
    path.write_text("network:\n"
                    f"  default_address_pools: [{{base: {pool}, size: 24}}]\n"
                    f"  ipam_data_dir: {data_dir}\n")
    return path


@pytest.fixture
def manager(host_ns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Manager:
    conf = tmp_path / "conf"
    conf.mkdir()
    config = write_config(tmp_path / "pycni.yaml", pool="10.100.0.0/16", data_dir=tmp_path)
    return Manager(host_ns=host_ns, conf_dir=conf, config=config, capsys=capsys)


@pytest.fixture
def lan(host_ns: str) -> None:
    """The sandbox host on a LAN (10.100.1.5/24), routing 10.100.2.0/24 there and, in a
    policy table as a VPN client does, 10.100.3.0/24; and an address on a link that is down
    (10.100.4.7/24: no route goes with it)."""
    with netns.enter(host_ns), IPRoute() as ipr:
        ipr.link("add", ifname="lan0", kind="veth", peer={"ifname": "lan1"})
        idx = ipr.link_lookup(ifname="lan0")[0]
        ipr.link("set", index=idx, state="up")
        ipr.addr("add", index=idx, address="10.100.1.5", prefixlen=24)
        ipr.route("add", dst="10.100.2.0/24", oif=idx)
        ipr.route("add", dst="10.100.3.0/24", oif=idx, table=100)
        ipr.addr("add", index=ipr.link_lookup(ifname="lan1")[0], address="10.100.4.7",
                 prefixlen=24)


def host_links(host_ns: str) -> set[str]:
    with netns.enter(host_ns), IPRoute() as ipr:
        return {str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}


@pytest.mark.usefixtures("lan")
def test_picked_subnet_skips_networks_host_addresses_and_routes_of_every_table(
        manager: Manager) -> None:
    assert manager.ok("create", "--subnet", "10.100.0.0/24", "given") == "given\n"
    assert manager.ok("create", "picked") == "picked\n"
    assert manager.subnets("given") == ["10.100.0.0/24"]
    # .1 is the LAN's, .2 the main table's route, .3 table 100's, .4 the down link's address
    assert manager.subnets("picked") == ["10.100.5.0/24"]
    doc = json.loads((manager.conf_dir / "50-picked.conflist").read_text())
    assert doc["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.100.5.0/24",
                                                     "gateway": "10.100.5.1"}]]


@pytest.mark.usefixtures("lan")
def test_a_given_subnet_over_a_host_route_is_written_with_a_warning(manager: Manager) -> None:
    code, out, err = manager.run("create", "--subnet", "10.100.2.0/25", "shadow")
    assert (code, out) == (0, "shadow\n")
    assert "10.100.2.0/25 overlaps 10.100.2.0/24, routed by the host" in err


def test_ipv6_picks_a_ula_slash_64_clear_of_the_hosts_v6_prefixes(manager: Manager) -> None:
    manager.ok("create", "--ipv6", "dual")
    v4, v6 = manager.subnets("dual")
    assert v4 == "10.100.0.0/24"
    assert v6.startswith("fd")
    assert v6.endswith("::/64")


BAD = [
    (["a/b"], "invalid network name"),
    ([".."], "invalid network name"),
    (["pycni"], "is reserved"),
    (["taken"], "a network named 'taken' already exists"),
    (["--subnet", "10.100.0.128/25", "n"], "overlaps 10.100.0.0/24 of network 'taken'"),
    (["--subnet", "10.300.0.0/24", "n"], "invalid subnet"),
    (["--subnet", "10.5.0.9/24", "n"], "host bits are set"),
    (["--subnet", "10.5.0.0/24", "--gateway", "10.6.0.1", "n"], "gateway 10.6.0.1 is outside"),
    (["--subnet", "10.5.0.0/24", "--ip-range", "10.6.0.0/25", "n"],
     "IP range 10.6.0.0/25 is outside"),
    (["--bridge", "a-much-too-long-name", "n"], "invalid bridge name"),
    (["--bridge", "br-taken", "n"], "bridge br-taken is taken by network 'taken'"),
    (["--mtu", "20", "n"], "within 68..65535"),
    (["-o", "nosuch=1", "n"], "unsupported option 'nosuch'"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_refused_and_nothing_is_written(
        manager: Manager, args: list[str], message: str) -> None:
    manager.ok("create", "--subnet", "10.100.0.0/24", "--bridge", "br-taken", "taken")
    before, links = manager.snapshot(), host_links(manager.host_ns)
    code, out, err = manager.run("create", *args)
    assert (code, out) == (1, "")
    assert message in err
    assert manager.snapshot() == before
    assert host_links(manager.host_ns) == links


@pytest.mark.usefixtures("lan")
def test_an_exhausted_pool_is_refused_and_nothing_is_written(
        manager: Manager, tmp_path: Path) -> None:
    small = write_config(tmp_path / "small.yaml", pool="10.100.0.0/23", data_dir=tmp_path)
    manager.ok("create", "--subnet", "10.100.0.0/24", "taken")
    before = manager.snapshot()
    code, _, err = manager.run("create", "n", config=small)  # .0 taken, .1 the LAN's
    assert code == 1
    assert "no free IPv4 subnet" in err
    assert manager.snapshot() == before
    assert not os.path.exists(manager.conf_dir / "50-n.conflist")


def _chain(manager: Manager, name: str) -> list[dict[str, object]]:
    doc = json.loads((manager.conf_dir / f"50-{name}.conflist").read_text())
    return list(doc["plugins"])


def test_names_resolve_on_created_networks_unless_disable_dns(
        manager: Manager, tmp_path: Path) -> None:
    manager.ok("create", "named")
    manager.ok("create", "--disable-dns", "nameless")
    assert [p["type"] for p in _chain(manager, "named")] == \
        ["bridge", "portmap", "bandwidth", "firewall", "pycni-dns", "loopback"]
    assert _chain(manager, "named")[4] == {"type": "pycni-dns", "domainName": "dns.pycni",
                                           "capabilities": {"aliases": True}}
    assert "pycni-dns" not in [p["type"] for p in _chain(manager, "nameless")]
    rows = {r["Name"]: r["DNSEnabled"]
            for r in map(json.loads, manager.ok("ls", "--format", "json").splitlines())}
    assert rows == {"named": True, "nameless": False}
    # the domain and the resolver's run dir from pycni.yaml's network section
    manager.config.write_text(manager.config.read_text() + "  dns_domain: corp.test\n"
                              f"  dns_run_dir: {tmp_path / 'dns'}\n")
    manager.ok("create", "corp")
    assert _chain(manager, "corp")[4] == {"type": "pycni-dns", "domainName": "corp.test",
                                          "runDir": str(tmp_path / "dns"),
                                          "capabilities": {"aliases": True}}
