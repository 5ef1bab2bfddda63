"""pycni.net.ipr and pycni.net.links against the real kernel, inside throwaway namespaces.

State is read back through pyroute2 and, independently, through ``ip -j`` / ``bridge -j`` run
inside the namespace (the product never shells out; tests may).
"""

from __future__ import annotations

import errno
import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetlinkError

from pycni.cni.errors import CNIError, ErrorCode, LinkNotFound, NetNSNotFound
from pycni.net import bridge_ports, links, netns, veth_pair
from pycni.net.ipr import open_ipr, translate_netlink_error
from tests.conftest import MakeNetNS


def oracle(ns: str, *argv: str) -> Any:
    """JSON from ``ip``/``bridge`` run inside ``ns`` (the child inherits the thread's netns)."""
    with netns.enter(ns):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def ip_link(ns: str, name: str) -> dict[str, Any]:
    result: list[dict[str, Any]] = oracle(ns, "ip", "-j", "-d", "link", "show", "dev", name)
    return result[0]


def link_names(ns: str) -> set[str]:
    return {entry["ifname"] for entry in oracle(ns, "ip", "-j", "link", "show")}


def must_get(ipr: Any, name: str) -> links.LinkInfo:
    link = links.get_link(ipr, name)
    assert link is not None, f"{name} missing"
    return link


def make_veth_in(ns: str, name: str, peer: str) -> None:
    """A plain veth pair inside ``ns`` (test scaffolding, not the code under test)."""
    with open_ipr(ns) as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=peer)


# ---------------------------------------------------------------------------- ipr


