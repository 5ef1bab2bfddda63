"""The `host` and `container` plugins as CNI plugins (exec'd like any runtime would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from pycni.net import netns
from tests.support import exec_plugin

VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")


def _conf(kind: str, version: str = "1.1.0", prev: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"cniVersion": version, "name": kind, "type": kind}
    if prev is not None:
        doc["prevResult"] = prev
    return doc


def _env(netns_path: str, cni_bin: Path) -> dict[str, str]:
    return {
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(cni_bin),
        "PYCNI_NO_SERVER": "1",
    }


def _veth(ns_path: str, name: str, peer: str, cidr: str) -> None:
    with netns.enter(ns_path), IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=peer)
        index = ipr.link_lookup(ifname=name)[0]
        address, prefix = cidr.split("/")
        ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")


def _names(ns_path: str) -> set[str]:
    with netns.enter(ns_path), IPRoute() as ipr:
        return {str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}


@pytest.mark.parametrize("version", VERSIONS)
def test_host_records_the_hosts_interfaces_and_changes_nothing(
    host_ns: str, cni_bin: Path, version: str
) -> None:
    _veth(host_ns, "hv0", "hv1", "192.0.2.10/24")
    before = _names(host_ns)
    ran = exec_plugin(
        cni_bin / "host",
        command="ADD",
        config=_conf("host", version),
        env=_env(host_ns, cni_bin),
        run_in=host_ns,
    )
    assert ran.code == 0, ran.stdout + ran.stderr
    result = ran.json()
    assert result["cniVersion"] == version
    names = [i["name"] for i in result["interfaces"]]
    assert set(names) == before
    assert all("sandbox" not in i for i in result["interfaces"])  # host-side interfaces
    ips = {ip["address"]: names[ip["interface"]] for ip in result["ips"]}
    assert ips["192.0.2.10/24"] == "hv0"
    assert _names(host_ns) == before
    check = exec_plugin(
        cni_bin / "host",
        command="CHECK",
        config=_conf("host", version, result),
        env=_env(host_ns, cni_bin),
        run_in=host_ns,
    )
    if version != "0.3.1":
        assert check.code == 0, check.stdout
    ran = exec_plugin(
        cni_bin / "host",
        command="DEL",
        config=_conf("host", version),
        env=_env(host_ns, cni_bin),
        run_in=host_ns,
    )
    assert (ran.code, ran.stdout) == (0, "")
    assert _names(host_ns) == before


def test_host_refuses_a_netns_that_is_not_its_own(
    host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    ran = exec_plugin(
        cni_bin / "host",
        command="ADD",
        config=_conf("host"),
        env=_env(container_ns, cni_bin),
        run_in=host_ns,
    )
    assert ran.code != 0
    assert ran.json()["code"] == 8  # INVALID_NETNS


def test_host_check_fails_when_a_recorded_interface_is_gone(host_ns: str, cni_bin: Path) -> None:
    _veth(host_ns, "hv0", "hv1", "192.0.2.10/24")
    add = exec_plugin(
        cni_bin / "host",
        command="ADD",
        config=_conf("host"),
        env=_env(host_ns, cni_bin),
        run_in=host_ns,
    )
    with netns.enter(host_ns), IPRoute() as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname="hv0")[0])
    check = exec_plugin(
        cni_bin / "host",
        command="CHECK",
        config=_conf("host", prev=add.json()),
        env=_env(host_ns, cni_bin),
        run_in=host_ns,
    )
    assert check.code != 0
    assert "hv0" in check.stdout


@pytest.mark.parametrize("version", VERSIONS)
def test_container_reports_the_peers_interfaces_and_owns_nothing(
    host_ns: str, container_ns: str, cni_bin: Path, version: str
) -> None:
    _veth(container_ns, "eth0", "peer0", "10.99.0.7/16")
    before = _names(container_ns)
    ran = exec_plugin(
        cni_bin / "container",
        command="ADD",
        config=_conf("container", version),
        env=_env(container_ns, cni_bin),
        run_in=host_ns,
    )
    assert ran.code == 0, ran.stdout + ran.stderr
    result = ran.json()
    names = [i["name"] for i in result["interfaces"]]
    assert set(names) == before
    assert {i["sandbox"] for i in result["interfaces"]} == {container_ns}
    assert {ip["address"]: names[ip["interface"]] for ip in result["ips"]} == {
        "10.99.0.7/16": "eth0"
    }
    ran = exec_plugin(
        cni_bin / "container",
        command="DEL",
        config=_conf("container", version),
        env=_env(container_ns, cni_bin),
        run_in=host_ns,
    )
    assert ran.code == 0
    assert _names(container_ns) == before  # the interfaces are the peer's, untouched


def test_container_del_succeeds_when_the_netns_is_gone(host_ns: str, cni_bin: Path) -> None:
    ran = exec_plugin(
        cni_bin / "container",
        command="DEL",
        config=_conf("container"),
        env=_env("/run/netns/pycni-test-gone", cni_bin),
        run_in=host_ns,
    )
    assert ran.code == 0


def test_container_refuses_a_missing_netns_on_add(host_ns: str, cni_bin: Path) -> None:
    ran = exec_plugin(
        cni_bin / "container",
        command="ADD",
        config=_conf("container"),
        env=_env("/run/netns/pycni-test-gone", cni_bin),
        run_in=host_ns,
    )
    assert ran.code != 0
    assert ran.json()["code"] in (3, 8)  # UNKNOWN_CONTAINER (NetNSNotFound) or INVALID_NETNS
