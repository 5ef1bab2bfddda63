"""The nftables forward layout: pure builders, foreign-chain holes and backend control flow."""

from __future__ import annotations

from typing import Any

import pytest

from pycni.firewall.model import FORWARD_MARK, HOLE_COMMENT, AttachmentKey, Forward
from pycni.firewall.nftables import forward as nf
from pycni.firewall.nftables import nftjson as nj
from pycni.firewall.nftables.engine import NftError

Doc = dict[str, Any]


def fwd(cid: str = "c1", *sources: str, network: str = "net", policy: str = "same-bridge",
        subnets: tuple[str, ...] = ("10.99.0.0/24",), internal: bool = False) -> Forward:
    return Forward(key=AttachmentKey(network, cid, "eth0"), network_subnets=subnets,
                   sources=sources or ("10.99.0.5",), ingress_policy=policy, internal=internal)


def verdicts(rules: list[list[Any]]) -> list[str]:
    return [next(k for k in ("accept", "drop", "return") if {k: None} in r) for r in rules]


def test_network_rules_follow_the_decision_order() -> None:
    rules = nf.network_rules(fwd())
    assert verdicts(rules) == ["accept", "accept", "accept", "drop", "return"]
    assert nj.addr_match("saddr", "10.99.0.0/24") in rules[0]
    assert nj.addr_match("daddr", "10.99.0.0/24") in rules[0]
    assert {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}} in rules[2]


def test_open_policy_accepts_marked_ingress() -> None:
    assert verdicts(nf.network_rules(fwd(policy="open"))) == ["accept"] * 4 + ["return"]


def test_dual_stack_rules_per_family_and_chain_names_depend_on_policy() -> None:
    dual = fwd("c1", "10.99.0.5", "fd00::5", subnets=("10.99.0.0/24", "fd00::/64"))
    assert len(nf.network_rules(dual)) == 10
    assert nf.chain_name(fwd()) != nf.chain_name(fwd(policy="open"))
    assert nf.chain_name(fwd("c1")) == nf.chain_name(fwd("c2", "10.99.0.6"))


def test_internal_accepts_within_and_drops_everything_else_in_or_out() -> None:
    dual = ("10.99.0.0/24", "fd00::/64")
    rules = nf.network_rules(fwd("c1", "10.99.0.5", "fd00::5", subnets=dual, internal=True))
    assert verdicts(rules) == ["accept", "drop", "drop"] * 2
    assert rules[1] == [nj.addr_match("saddr", "10.99.0.0/24"), {"drop": None}]
    assert rules[2] == [nj.addr_match("daddr", "10.99.0.0/24"), {"drop": None}]
    # its own chain: an internal network never shares rules with a routed one
    assert nf.chain_name(fwd(internal=True)) != nf.chain_name(fwd())
    assert nf.chain_name(fwd()) == nf.chain_name(fwd(internal=False))


def test_base_chain_clears_then_looks_up_then_accepts_marked() -> None:
    rules = nf.base_rules()
    clear = rules[0][0]["mangle"]["value"]["&"][1]
    assert clear == 0xFFFFFFFF ^ FORWARD_MARK
    assert [r[0]["vmap"]["data"] for r in rules[1:5]] == ["@fwd4", "@fwd6", "@fwd4", "@fwd6"]
    assert rules[-1][-1] == {"accept": None}


def test_create_elements_is_pure_inserts() -> None:
    cmds = nf.create_elements(fwd("c1", "10.99.0.5", "fd00::5"))
    assert [next(iter(c)) for c in cmds] == ["create", "create"]
    assert cmds[0]["create"]["element"]["name"] == "fwd4"
    assert cmds[1]["create"]["element"]["name"] == "fwd6"


CHAINS_DOC: Doc = {"nftables": [
    {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward",
               "prio": 0, "policy": "drop"}},
    {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "hook": "input",
               "prio": 0, "policy": "drop"}},
    {"chain": {"family": "inet", "table": "fw", "name": "fwd", "hook": "forward",
               "prio": 0, "policy": "accept"}},
    {"chain": {"family": "inet", "table": "pycni", "name": "fwd-hook", "hook": "forward",
               "prio": -200, "policy": "drop"}},
    {"chain": {"family": "inet", "table": "early", "name": "f", "hook": "forward",
               "prio": -250, "policy": "drop"}},
    {"chain": {"family": "bridge", "table": "b", "name": "f", "hook": "forward",
               "prio": 0, "policy": "drop"}},
]}


def test_foreign_drop_chains_are_other_tables_forward_hooks_with_policy_drop() -> None:
    found = nf.foreign_drop_chains(CHAINS_DOC)
    assert [c.where for c in found] == ["ip filter FORWARD", "inet early f"]


def _rule_doc(*rules: Doc) -> Doc:
    return {"nftables": [{"rule": r} for r in rules]}


def test_a_hole_is_recognised_and_inserted_only_where_missing() -> None:
    chain = nf.foreign_drop_chains(CHAINS_DOC)[0]
    hole = nf.hole_rule(chain)["insert"]["rule"]
    assert (hole["family"], hole["table"], hole["chain"]) == ("ip", "filter", "FORWARD")
    assert hole["comment"] == HOLE_COMMENT
    listed = dict(hole, expr=[*hole["expr"][:1], {"counter": {"packets": 7, "bytes": 9}},
                              {"accept": None}])
    assert nf.holed(chain, _rule_doc(listed)).holed
    assert not nf.holed(chain, _rule_doc(dict(listed, comment="other"))).holed
    assert nf.insert_holes([nf.holed(chain, _rule_doc(listed))]) == []
    assert len(nf.insert_holes([chain])) == 1


