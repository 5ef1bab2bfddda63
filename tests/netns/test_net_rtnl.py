"""pycni.net.rtnl.SyncRtnl against the real kernel, inside throwaway namespaces: the same
answers and errors as pyroute2's own IPRoute, in the namespace the handle was opened in."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from typing import Any

import pytest
from pyroute2 import IPRoute, NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from pycni.net import netns
from pycni.net import rtnl as rtnl_module
from pycni.net.rtnl import SyncRtnl
from tests.conftest import MakeNetNS


def _ip_json(ns: str, *argv: str) -> Any:
    with netns.enter(ns):
        out = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _links(ns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in _ip_json(ns, "link", "show")}


def test_link_add_set_get_del_act_in_the_handle_netns(make_netns: MakeNetNS) -> None:
    a, b = make_netns("a"), make_netns("b")
    with netns.enter(a):
        rtnl = SyncRtnl()
    try:
        with netns.enter(b):  # called from elsewhere: still acts on "a"
            rtnl.link("add", ifname="br-x", kind="bridge", address="02:00:00:00:00:01")
            (msg,) = rtnl.link("get", ifname="br-x")
            index = msg["index"]
            rtnl.link("set", index=index, state="up", mtu=1400)
            assert rtnl.link("get", index=index)[0].get_attr("IFLA_MTU") == 1400
        links = _links(a)
        assert links["br-x"]["address"] == "02:00:00:00:00:01"
        assert links["br-x"]["mtu"] == 1400
        assert "UP" in links["br-x"]["flags"]
        assert "br-x" not in _links(b)
        rtnl.link("del", ifname="br-x")
        assert "br-x" not in _links(a)
    finally:
        rtnl.close()


def test_veth_with_its_peer_in_another_netns(make_netns: MakeNetNS) -> None:
    host, container = make_netns("host"), make_netns("container")
    fd = netns.open_netns(container)
    try:
        with netns.enter(host), SyncRtnl() as rtnl:
            rtnl.link("add", ifname="veth-h", kind="veth",
                      peer={"ifname": "eth0", "net_ns_fd": fd, "address": "02:aa:bb:cc:dd:ee"})
    finally:
        os.close(fd)
    assert _links(host)["veth-h"]["link_type"] == "ether"
    assert _links(container)["eth0"]["address"] == "02:aa:bb:cc:dd:ee"


def test_errors_are_pyroute2_netlink_errors_with_the_kernel_errno(host_ns: str) -> None:
    with netns.enter(host_ns), SyncRtnl() as rtnl:
        with pytest.raises(NetlinkError) as missing:
            rtnl.link("get", ifname="nope0")
        assert missing.value.code == errno.ENODEV
        rtnl.link("add", ifname="d0", kind="bridge")
        with pytest.raises(NetlinkError) as taken:
            rtnl.link("add", ifname="d0", kind="bridge")
        assert taken.value.code == errno.EEXIST
        (lo,) = rtnl.link("get", ifname="lo")
        with pytest.raises(NetlinkError) as present:
            rtnl.addr("add", index=lo["index"], address="127.0.0.1", prefixlen=8)
        assert present.value.code == errno.EEXIST
        # The handle is still in step after errors: the next request gets its own answer.
        assert rtnl.link("get", ifname="d0")[0].get_attr("IFLA_IFNAME") == "d0"


def test_address_and_route_requests_match_pyroute2(host_ns: str) -> None:
    """Same request through SyncRtnl on one bridge and through IPRoute on another: the
    kernel holds the same addresses and routes for both."""
    with netns.enter(host_ns), SyncRtnl() as rtnl, IPRoute() as ipr:
        for name, handle, net in (("d1", rtnl, "10.1"), ("d2", ipr, "10.2")):
            handle.link("add", ifname=name, kind="bridge")
            index = handle.link("get", ifname=name)[0]["index"]
            handle.addr("add", index=index, address=f"{net}.0.5", prefixlen=24,
                        broadcast=f"{net}.0.255")
            handle.link("set", index=index, state="up")
            handle.route("add", dst=f"{net}.7.0/24", gateway=f"{net}.0.1", oif=index)

    def shape(name: str) -> tuple[Any, ...]:
        (addr,) = _ip_json(host_ns, "-4", "addr", "show", "dev", name)
        info = addr["addr_info"][0]
        (route,) = [r for r in _ip_json(host_ns, "route", "show", "dev", name) if "gateway" in r]
        return (info["prefixlen"], info["broadcast"][4:], route["dst"][4:],
                route["gateway"][4:], route["protocol"])

    assert shape("d1") == shape("d2")


class _Sent:
    """A SyncRtnl socket that records every request it sends."""

    def __init__(self, sock: Any) -> None:
        self.sock, self.requests = sock, list[bytes]()

    def send(self, data: bytes) -> int:
        self.requests.append(bytes(data))
        return int(self.sock.send(data))

    def recv(self, size: int) -> bytes:
        return bytes(self.sock.recv(size))

    def close(self) -> None:
        self.sock.close()


def test_a_request_again_is_sent_as_pyroute2_encodes_it(
    host_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second of two same requests is a kept copy (``pycni.net.encoded``): byte for byte
    what pyroute2 encodes afresh for that sequence number, and the kernel acts on it."""
    from pycni.net import encoded

    processed: list[str] = []
    real_arguments = rtnl_module._arguments

    def arguments(mode: str, command: str, *rest: Any) -> Any:
        processed.append(command)
        return real_arguments(mode, command, *rest)

    monkeypatch.setattr(rtnl_module, "_arguments", arguments)
    with netns.enter(host_ns), SyncRtnl() as rtnl:
        rtnl.link("add", ifname="d0", kind="bridge")
        index = rtnl.link("get", ifname="d0")[0]["index"]
        sent = _Sent(rtnl._sock)
        rtnl._sock = sent  # type: ignore[assignment]
        encoded._KEPT.clear()
        rtnl.link("set", index=index, state="down")
        rtnl.link("set", index=index, state="up")  # encoded afresh
        processed.clear()
        rtnl.link("set", index=index, state="down")  # kept from the first
        assert processed == []  # pyroute2 was not asked again
        assert _links(host_ns)["d0"]["flags"].count("UP") == 0
        sequence = rtnl._sequence
        encoded._KEPT.clear()
        rtnl._sequence = sequence - 1
        rtnl.link("set", index=index, state="down")  # afresh again, with the same number
    first, _up, kept, fresh = sent.requests
    assert kept == fresh
    assert kept[:8] == first[:8]  # all but its sequence
    assert kept[16:] == first[16:]
    assert kept[8:12] != first[8:12]


