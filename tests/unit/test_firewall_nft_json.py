"""nftables JSON: the pure builders for the masquerade layout and the listing parser."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycni.firewall.model import AttachmentKey, Masquerade
from pycni.firewall.nftables import masquerade as nft_masq
from pycni.firewall.nftables import nftjson as nj

KEY = AttachmentKey("pycni", "abc123", "eth0")
M = Masquerade(key=KEY, network_subnets=("10.88.0.0/16", "fd00:88::/64"),
               sources=("10.88.0.2", "fd00:88::2"))
CHAIN = nft_masq.chain_name(M)
WHERE = {"family": "inet", "table": "pycni"}


def jump(chain: str) -> dict[str, Any]:
    return {"jump": {"target": chain}}


def elem(ip: str, comment: str, chain: str) -> list[Any]:
    return [{"elem": {"val": ip, "comment": comment}}, jump(chain)]


# A `list table inet pycni` answer as nftables 1.0.6 prints it (trimmed to what matters).
LISTING: dict[str, Any] = {"nftables": [
    {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "pycni", "handle": 1}},
    {"map": {**WHERE, "name": "masq4", "type": "ipv4_addr", "handle": 2, "map": "verdict", "elem": [
        elem("10.88.0.2", KEY.label, CHAIN),
        elem("10.88.0.3", f"{KEY.network_tag}-{'1' * 16}", CHAIN),
        ["10.88.0.4", {"goto": {"target": "elsewhere"}}],
    ]}},
    {"map": {**WHERE, "name": "masq6", "type": "ipv6_addr", "handle": 3, "map": "verdict", "elem": [
        elem("fd00:88::2", KEY.label, CHAIN),
    ]}},
    {"set": {**WHERE, "name": "plain", "type": "ipv4_addr", "handle": 4, "elem": ["1.2.3.4"]}},
    {"chain": {**WHERE, "name": CHAIN, "handle": 5}},
    {"chain": {**WHERE, "name": f"masq-{KEY.network_tag}-{'0' * 16}", "handle": 6}},
    {"chain": {**WHERE, "name": "masq-postrouting", "handle": 7, "type": "nat",
               "hook": "postrouting", "prio": 100, "policy": "accept"}},
    *({"rule": {**WHERE, "chain": CHAIN, "handle": 10 + i, "expr": expr}}
      for i, expr in enumerate(nft_masq.network_rules(M))),
    *({"rule": {**WHERE, "chain": "masq-postrouting", "handle": 20 + i, "expr": expr}}
      for i, expr in enumerate(nft_masq.base_rules())),
]}


def test_every_command_targets_only_the_pycni_table() -> None:
    for cmd in nft_masq.setup_blind(M):
        (_verb, body), = cmd.items()
        (kind, obj), = body.items()
        if kind == "table":
            assert obj == {"family": "inet", "name": "pycni"}
        else:
            assert (obj["family"], obj["table"]) == ("inet", "pycni"), cmd


def test_fast_path_is_one_create_per_address() -> None:
    def create(name: str, ip: str) -> dict[str, Any]:
        body = {**WHERE, "name": name, "elem": [elem(ip, KEY.label, CHAIN)]}
        return {"create": {"element": body}}

    assert nft_masq.create_elements(M) == [
        create("masq4", "10.88.0.2"), create("masq6", "fd00:88::2")]


def test_layout_rewrites_both_chains_whole() -> None:
    cmds = nft_masq.ensure_layout(M)
    assert cmds[0] == {"add": {"table": {"family": "inet", "name": "pycni"}}}
    masq4 = {**WHERE, "name": "masq4", "type": "ipv4_addr", "map": "verdict"}
    assert {"add": {"map": masq4}} in cmds
    base = {**WHERE, "name": "masq-postrouting", "type": "nat", "hook": "postrouting", "prio": 100,
            "policy": "accept"}
    assert {"add": {"chain": base}} in cmds
    for chain in ("masq-postrouting", CHAIN):
        flush = cmds.index({"flush": {"chain": {**WHERE, "name": chain}}})
        rules = [i for i, c in enumerate(cmds)
                 if c.get("add", {}).get("rule", {}).get("chain") == chain]
        assert rules
        assert min(rules) > flush


def test_network_chain_exempts_subnets_and_multicast_then_masquerades() -> None:
    def match(proto: str, addr: str, length: int) -> dict[str, Any]:
        return {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "daddr"}},
                          "right": {"prefix": {"addr": addr, "len": length}}}}

    assert nft_masq.network_rules(M) == [
        [match("ip", "10.88.0.0", 16), {"return": None}],
        [match("ip6", "fd00:88::", 64), {"return": None}],
        [match("ip", "224.0.0.0", 4), {"return": None}],
        [match("ip6", "ff00::", 8), {"return": None}],
        [{"masquerade": None}],
    ]


def test_chain_names_are_short_and_safe() -> None:
    assert f"masq-{KEY.network_tag}-{M.chain_tag}" == CHAIN
    assert len(CHAIN) == 38
    assert CHAIN.replace("-", "").isalnum()


def test_host_prefix_is_written_as_a_bare_address() -> None:
    # nft prints a /32 back as an address: writing it the same way keeps CHECK's comparison exact.
    assert nj.addr_match("daddr", "10.1.2.3/32")["match"]["right"] == "10.1.2.3"
    assert nj.addr_match("saddr", "fd00::1/128")["match"]["left"]["payload"]["protocol"] == "ip6"


def test_blind_setup_is_add_delete_add_per_address() -> None:
    tail = nft_masq.setup_blind(M)[len(nft_masq.ensure_layout(M)):]
    assert [next(iter(c)) for c in tail] == ["add", "delete", "add"] * 2
    assert tail[1] == {"delete": {"element": {**WHERE, "name": "masq4", "elem": ["10.88.0.2"]}}}


def test_informed_setup_deletes_only_addresses_that_are_present() -> None:
    state = nj.parse_table(LISTING)
    other = Masquerade(key=KEY, network_subnets=("10.88.0.0/16",),
                       sources=("10.88.0.4", "10.88.0.9"))
    tail = nft_masq.setup_informed(other, state)[len(nft_masq.ensure_layout(other)):]
    assert tail[0] == {"delete": {"element": {**WHERE, "name": "masq4", "elem": ["10.88.0.4"]}}}
    assert [next(iter(c)) for c in tail] == ["delete", "add", "add"]


def test_parse_table_reads_elements_with_and_without_comments() -> None:
    state = nj.parse_table(LISTING)
    assert state.containers == {"masq4", "masq6", "plain"}
    masq4 = state.elements_of("masq4")
    assert [(e.key, e.comment, nj.verdict_target(e.value)) for e in masq4] == [
        ("10.88.0.2", KEY.label, CHAIN),
        ("10.88.0.3", f"{KEY.network_tag}-{'1' * 16}", CHAIN),
        ("10.88.0.4", None, "elsewhere"),
    ]
    assert state.elements_of("plain")[0].key == "1.2.3.4"
    base = state.chain("masq-postrouting")
    assert base is not None
    assert (base.kind, base.hook, base.prio) == ("nat", "postrouting", 100)
    assert state.chain("nope") is None


def test_parse_table_of_nothing_is_empty() -> None:
    assert nj.parse_table({"nftables": []}) == nj.TableState()
    assert nj.parse_table({}) == nj.TableState()


def test_table_in() -> None:
    assert nj.table_in(LISTING)
    assert not nj.table_in({"nftables": [{"table": {"family": "ip", "name": "pycni"}}]})


def test_teardown_deletes_by_label_in_both_maps() -> None:
    cmds = nft_masq.teardown_commands(nj.parse_table(LISTING), KEY.label)
    assert cmds == [
        {"delete": {"element": {**WHERE, "name": "masq4", "elem": ["10.88.0.2"]}}},
        {"delete": {"element": {**WHERE, "name": "masq6", "elem": ["fd00:88::2"]}}},
    ]
    assert nft_masq.teardown_commands(nj.parse_table(LISTING), "nobody") == []


def test_gc_keeps_valid_drops_others_and_unused_chains() -> None:
    state = nj.parse_table(LISTING)
    cmds = nft_masq.gc_commands(state, KEY.network_tag, keep={KEY.label})
    assert cmds == [
        {"delete": {"element": {**WHERE, "name": "masq4", "elem": ["10.88.0.3"]}}},
        {"delete": {"chain": {**WHERE, "name": f"masq-{KEY.network_tag}-{'0' * 16}"}}},
    ]


def test_gc_with_nothing_valid_removes_the_network_entirely() -> None:
    cmds = nft_masq.gc_commands(nj.parse_table(LISTING), KEY.network_tag, keep=())
    deleted = [next(iter(c["delete"].items())) for c in cmds]
    assert [kind for kind, _ in deleted] == ["element"] * 3 + ["chain"] * 2
    # The comment-less element is not ours to judge.
    assert all(body.get("elem") != ["10.88.0.4"] for _, body in deleted)


def test_gc_of_another_network_touches_nothing() -> None:
    assert nft_masq.gc_commands(nj.parse_table(LISTING), "f" * 16, keep=()) == []


def test_check_is_clean_on_the_listing() -> None:
    assert nft_masq.check_state(nj.parse_table(LISTING), M) == []


@pytest.mark.parametrize(("source", "problem"), [
    ("10.88.0.9", "no masquerade element for 10.88.0.9"),
    ("10.88.0.3", "is labelled"),
    ("10.88.0.4", "is labelled None"),
])
def test_check_reports_element_problems(source: str, problem: str) -> None:
    m = Masquerade(key=KEY, network_subnets=M.network_subnets, sources=(source, "fd00:88::2"))
    problems = nft_masq.check_state(nj.parse_table(LISTING), m)
    assert any(problem in p for p in problems), problems
    assert any("stale element 10.88.0.2" in p for p in problems)


def test_check_reports_missing_table_and_chains() -> None:
    assert "missing" in nft_masq.check_state(nj.TableState(), M)[0]
    doc = json.loads(json.dumps(LISTING))
    doc["nftables"] = [o for o in doc["nftables"] if "rule" not in o or o["rule"]["chain"] != CHAIN]
    problems = nft_masq.check_state(nj.parse_table(doc), M)
    assert problems == [f"nftables: chain {CHAIN} has unexpected rules"]
