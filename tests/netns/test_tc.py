"""pycni.net.tc against the real kernel, inside a throwaway namespace.

State is read back through pyroute2 and, independently, through ``tc -j`` / ``ip -j`` run
inside the namespace (the product never shells out; tests may).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pycni.cni.errors import CNIError, LinkNotFound
from pycni.net import links, netns, tc
from pycni.net.ipr import IPR, open_ipr


def oracle(ns: str, *argv: str) -> Any:
    with netns.enter(ns):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def qdiscs(ns: str, dev: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = oracle(ns, "tc", "-j", "qdisc", "show", "dev", dev)
    return result


@pytest.fixture
def ipr(host_ns: str) -> Iterator[IPR]:
    with open_ipr(host_ns) as handle:
        handle.link("add", ifname="v0", kind="veth", peer="v1")
        for name in ("v0", "v1"):
            handle.link("set", index=handle.link_lookup(ifname=name)[0], state="up")
        yield handle


def index_of(ipr: IPR, name: str) -> int:
    link = links.get_link(ipr, name)
    assert link is not None
    return link.index


def _create_ifb(ipr: IPR, name: str, *, mtu: int, alias: str) -> tc.IfbInfo:
    """An ifb as bandwidth makes one: ``add_ifb``, then ``configure_ifb``."""
    index = tc.add_ifb(ipr, name, mtu=mtu)
    return tc.configure_ifb(ipr, name, index, alias=alias)


def test_tbf_set_read_back_and_seen_by_tc(host_ns: str, ipr: IPR) -> None:
    v0 = index_of(ipr, "v0")
    shape = tc.tbf_for(rate=1_000_000, burst=10_000, tick=tc.tick_in_usec())
    tc.set_tbf(ipr, v0, shape)
    have = tc.get_root_tbf(ipr, v0)
    assert have is not None
    assert (have.rate, have.limit, have.buffer) == (shape.rate, shape.limit, shape.buffer)
    (root,) = [q for q in qdiscs(host_ns, "v0") if q.get("root")]
    assert root["kind"] == "tbf"
    assert root["handle"] == "1:"
    assert root["options"]["rate"] == 1_000_000  # bytes/s
    assert root["options"]["burst"] == 10_000
    assert root["options"]["lat"] == 25_000  # microseconds


def test_tbf_replaces_itself_and_delete_restores_the_default(host_ns: str, ipr: IPR) -> None:
    v0 = index_of(ipr, "v0")
    tick = tc.tick_in_usec()
    tc.set_tbf(ipr, v0, tc.tbf_for(rate=1_000_000, burst=10_000, tick=tick))
    tc.set_tbf(ipr, v0, tc.tbf_for(rate=2_000_000, burst=10_000, tick=tick))  # retried ADD
    have = tc.get_root_tbf(ipr, v0)
    assert have is not None
    assert have.rate == 2_000_000
    assert [q["kind"] for q in qdiscs(host_ns, "v0") if q.get("root")] == ["tbf"]
    assert tc.delete_root_qdisc(ipr, v0)
    assert tc.get_root_tbf(ipr, v0) is None
    assert not tc.delete_root_qdisc(ipr, v0)  # already gone: nothing to do
    assert all(q["kind"] != "tbf" for q in qdiscs(host_ns, "v0"))


def test_clamped_burst_is_what_the_kernel_keeps(ipr: IPR) -> None:
    v0 = index_of(ipr, "v0")
    shape = tc.tbf_for(rate=125_000, burst=(2**31 - 1) // 8, tick=tc.tick_in_usec())
    tc.set_tbf(ipr, v0, shape)
    have = tc.get_root_tbf(ipr, v0)
    assert have is not None
    assert (have.rate, have.limit, have.buffer) == (shape.rate, shape.limit, shape.buffer)


def test_ifb_create_alias_mtu_list_and_delete(host_ns: str, ipr: IPR) -> None:
    ifb = _create_ifb(ipr, "bwptest", mtu=1400, alias="pycni-bandwidth net=x a/b/c")
    assert (ifb.name, ifb.mtu, ifb.alias, ifb.up) == (
        "bwptest",
        1400,
        "pycni-bandwidth net=x a/b/c",
        True,
    )
    (seen,) = oracle(host_ns, "ip", "-j", "-d", "link", "show", "dev", "bwptest")
    assert seen["linkinfo"]["info_kind"] == "ifb"
    assert seen["ifalias"] == "pycni-bandwidth net=x a/b/c"
    assert seen["mtu"] == 1400
    assert [i.name for i in tc.list_ifbs(ipr)] == ["bwptest"]
    assert tc.get_ifb(ipr, "v0") is None  # a veth is not an ifb
    with pytest.raises(CNIError, match="not an ifb"):
        tc.delete_ifb(ipr, "v0")
    assert links.get_link(ipr, "v0") is not None
    assert tc.delete_ifb(ipr, "bwptest")
    assert not tc.delete_ifb(ipr, "bwptest")
    assert tc.list_ifbs(ipr) == []


def test_add_ifb_refuses_an_existing_name(ipr: IPR) -> None:
    _create_ifb(ipr, "bwptest", mtu=1500, alias="x")
    with pytest.raises(CNIError, match="create ifb bwptest failed"):
        _create_ifb(ipr, "bwptest", mtu=1500, alias="x")


def test_redirect_to_ifb_is_one_match_all_mirred_filter(host_ns: str, ipr: IPR) -> None:
    v0 = index_of(ipr, "v0")
    ifb = _create_ifb(ipr, "bwptest", mtu=1500, alias="x")
    tc.setup_redirect(ipr, v0, ifb.index)
    tc.setup_redirect(ipr, v0, ifb.index)  # retried: replaced, not stacked
    assert tc.get_redirect_targets(ipr, v0) == [ifb.index]
    filters = oracle(host_ns, "tc", "-j", "filter", "show", "dev", "v0", "ingress")
    rules = [f for f in filters if "actions" in f.get("options", {})]
    assert len(rules) == 1
    (rule,) = rules
    assert (rule["kind"], rule["protocol"], rule["pref"]) == ("u32", "all", 1)
    assert rule["options"]["match"] == {"value": "0", "mask": "0", "offmask": "", "off": 0}
    (action,) = rule["options"]["actions"]
    assert (action["kind"], action["mirred_action"], action["direction"], action["to_dev"]) == (
        "mirred",
        "redirect",
        "egress",
        "bwptest",
    )
    assert tc.delete_ingress_qdisc(ipr, v0)
    assert tc.get_redirect_targets(ipr, v0) == []
    assert not tc.delete_ingress_qdisc(ipr, v0)


def test_redirected_traffic_is_shaped_by_the_ifb_tbf(host_ns: str, ipr: IPR) -> None:
    """Packets sent into v1 arrive on v0's ingress and must leave through the ifb."""
    v0 = index_of(ipr, "v0")
    ifb = _create_ifb(ipr, "bwptest", mtu=1500, alias="x")
    tc.set_tbf(ipr, ifb.index, tc.tbf_for(rate=1_000_000, burst=10_000, tick=tc.tick_in_usec()))
    tc.setup_redirect(ipr, v0, ifb.index)
    ipr.addr("add", index=index_of(ipr, "v1"), address="192.0.2.1", prefixlen=24)
    subprocess.run(
        [
            "nsenter",
            f"--net={host_ns}",
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "v1",
            "192.0.2.2",
        ],
        capture_output=True,
        check=False,
    )
    (stats,) = oracle(host_ns, "ip", "-j", "-s", "link", "show", "dev", "bwptest")
    assert stats["stats64"]["tx"]["packets"] >= 3  # ARP requests, redirected out of the ifb