def test_filtered_and_multipart_dumps(host_ns: str) -> None:
    """A dump larger than one receive buffer comes back whole; pyroute2's dump filters
    apply."""
    with netns.enter(host_ns), SyncRtnl() as rtnl, IPRoute() as ipr:
        for i in range(200):
            ipr.link("add", ifname=f"dm{i}", kind="bridge")
        names = {m.get_attr("IFLA_IFNAME") for m in rtnl.link("dump")}
        assert {f"dm{i}" for i in range(200)} <= names
        index = rtnl.link("get", ifname="dm7")[0]["index"]
        rtnl.addr("add", index=index, address="10.9.0.1", prefixlen=24)
        dumped = list(rtnl.addr("dump", index=index))
        assert [m.get_attr("IFA_ADDRESS") for m in dumped] == ["10.9.0.1"]
        assert sorted(m["index"] for m in rtnl.get_links()) == sorted(
            m["index"] for m in ipr.get_links()
        )


def test_an_address_dump_of_one_link_decodes_that_links_replies_only(
    host_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel answers an address dump with every address of the namespace; only the
    asked link's replies are decoded (with 1000 veths up, each with its fe80:: address, one
    link's listing took 26-59 ms)."""
    decoded: list[int] = []

    class CountingIfaddrmsg(ifaddrmsg):  # type: ignore[misc]
        def decode(self, *args: Any, **kwargs: Any) -> Any:
            out = super().decode(*args, **kwargs)
            decoded.append(self["index"])
            return out

    with netns.enter(host_ns), SyncRtnl() as rtnl:
        indexes = []
        for i in range(40):
            rtnl.link("add", ifname=f"ad{i}", kind="bridge")
            index = rtnl.link("get", ifname=f"ad{i}")[0]["index"]
            rtnl.addr("add", index=index, address=f"10.8.{i}.1", prefixlen=24)
            indexes.append(index)
        monkeypatch.setitem(rtnl_module._REPLY_CLASSES, RTM_NEWADDR,
                            CountingIfaddrmsg)
        dumped = list(rtnl.addr("dump", index=indexes[7]))
        assert [m.get_attr("IFA_ADDRESS") for m in dumped] == ["10.8.7.1"]
        assert decoded == [indexes[7]]
        decoded.clear()
        everything = list(rtnl.addr("dump"))  # no link asked: every reply, as before
        assert len(everything) >= 40
        assert len(decoded) == len(everything)


def test_link_exists_answers_without_decoding_the_link(
    make_netns: MakeNetNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DEL asks twice whether its veth is still there: the kernel's answer, a whole link
    message, is never decoded (nor is anything made of it in another netns's name)."""
    a, b = make_netns("a"), make_netns("b")
    with netns.enter(a):
        rtnl = SyncRtnl()
    try:
        rtnl.link("add", ifname="br-x", kind="bridge")

        def no_decoding(kind: int) -> Any:
            raise AssertionError(f"reply of type {kind} decoded")

        monkeypatch.setattr(rtnl_module, "_reply_class", no_decoding)
        with netns.enter(b):  # called from elsewhere: still asks "a"
            assert rtnl.link_exists("br-x")
            assert not rtnl.link_exists("br-y")
            assert rtnl.link_exists("lo")
        with pytest.raises(NetlinkError) as err:
            rtnl.link_exists("x" * 20)  # longer than IFNAMSIZ: not ENODEV, an error
        assert err.value.code != errno.ENODEV
    finally:
        rtnl.close()


def test_a_link_lookup_decodes_only_what_link_info_reads_and_reads_the_same(
    make_netns: MakeNetNS,
) -> None:
    """``links.get_link`` has the kernel's answer cut to the attributes a ``LinkInfo`` reads
    before pyroute2 decodes it: the same ``LinkInfo`` as from the whole message, for every kind
    of link a plugin meets (a bridge with a port or none, up or down, both veth ends, lo)."""
    from pycni.net import links

    host, other = make_netns("host"), make_netns("other")
    with netns.enter(host):
        rtnl = SyncRtnl()
    try:
        rtnl.link("add", ifname="br-t", kind="bridge", address="02:00:00:00:00:0a")
        with netns.held(other) as other_fd:
            rtnl.link("add", ifname="vh-t", kind="veth", mtu=1400,
                      peer={"ifname": "eth0", "net_ns_fd": other_fd, "mtu": 1400})
        rtnl.link("add", ifname="vp-t", kind="veth", peer={"ifname": "vq-t"})
        (bridge,) = rtnl.link("get", ifname="br-t")
        rtnl.link("set", ifname="vp-t", master=bridge["index"], state="up")
        rtnl.link("set", ifname="br-t", state="up", promisc=1)
        rtnl.link("add", ifname="br-d", kind="bridge")  # down, with no port
        for name in ("br-t", "vh-t", "vp-t", "vq-t", "lo", "br-d"):
            (whole,) = rtnl.link("get", ifname=name)
            (cut,) = rtnl.link_with(links._LINK_INFO_ATTRIBUTES, "get", ifname=name)
            assert len(cut["attrs"]) < len(whole["attrs"]) / 3, name
            assert links._to_link_info(cut) == links._to_link_info(whole), name
            assert links.get_link(rtnl, name) == links._to_link_info(whole), name
            assert links.get_link_by_index(rtnl, whole["index"]) == links._to_link_info(whole)
        assert links.get_link(rtnl, "nope") is None
        assert links.get_link(rtnl, "vp-t").master == bridge["index"]  # type: ignore[union-attr]
        with netns.enter(other):
            inner = SyncRtnl()
        try:  # the container end names its peer by index, in the other netns
            peer = links.get_link(inner, "eth0")
            host_end = links.get_link(rtnl, "vh-t")
            assert peer is not None
            assert host_end is not None
            assert (peer.kind, peer.mtu, peer.peer_index) == ("veth", 1400, host_end.index)
        finally:
            inner.close()
    finally:
        rtnl.close()


def test_other_requests_use_a_full_iproute_in_the_handle_netns(make_netns: MakeNetNS) -> None:
    a, b = make_netns("a"), make_netns("b")
    with netns.enter(a):
        rtnl = SyncRtnl()
    try:
        with netns.enter(a), IPRoute() as ipr:
            ipr.link("add", ifname="only-in-a", kind="bridge")
        with netns.enter(b):  # first use of the fallback from another netns
            names = {m.get_attr("IFLA_IFNAME") for m in rtnl.get_links()}
        assert "only-in-a" in names
    finally:
        rtnl.close()