def test_check_holes_reports_missing_and_too_early_chains() -> None:
    early, late = (nf.ForeignChain(family="inet", table="t", name="f", prio=p, holed=True)
                   for p in (-300, 0))
    missing = nf.ForeignChain(family="ip", table="filter", name="FORWARD", prio=0)
    assert nf.check_holes([late]) == []
    assert "no pycni accept" in nf.check_holes([missing])[0]
    assert "before" in nf.check_holes([early])[0]


def _state(*elements: nj.Element, chains: tuple[nj.Chain, ...] = ()) -> nj.TableState:
    return nj.TableState(elements=elements, chains=chains, containers=frozenset({"fwd4", "fwd6"}))


def _elem(f: Forward, ip: str, label: str | None = None) -> nj.Element:
    return nj.Element("fwd4", ip, label or f.key.label, {"jump": {"target": nf.chain_name(f)}})


def test_teardown_and_gc_by_label() -> None:
    a, b, other = fwd("a"), fwd("b", "10.99.0.6"), fwd("x", "10.98.0.2", network="other")
    chains = (nj.Chain(nf.chain_name(a)), nj.Chain(nf.chain_name(other)))
    state = _state(_elem(a, "10.99.0.5"), _elem(b, "10.99.0.6"), _elem(other, "10.98.0.2"),
                   chains=chains)
    assert nf.teardown_commands(state, a.key.label) == [nj.delete_element("fwd4", "10.99.0.5")]
    assert nf.gc_commands(state, a.key.network_tag, {b.key.label}) == [
        nj.delete_element("fwd4", "10.99.0.5")]
    # no valid attachment left: the network's chain goes too; the other network is untouched
    assert nf.gc_commands(state, a.key.network_tag, set()) == [
        nj.delete_element("fwd4", "10.99.0.5"), nj.delete_element("fwd4", "10.99.0.6"),
        nj.delete_chain(nf.chain_name(a))]


def test_check_state() -> None:
    f = fwd()
    chains = (nj.Chain(nf.BASE_CHAIN, hook="forward", kind="filter",
                       rules=tuple(tuple(r) for r in nf.base_rules())),
              nj.Chain(nf.chain_name(f), rules=tuple(tuple(r) for r in nf.network_rules(f))))
    assert nf.check_state(_state(_elem(f, "10.99.0.5"), chains=chains), f) == []
    assert nf.check_state(_state(_elem(f, "10.99.0.5", "someone-else"), chains=chains), f)
    assert nf.check_state(_state(chains=chains), f) == [
        "nftables: no forward element for 10.99.0.5 in map fwd4"]
    assert "missing" in nf.check_state(_state(_elem(f, "10.99.0.5")), f)[0]


# ------------------------------------------------------------------------- control flow


class Runner:
    """Answers reads from fixed documents; fails the first ``fail`` writes."""

    kind = "fake"

    def __init__(self, *, chains: Doc | None = None, fail: int = 0) -> None:
        self.chains = chains or {"nftables": []}
        self.fail = fail
        self.writes: list[list[Doc]] = []

    def run(self, commands: list[Doc]) -> Doc:
        verb = next(iter(commands[0]))
        if verb == "list":
            what = commands[0]["list"]
            if "chains" in what:
                return self.chains
            if "tables" in what:
                return {"nftables": []}
            if "chain" in what:
                return {"nftables": []}
            raise NftError("No such file or directory")  # list table: none yet
        self.writes.append(commands)
        if self.fail:
            self.fail -= 1
            raise NftError("File exists")
        return {"nftables": []}


def test_first_write_is_inserts_plus_the_missing_holes() -> None:
    runner = Runner(chains=CHAINS_DOC)
    nf.NftForward(runner).setup(fwd())
    (write,) = runner.writes
    assert [next(iter(c)) for c in write] == ["create", "insert", "insert"]


def test_escalates_to_the_layout_from_nothing_when_the_insert_fails() -> None:
    runner = Runner(fail=1)
    nf.NftForward(runner).setup(fwd())
    assert len(runner.writes) == 2
    assert runner.writes[1][0] == nj.add_table()
    assert {"create"} <= {next(iter(c)) for c in runner.writes[1]}
    assert not {"flush", "delete"} & {next(iter(c)) for c in runner.writes[1]}


def test_then_to_the_rewrite() -> None:
    runner = Runner(fail=2)
    nf.NftForward(runner).setup(fwd())
    assert len(runner.writes) == 3
    assert "flush" in {next(iter(c)) for c in runner.writes[2]}


def test_then_to_the_informed_write() -> None:
    runner = Runner(fail=3)
    nf.NftForward(runner).setup(fwd())
    assert len(runner.writes) == 4


def test_teardown_of_nothing_writes_nothing() -> None:
    runner = Runner()
    nf.NftForward(runner).teardown(AttachmentKey("net", "c", "eth0"))
    assert runner.writes == []


def test_status_is_fine_without_attachments_even_on_a_drop_host() -> None:
    assert nf.NftForward(Runner(chains=CHAINS_DOC)).status() is None


@pytest.mark.parametrize("hole", [True, False])
def test_status_with_attachments_depends_on_the_holes(
    monkeypatch: pytest.MonkeyPatch, hole: bool
) -> None:
    backend = nf.NftForward(Runner())
    f = fwd()
    monkeypatch.setattr(backend._nft, "read", lambda: _state(
        _elem(f, "10.99.0.5"), chains=(nj.Chain(nf.BASE_CHAIN),)))
    monkeypatch.setattr(backend, "foreign_chains", lambda: [nf.ForeignChain(
        family="ip", table="filter", name="FORWARD", prio=0, holed=hole)])
    assert (backend.status() is None) == hole