def test_missing_link_is_link_not_found(ipr: IPR) -> None:
    tick = tc.tick_in_usec()
    with pytest.raises(LinkNotFound):
        tc.set_tbf(ipr, 9999, tc.tbf_for(rate=1000, burst=1000, tick=tick))
    with pytest.raises(LinkNotFound):
        tc.setup_redirect(ipr, 9999, 1)
    assert tc.get_root_tbf(ipr, 9999) is None


def test_what_sits_at_root_and_ingress_by_default(ipr: IPR) -> None:
    v0 = index_of(ipr, "v0")
    assert tc.get_root_tbf(ipr, v0) is None  # veth: the built-in noqueue, nothing reported
    assert not tc.delete_root_qdisc(ipr, v0)
    assert not tc.has_ingress_qdisc(ipr, v0)  # no ingress queue at all
    ifb = _create_ifb(ipr, "bwptest", mtu=1500, alias="x")  # up: a default qdisc, handle 0
    assert tc.get_root_tbf(ipr, ifb.index) is None
    assert not tc.delete_root_qdisc(ipr, ifb.index)  # the kernel's default is not ours
    tc.setup_redirect(ipr, v0, ifb.index)
    assert tc.has_ingress_qdisc(ipr, v0)
    assert tc.delete_ingress_qdisc(ipr, v0)
    assert not tc.has_ingress_qdisc(ipr, v0)  # the queue stays, with the built-in noop


def test_a_qdisc_is_asked_of_its_link_alone(host_ns: str, ipr: IPR) -> None:
    """A dump of all qdiscs resumes each batch at a link's position: links deleted meanwhile
    made it skip others (the soak test's "no tbf on host veth"), and it grows with every
    container. The reads go through ``SyncRtnl.qdisc``; the full pyroute2 handle, the only
    way to a dump, is never opened."""
    v0 = index_of(ipr, "v0")
    tc.set_tbf(ipr, v0, tc.tbf_for(rate=1_000_000, burst=10_000, tick=tc.tick_in_usec()))
    with open_ipr(host_ns) as fresh:
        assert tc.get_root_tbf(fresh, v0) is not None
        assert not tc.has_ingress_qdisc(fresh, v0)
        assert fresh._full is None