def test_open_ipr_is_bound_to_the_namespace(host_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        ipr.link("add", ifname="probe0", kind="veth", peer="probe1")
        assert links.get_link(ipr, "probe0") is not None
    assert {"probe0", "probe1"} <= link_names(host_ns)
    with open_ipr() as root_ipr:  # read-only look at the root netns
        assert links.get_link(root_ipr, "probe0") is None


def test_open_ipr_missing_netns_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(NetNSNotFound), open_ipr(str(missing)):
        pass
    assert not missing.exists()


def test_translate_netlink_error() -> None:
    with pytest.raises(CNIError) as info, translate_netlink_error("frobnicate"):
        raise NetlinkError(errno.EEXIST)
    assert info.value.code == ErrorCode.INTERNAL
    assert "frobnicate" in info.value.msg
    assert "EEXIST" in info.value.details
    assert isinstance(info.value.__cause__, NetlinkError)

    with pytest.raises(LinkNotFound), translate_netlink_error("set up", link="eth9"):
        raise NetlinkError(errno.ENODEV)
    with (
        pytest.raises(CNIError) as oserr,
        translate_netlink_error("open", code=ErrorCode.IO_FAILURE),
    ):
        raise OSError(errno.EACCES, "denied")
    assert oserr.value.code == ErrorCode.IO_FAILURE


# ---------------------------------------------------------------------------- names


def test_host_veth_names() -> None:
    pattern = re.compile(r"^veth[0-9a-f]{8}$")
    names = {links.random_host_veth_name() for _ in range(50)}
    assert all(pattern.match(n) for n in names)
    assert len(names) == 50
    assert links.host_veth_name("net/ctr/eth0") == links.host_veth_name("net/ctr/eth0")
    assert links.host_veth_name("net/ctr/eth0") != links.host_veth_name("net/ctr/eth1")
    assert pattern.match(links.host_veth_name("x"))


@pytest.mark.parametrize("name", ["", "a" * 16, "..", "a/b", "a:b", "a b", "br%d"])
def test_validate_ifname_rejects(name: str) -> None:
    with pytest.raises(CNIError) as info:
        links.validate_ifname(name)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


# ---------------------------------------------------------------------------- bridge


def test_ensure_bridge_creates_and_is_idempotent(host_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        first = links.ensure_bridge(ipr, "cni0", mtu=1400)
        again = links.ensure_bridge(ipr, "cni0", mtu=9000)  # mtu only applies on creation
    assert first.index == again.index
    assert (first.kind, first.up, first.mtu) == ("bridge", True, 1400)
    seen = ip_link(host_ns, "cni0")
    assert seen["linkinfo"]["info_kind"] == "bridge"
    assert seen["mtu"] == 1400
    assert "UP" in seen["flags"]
    assert "PROMISC" not in seen["flags"]


def test_ensure_bridge_concurrent(host_ns: str) -> None:
    workers = 8
    barrier = threading.Barrier(workers)
    results: list[int] = []
    errors: list[BaseException] = []

    def add() -> None:
        try:
            with open_ipr(host_ns) as ipr:  # one handle per thread, like separate ADDs
                barrier.wait()
                results.append(links.ensure_bridge(ipr, "cni0").index)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=add) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == workers
    assert len(set(results)) == 1
    bridges = oracle(host_ns, "ip", "-j", "link", "show", "type", "bridge")
    assert [b["ifname"] for b in bridges] == ["cni0"]


def test_ensure_bridge_lost_race_is_success(host_ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another ADD creates the bridge between our look-up and our create: EEXIST, re-read."""
    real_get_link = links.get_link
    calls = {"n": 0}

    def blind_first_lookup(ipr: Any, name: str) -> links.LinkInfo | None:
        calls["n"] += 1
        return None if calls["n"] == 1 else real_get_link(ipr, name)

    with open_ipr(host_ns) as one, open_ipr(host_ns) as two:
        made = links.ensure_bridge(two, "cni0")
        monkeypatch.setattr(links, "get_link", blind_first_lookup)
        again = links.ensure_bridge(one, "cni0")
    assert calls["n"] >= 2  # the create path ran and re-read the link
    assert again.index == made.index


def test_ensure_bridge_name_taken_by_non_bridge(host_ns: str) -> None:
    make_veth_in(host_ns, "notbr", "notbr-peer")
    with open_ipr(host_ns) as ipr, pytest.raises(CNIError) as info:
        links.ensure_bridge(ipr, "notbr")
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "notbr" in info.value.msg
    assert ip_link(host_ns, "notbr")["linkinfo"]["info_kind"] == "veth"


def test_ensure_bridge_promisc(host_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        links.ensure_bridge(ipr, "cni0")
        assert not must_get(ipr, "cni0").promisc
        br = links.ensure_bridge(ipr, "cni0", promisc=True)
    assert br.promisc
    assert "PROMISC" in ip_link(host_ns, "cni0")["flags"]


def test_ensure_bridge_vlan_filtering(host_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        try:
            br = links.ensure_bridge(ipr, "cni0", vlan_filtering=True)
        except links.BridgeVlanUnsupported:
            pytest.skip("kernel without CONFIG_BRIDGE_VLAN_FILTERING")
        assert links.bridge_vlan_filtering(ipr, br.index)
    assert ip_link(host_ns, "cni0")["linkinfo"]["info_data"]["vlan_filtering"] == 1


# ---------------------------------------------------------------------------- veth


def test_create_veth_across_namespaces(host_ns: str, container_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        pair = veth_pair.create_veth(
            ipr,
            host_ifname="vethaaaabbbb",
            container_ifname="eth0",
            container_netns=container_ns,
            mtu=1400,
            container_mac="C2:11:22:33:44:55",
        )
    assert pair.host.name == "vethaaaabbbb"
    assert pair.container.name == "eth0"
    assert (pair.host.kind, pair.container.kind) == ("veth", "veth")
    assert pair.host.peer_index == pair.container.index
    assert pair.container.peer_index == pair.host.index
    assert pair.container.mac == "c2:11:22:33:44:55"
    host_seen = ip_link(host_ns, "vethaaaabbbb")
    cont_seen = ip_link(container_ns, "eth0")
    assert host_seen["mtu"] == cont_seen["mtu"] == 1400
    assert cont_seen["address"] == "c2:11:22:33:44:55"
    assert "link_netnsid" in cont_seen  # the peer lives in another namespace
    assert "eth0" not in link_names(host_ns)
    assert "vethaaaabbbb" not in link_names(container_ns)


@pytest.mark.parametrize(("mtu", "mac"), [(None, None), (1400, "C2:11:22:33:44:56")])
def test_create_veth_reports_both_ends_as_the_kernel_has_them(
    host_ns: str, container_ns: str, mtu: int | None, mac: str | None
) -> None:
    """Nothing is read back after the create (the host end is the kernel's echo, the container
    end is worked out): both must still be what the kernel then reports, field by field."""
    with open_ipr(host_ns) as ipr, open_ipr(container_ns) as cipr:
        pair = veth_pair.create_veth(ipr, host_ifname="vethecho0001", container_ifname="eth0",
                                     container_netns=container_ns, mtu=mtu, container_mac=mac)
        assert pair.host == must_get(ipr, "vethecho0001")
        assert pair.container == must_get(cipr, "eth0")
    assert pair.container.mtu == (mtu or 1500)
    if mac is None:  # a random locally administered unicast address of ours
        assert int(pair.container.mac[:2], 16) & 0x03 == 0x02
    else:
        assert pair.container.mac == mac.lower()


def test_create_veth_joins_the_bridge_up_in_its_request(host_ns: str, container_ns: str) -> None:
    with open_ipr(host_ns) as ipr, open_ipr(container_ns) as cipr:
        bridge = links.ensure_bridge(ipr, "cni0")
        pair = veth_pair.create_veth(ipr, host_ifname="vethport0001", container_ifname="eth0",
                                     container_netns=container_ns, master=bridge.index, up=True)
        host = must_get(ipr, "vethport0001")
        assert (host.master, host.up) == (bridge.index, True)
        assert pair.host.up
        assert pair.container == must_get(cipr, "eth0")  # the container end stays down
    assert ip_link(host_ns, "vethport0001")["master"] == "cni0"


def test_create_veth_reads_the_host_end_back_from_a_kernel_that_does_not_echo(
    host_ns: str, container_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before Linux 6.3 a new link is not echoed: the request without NLM_F_ECHO gets the
    same ACK alone, as such a kernel answers."""
    from pycni.net import rtnl

    monkeypatch.setitem(rtnl._REQUEST_FLAGS, "create_echo", rtnl._REQUEST_FLAGS["create"])
    with open_ipr(host_ns) as ipr, open_ipr(container_ns) as cipr:
        assert links.add_link(ipr, ifname="probe0", kind="veth", peer="probe1") is None
        pair = veth_pair.create_veth(ipr, host_ifname="vethecho0002", container_ifname="eth0",
                                     container_netns=container_ns)
        assert pair.host == must_get(ipr, "vethecho0002")
        assert pair.container == must_get(cipr, "eth0")


def test_find_veth_peer_in(host_ns: str, container_ns: str) -> None:
    with open_ipr(host_ns) as ipr, open_ipr(container_ns) as cipr:
        pair = veth_pair.create_veth(
            ipr, host_ifname="vethcafe0001", container_ifname="eth0", container_netns=container_ns
        )
        found = veth_pair.find_veth_peer_in(ipr, must_get(cipr, "eth0"))
        lo = links.get_link(cipr, "lo")
        assert lo is not None
        assert veth_pair.find_veth_peer_in(ipr, lo) is None
    assert found is not None
    assert found.name == "vethcafe0001"
    assert found.index == pair.host.index


def test_create_veth_container_name_exists(host_ns: str, container_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        veth_pair.create_veth(
            ipr, host_ifname="vethfirst000", container_ifname="eth0", container_netns=container_ns
        )
        with pytest.raises(veth_pair.ContainerIfnameExists) as info:
            veth_pair.create_veth(
                ipr,
                host_ifname="vethsecond00",
                container_ifname="eth0",
                container_netns=container_ns,
            )
    assert "eth0" in info.value.msg
    assert "vethsecond00" not in link_names(host_ns)


def test_create_veth_container_name_exists_told_by_eexist(
    host_ns: str, container_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No look-up before the request: the kernel's EEXIST tells a clash, and only then are the
    names looked up, the container's first (a taken CNI_IFNAME wins over a taken host name)."""
    events: list[tuple[str, str]] = []
    real_link_exists, real_add_veth = links.link_exists, veth_pair._add_veth

    def link_exists(ipr: Any, name: str) -> bool:
        events.append(("get", name))
        return real_link_exists(ipr, name)

    def add_veth(host_ipr: Any, **kwargs: Any) -> tuple[bool, links.LinkInfo | None]:
        events.append(("add", kwargs["host_ifname"]))
        return real_add_veth(host_ipr, **kwargs)

    with open_ipr(host_ns) as ipr:
        veth_pair.create_veth(
            ipr, host_ifname="vethfirst000", container_ifname="eth0", container_netns=container_ns
        )
        monkeypatch.setattr(links, "link_exists", link_exists)
        monkeypatch.setattr(veth_pair, "_add_veth", add_veth)
        with open_ipr(container_ns) as cipr, pytest.raises(veth_pair.ContainerIfnameExists):
            veth_pair.create_veth(
                ipr,
                host_ifname="vethfirst000",  # taken too: the container's clash is reported
                container_ifname="eth0",
                container_netns=container_ns,
                container_ipr=cipr,
            )
    assert events[:2] == [("add", "vethfirst000"), ("get", "eth0")]
    assert "vethfirst000" in link_names(host_ns)  # the first pair is untouched


def test_create_veth_host_name_collision(host_ns: str, make_netns: MakeNetNS) -> None:
    first_ns, second_ns = make_netns("c1", lo_up=False), make_netns("c2", lo_up=False)
    with open_ipr(host_ns) as ipr:
        veth_pair.create_veth(
            ipr, host_ifname="vethdeadbeef", container_ifname="eth0", container_netns=first_ns
        )
        with pytest.raises(veth_pair.HostVethNameTaken) as info:
            veth_pair.create_veth(
                ipr, host_ifname="vethdeadbeef", container_ifname="eth0", container_netns=second_ns
            )
    assert info.value.name == "vethdeadbeef"
    assert isinstance(info.value, CNIError)
    assert "eth0" not in link_names(second_ns)  # nothing half-made in the second container


def test_create_veth_rejects_bad_mac(host_ns: str, container_ns: str) -> None:
    with open_ipr(host_ns) as ipr, pytest.raises(CNIError) as info:
        veth_pair.create_veth(
            ipr,
            host_ifname="vethbadmac00",
            container_ifname="eth0",
            container_netns=container_ns,
            container_mac="not-a-mac",
        )
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_create_veth_missing_container_netns(host_ns: str, tmp_path: Path) -> None:
    with open_ipr(host_ns) as ipr, pytest.raises(NetNSNotFound):
        veth_pair.create_veth(
            ipr,
            host_ifname="vethnons0000",
            container_ifname="eth0",
            container_netns=str(tmp_path / "gone"),
        )
    assert "vethnons0000" not in link_names(host_ns)


def test_delete_link(host_ns: str, container_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        veth_pair.create_veth(
            ipr, host_ifname="vethdel00000", container_ifname="eth0", container_netns=container_ns
        )
        assert links.delete_link(ipr, "vethdel00000") is True
        assert links.delete_link(ipr, "vethdel00000") is False
        assert links.delete_link(ipr, "never-was") is False
    assert "eth0" not in link_names(container_ns)  # deleting one end removes the pair


# ---------------------------------------------------------------------------- attributes


def test_set_up_mac_promisc(host_ns: str) -> None:
    make_veth_in(host_ns, "attr0", "attr1")
    with open_ipr(host_ns) as ipr:
        index = must_get(ipr, "attr0").index
        links.set_up(ipr, index)
        links.set_mac(ipr, index, "02:00:00:AA:BB:CC")
        links.set_promisc(ipr, index, True)
        seen = ip_link(host_ns, "attr0")
        assert "UP" in seen["flags"]
        assert "PROMISC" in seen["flags"]
        assert seen["address"] == "02:00:00:aa:bb:cc"
        links.set_promisc(ipr, index, False)
        assert not must_get(ipr, "attr0").promisc
    assert "PROMISC" not in ip_link(host_ns, "attr0")["flags"]


def test_set_up_missing_link_is_link_not_found(host_ns: str) -> None:
    with open_ipr(host_ns) as ipr, pytest.raises(LinkNotFound):
        links.set_up(ipr, 4242)


def test_wait_oper_up(host_ns: str, container_ns: str) -> None:
    with open_ipr(host_ns) as ipr, open_ipr(container_ns) as cipr:
        pair = veth_pair.create_veth(
            ipr, host_ifname="vethoper0000", container_ifname="eth0", container_netns=container_ns
        )
        links.set_up(ipr, pair.host.index)
        # The peer is still down: the host end cannot become operationally up.
        with pytest.raises(CNIError, match="not up"):
            links.wait_oper_up(ipr, pair.host.index, timeout=0.2)
        links.set_up(cipr, pair.container.index)
        assert links.wait_oper_up(ipr, pair.host.index).operstate == "UP"


# ---------------------------------------------------------------------------- bridge ports


@pytest.fixture
def port(host_ns: str, container_ns: str) -> tuple[int, int]:
    """(bridge index, host veth index) with the veth enslaved to bridge cni0 in host_ns."""
    with open_ipr(host_ns) as ipr:
        br = links.ensure_bridge(ipr, "cni0")
        pair = veth_pair.create_veth(
            ipr, host_ifname="vethport0000", container_ifname="eth0", container_netns=container_ns
        )
        links.set_master(ipr, pair.host.index, br.index)
        return br.index, pair.host.index


def test_set_master(host_ns: str, port: tuple[int, int]) -> None:
    bridge_index, veth_index = port
    with open_ipr(host_ns) as ipr:
        link = links.get_link_by_index(ipr, veth_index)
        assert link is not None
        assert link.master == bridge_index
    assert ip_link(host_ns, "vethport0000")["master"] == "cni0"


@pytest.mark.parametrize(("hairpin", "isolated"), [(True, False), (False, True), (True, True)])
def test_set_bridge_port(
    host_ns: str, port: tuple[int, int], hairpin: bool, isolated: bool
) -> None:
    _, veth_index = port
    with open_ipr(host_ns) as ipr:
        bridge_ports.set_bridge_port(ipr, veth_index, hairpin=hairpin, isolated=isolated)
        got = bridge_ports.get_bridge_port(ipr, veth_index)
    assert got == bridge_ports.BridgePortInfo(hairpin=hairpin, isolated=isolated)
    seen = oracle(host_ns, "bridge", "-j", "-d", "link", "show", "dev", "vethport0000")[0]
    assert (seen["hairpin"], seen["isolated"]) == (hairpin, isolated)


def test_set_bridge_port_and_up_in_one_request(host_ns: str, port: tuple[int, int]) -> None:
    """The bridge ADD's last step: the flags and the link up, through the fast handle alone
    (no full pyroute2 handle opened)."""
    _, veth_index = port
    with open_ipr(host_ns) as ipr:
        links.set_down(ipr, veth_index)
        bridge_ports.set_bridge_port(ipr, veth_index, hairpin=True, isolated=False, up=True)
        got = bridge_ports.get_bridge_port(ipr, veth_index)
        link = links.get_link_by_index(ipr, veth_index)
        full_handle = getattr(ipr, "_full", "no such handle")
    assert got == bridge_ports.BridgePortInfo(hairpin=True, isolated=False)
    assert link is not None
    assert link.up
    assert full_handle is None
    seen = oracle(host_ns, "bridge", "-j", "-d", "link", "show", "dev", "vethport0000")[0]
    assert (seen["hairpin"], seen["isolated"]) == (True, False)


def test_set_bridge_port_off_again(host_ns: str, port: tuple[int, int]) -> None:
    _, veth_index = port
    with open_ipr(host_ns) as ipr:
        bridge_ports.set_bridge_port(ipr, veth_index, hairpin=True, isolated=True)
        bridge_ports.set_bridge_port(ipr, veth_index, hairpin=False, isolated=False)
        assert bridge_ports.get_bridge_port(ipr, veth_index) == bridge_ports.BridgePortInfo(
            False, False)


def test_get_bridge_port_not_a_port(host_ns: str) -> None:
    make_veth_in(host_ns, "loose0", "loose1")
    with open_ipr(host_ns) as ipr:
        index = must_get(ipr, "loose0").index
        assert bridge_ports.get_bridge_port(ipr, index) is None


def test_set_bridge_port_vlan(host_ns: str, container_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        try:
            br = links.ensure_bridge(ipr, "cni0", vlan_filtering=True)
        except links.BridgeVlanUnsupported:
            pytest.skip("kernel without CONFIG_BRIDGE_VLAN_FILTERING")
        pair = veth_pair.create_veth(
            ipr, host_ifname="vethvlan0000", container_ifname="eth0", container_netns=container_ns
        )
        links.set_master(ipr, pair.host.index, br.index)
        bridge_ports.set_bridge_port_vlan(ipr, pair.host.index, 100)
        bridge_ports.set_bridge_port_vlan(ipr, pair.host.index, 100)  # idempotent
        vlans = bridge_ports.get_bridge_port_vlans(ipr, pair.host.index)
    assert vlans == [bridge_ports.BridgeVlan(vid=100, pvid=True, untagged=True)]


def test_set_bridge_port_vlan_rejects_bad_id(host_ns: str) -> None:
    with open_ipr(host_ns) as ipr, pytest.raises(CNIError) as info:
        bridge_ports.set_bridge_port_vlan(ipr, 1, 4095)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_fresh_port_has_hairpin_and_isolation_off(host_ns: str, container_ns: str) -> None:
    """What lets the bridge plugin skip set_bridge_port when neither is wanted."""
    with open_ipr(host_ns) as ipr:
        br = links.ensure_bridge(ipr, "cni0")
        pair = veth_pair.create_veth(
            ipr, host_ifname="vethfresh000", container_ifname="eth0", container_netns=container_ns
        )
        links.set_master(ipr, pair.host.index, br.index, up=True)
        assert bridge_ports.get_bridge_port(ipr, pair.host.index) == bridge_ports.BridgePortInfo(
            False, False)
        link = links.get_link_by_index(ipr, pair.host.index)
    assert link is not None
    assert link.up
    assert link.master == br.index
    seen = oracle(host_ns, "bridge", "-j", "-d", "link", "show", "dev", "vethfresh000")[0]
    assert (seen["hairpin"], seen["isolated"]) == (False, False)


def test_ensure_bridge_pin_mac_survives_a_lower_port(host_ns: str, container_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        br = links.ensure_bridge(ipr, "cni0", pin_mac=True)
        assert br.mac.startswith("02:")
        pair = veth_pair.create_veth(
            ipr,
            host_ifname="vethlow00000",
            container_ifname="eth0",
            container_netns=container_ns,
        )
        links.set_mac(ipr, pair.host.index, "02:00:00:00:00:01")  # lower than the bridge's
        links.set_master(ipr, pair.host.index, br.index, up=True)
        after = links.get_link_by_index(ipr, br.index)
        assert links.ensure_bridge(ipr, "cni0", pin_mac=True).mac == br.mac
    assert after is not None
    assert after.mac == br.mac


def test_ensure_bridge_unpinned_follows_lowest_port(host_ns: str, container_ns: str) -> None:
    """The kernel rule the bridge plugin's MAC re-read relies on."""
    with open_ipr(host_ns) as ipr:
        br = links.ensure_bridge(ipr, "cni0")
        pair = veth_pair.create_veth(
            ipr, host_ifname="vethlow00000", container_ifname="eth0", container_netns=container_ns
        )
        links.set_mac(ipr, pair.host.index, "02:00:00:00:00:01")
        links.set_master(ipr, pair.host.index, br.index, up=True)
        after = links.get_link_by_index(ipr, br.index)
    assert after is not None
    assert after.mac == "02:00:00:00:00:01"
