"""`bridge` macspoofchk: the nftables bridge-family builders and the refusal without nftables."""

from __future__ import annotations

from typing import Any

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import PluginRequest
from pycni.firewall.model import AttachmentKey
from pycni.firewall.nftables import macspoof as ms
from pycni.firewall.nftables import nftjson as nj
from pycni.firewall.nftables.engine import NftError

Doc = dict[str, Any]


def check(cid: str = "c1", port: str = "veth1", mac: str = "02:AA:00:00:00:01",
          network: str = "net") -> ms.MacSpoofCheck:
    return ms.MacSpoofCheck(key=AttachmentKey(network, cid, "eth0"), port=port, mac=mac)


def elements_of(m: ms.MacSpoofCheck, label: str | None = None) -> tuple[nj.Element, ...]:
    label = label or m.key.label
    return (nj.Element(ms.PORTS, m.port, label), nj.Element(ms.ALLOWED, m.allowed_key, label))


def intact(*elements: nj.Element) -> nj.TableState:
    return nj.TableState(elements=elements, containers=frozenset({ms.PORTS, ms.ALLOWED}),
                         chains=(nj.Chain(ms.CHAIN, rules=(tuple(ms.spoof_rule()),)),))


def verbs(cmds: list[Doc]) -> list[str]:
    return [next(iter(c)) for c in cmds]


def test_one_static_rule_drops_a_listed_port_with_a_foreign_mac() -> None:
    rule = ms.spoof_rule()
    assert rule[0]["match"]["right"] == "@ports"
    assert rule[1]["match"]["op"] == "!="
    assert rule[1]["match"]["right"] == "@allowed"
    assert rule[-1] == {"drop": None}


def test_setup_on_an_empty_host_writes_layout_and_two_elements() -> None:
    cmds = ms.setup_commands(nj.TableState(), check())
    assert verbs(cmds) == ["add"] * 4 + ["flush", "add", "add", "add"]
    allowed = cmds[-1]["add"]["element"]
    assert allowed["name"] == "allowed"
    assert allowed["elem"][0]["elem"]["val"] == {"concat": ["veth1", "02:aa:00:00:00:01"]}
    assert allowed["elem"][0]["elem"]["comment"] == check().key.label


def test_setup_on_an_intact_table_is_element_inserts_only() -> None:
    assert verbs(ms.setup_commands(intact(), check())) == ["add", "add"]


def test_setup_replaces_leftovers_of_the_port_or_label() -> None:
    stale = check(cid="crashed", mac="02:bb:00:00:00:09")  # same port, old MAC, other label
    cmds = ms.setup_commands(intact(*elements_of(stale)), check())
    assert verbs(cmds) == ["delete", "delete", "add", "add"]


def test_teardown_and_gc_by_label() -> None:
    a, b = check("a", "veth1"), check("b", "veth2", "02:00:00:00:00:02")
    other = check("x", "veth3", network="other")
    state = intact(*elements_of(a), *elements_of(b), *elements_of(other))
    assert len(ms.teardown_commands(state, a.key.label)) == 2
    assert ms.teardown_commands(intact(), a.key.label) == []
    gc = ms.gc_commands(state, a.key.network_tag, {b.key.label})
    assert [c["delete"]["element"]["elem"][0] for c in gc] == ["veth1", a.allowed_key]


def test_check_state() -> None:
    m = check()
    assert ms.check_state(intact(*elements_of(m)), m) == []
    assert ms.check_state(nj.TableState(), m) == [
        "macspoofchk: table bridge pycni_macspoof missing or altered"]
    moved = check(mac="02:00:00:00:00:77")
    assert "allows" in ms.check_state(intact(*elements_of(moved)), m)[0]


class Failing:
    kind = "fake"

    def run(self, commands: list[Doc]) -> Doc:
        raise NftError("Operation not supported")


def test_require_available_is_code_2_naming_nftables() -> None:
    with pytest.raises(CNIError) as err:
        ms.require_available(Failing())
    assert err.value.code == ErrorCode.UNSUPPORTED_FIELD
    assert "nftables" in err.value.msg


def test_bridge_refuses_macspoofchk_without_nftables_before_touching_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pycni.firewall.nftables import engine as nft_lib
    from pycni.plugins import bridge

    def missing() -> None:
        raise OSError("libnftables.so.1: cannot open shared object file")

    def touched(*args: object, **kwargs: object) -> None:
        raise AssertionError("bridge touched the host before refusing macspoofchk")

    monkeypatch.setattr(nft_lib, "default_runner", missing)
    monkeypatch.setattr(ms, "default_runner", missing)
    monkeypatch.setattr(bridge, "open_ipr", touched)
    monkeypatch.setattr(bridge, "delegate_add", touched)
    doc = {"cniVersion": "1.1.0", "name": "net", "type": "bridge", "macspoofchk": True,
           "ipam": {"type": "host-local"}}
    args = CmdArgs(command="ADD", container_id="c1", netns="/var/run/netns/c1", ifname="eth0",
                   config=PluginRequest.from_dict(doc))
    with pytest.raises(CNIError) as err:
        bridge.cmd_add(args)
    assert err.value.code == ErrorCode.UNSUPPORTED_FIELD
    assert "macspoofchk needs nftables" in err.value.msg
