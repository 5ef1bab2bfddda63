"""Port-mapping layouts without a kernel: the nftables builders and backend against a fake
transactional nft, the iptables text against a fake iptables-save. What the kernel really
does with them is tested in tests/e2e/test_portmap.py."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pycni.firewall import select
from pycni.firewall.iptables import portmap as ipt
from pycni.firewall.model import AttachmentKey, PortMap, PortMapping
from pycni.firewall.nftables import nftjson as nj
from pycni.firewall.nftables import portmap as npm
from pycni.firewall.nftables.engine import Doc, NftError
from pycni.firewall.nftables.portmap import NftPortmap
from pycni.firewall.none import NoneDriver


def pm_for(cid: str, ip4: str | None = "10.99.0.5", ip6: str | None = None,
           *mappings: PortMapping, network: str = "net", **kw: Any) -> PortMap:
    subnets = tuple(f"{ip}/{24 if ':' not in ip else 64}" for ip in (ip4, ip6) if ip)
    return PortMap(key=AttachmentKey(network, cid, "eth0"),
                   mappings=mappings or (PortMapping(None, 8080, 80),),
                   container_ipv4=ip4, container_ipv6=ip6, subnets=subnets, **kw)


# ------------------------------------------------------------------------ a fake nft


class FakeNft:
    """One table, transactional like the kernel: a failing command undoes the whole batch."""

    kind = "fake"

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"table": False, "maps": {}, "chains": {}}
        self.batches: list[list[str]] = []  # the verbs of each successful batch

    def run(self, commands: list[Doc]) -> Doc:
        st = copy.deepcopy(self.state)
        out: Doc = {"nftables": []}
        for cmd in commands:
            (verb, body), = cmd.items()
            (kind, obj), = body.items()
            result = getattr(self, f"_{verb}_{kind}")(st, obj)
            if result is not None:
                out = result
        self.state = st
        self.batches.append([next(iter(c)) for c in commands])
        return out

    @staticmethod
    def _fail(why: str) -> NftError:
        return NftError(f"Error: Could not process rule: {why}")

    def _add_table(self, st: dict[str, Any], obj: Doc) -> None:
        st["table"] = True

    def _need_table(self, st: dict[str, Any]) -> None:
        if not st["table"]:
            raise self._fail("No such file or directory")

    def _add_map(self, st: dict[str, Any], obj: Doc) -> None:
        self._need_table(st)
        st["maps"].setdefault(obj["name"], {"head": obj, "elems": {}})

    def _add_chain(self, st: dict[str, Any], obj: Doc) -> None:
        self._need_table(st)
        st["chains"].setdefault(obj["name"], {"head": obj, "rules": []})

    def _chain(self, st: dict[str, Any], name: str) -> dict[str, Any]:
        if name not in st["chains"]:
            raise self._fail("No such file or directory")
        return st["chains"][name]  # type: ignore[no-any-return]

    def _create_map(self, st: dict[str, Any], obj: Doc) -> None:
        self._need_table(st)
        if obj["name"] in st["maps"]:
            raise self._fail("File exists")
        self._add_map(st, obj)

    def _create_chain(self, st: dict[str, Any], obj: Doc) -> None:
        self._need_table(st)
        if obj["name"] in st["chains"]:
            raise self._fail("File exists")
        self._add_chain(st, obj)

    def _flush_chain(self, st: dict[str, Any], obj: Doc) -> None:
        self._chain(st, obj["name"])["rules"] = []

    def _delete_chain(self, st: dict[str, Any], obj: Doc) -> None:
        self._chain(st, obj["name"])
        targets = {nj.verdict_target(v) for m in st["maps"].values()
                   for _, v in m["elems"].values()}
        if obj["name"] in targets:
            raise self._fail("Device or resource busy")
        del st["chains"][obj["name"]]

    def _add_rule(self, st: dict[str, Any], obj: Doc) -> None:
        self._chain(st, obj["chain"])["rules"].append(obj["expr"])

    def _elements(self, st: dict[str, Any], obj: Doc) -> tuple[dict[str, Any], list[Any]]:
        if obj["name"] not in st["maps"]:
            raise self._fail("No such file or directory")
        return st["maps"][obj["name"]]["elems"], obj["elem"]

    def _insert(self, st: dict[str, Any], obj: Doc, *, exclusive: bool) -> None:
        elems, items = self._elements(st, obj)
        for (wrapped, value) in items:
            key, comment = wrapped["elem"]["val"], wrapped["elem"].get("comment")
            target = nj.verdict_target(value)
            if target is not None:
                self._chain(st, target)
            norm = json.dumps(key, sort_keys=True)
            if norm in elems and (exclusive or elems[norm][1] != value):
                raise self._fail("File exists")
            elems.setdefault(norm, ({"elem": {"val": key, "comment": comment}}, value))

    def _add_element(self, st: dict[str, Any], obj: Doc) -> None:
        self._insert(st, obj, exclusive=False)

    def _create_element(self, st: dict[str, Any], obj: Doc) -> None:
        self._insert(st, obj, exclusive=True)

    def _delete_element(self, st: dict[str, Any], obj: Doc) -> None:
        elems, items = self._elements(st, obj)
        for key in items:
            norm = json.dumps(key, sort_keys=True)
            if norm not in elems:
                raise self._fail("No such file or directory")
            del elems[norm]

    def _list_tables(self, st: dict[str, Any], obj: Any) -> Doc:
        tables = [{"table": {"family": npm.FAMILY, "name": npm.TABLE}}] if st["table"] else []
        return {"nftables": tables}

    def _list_maps(self, st: dict[str, Any], obj: Doc) -> Doc:
        self._need_table(st)
        return {"nftables": [{"map": {**m["head"], "name": name,
                                      "elem": [list(e) for e in m["elems"].values()]}}
                             for name, m in st["maps"].items()]}

    def _list_table(self, st: dict[str, Any], obj: Doc) -> Doc:
        items: list[Any] = self._list_maps(st, obj)["nftables"]
        for name, c in st["chains"].items():
            items.append({"chain": c["head"]})
            items += [{"rule": {"chain": name, "expr": r}} for r in c["rules"]]
        return {"nftables": items}

    def elements(self) -> int:
        return sum(len(m["elems"]) for m in self.state["maps"].values())


@pytest.fixture
def fake() -> FakeNft:
    return FakeNft()


@pytest.fixture
def nft(fake: FakeNft) -> NftPortmap:
    return NftPortmap(runner=fake)


# ----------------------------------------------------------------------- nft builders


def test_one_mapping_is_one_element_per_map_and_an_add_is_inserts_only() -> None:
    pm = pm_for("a", "10.99.0.5", "fd00::5", PortMapping(None, 8080, 80),
                PortMapping("10.0.0.1", 8443, 443, "udp"))
    cmds = npm.create_elements(pm)
    assert {next(iter(c)) for c in cmds} == {"create"}
    names = sorted(c["create"]["element"]["name"] for c in cmds)
    assert names == ["dnat4_addr", "dnat4_ip_addr", "dnat4_ip_port", "dnat4_port",
                     "dnat6_addr", "dnat6_port", "hairpin4", "hairpin4", "hairpin6"]
    first = cmds[0]["create"]["element"]
    assert first["elem"] == [[{"elem": {"val": {"concat": ["tcp", 8080]},
                                        "comment": pm.key.label}}, "10.99.0.5"]]
    ip_key = next(c for c in cmds if c["create"]["element"]["name"] == "dnat4_ip_port")
    assert ip_key["create"]["element"]["elem"][0][0]["elem"]["val"] == \
        {"concat": ["10.0.0.1", "udp", 8443]}


def test_hairpin_chain_rules_follow_the_options() -> None:
    snat = npm.hairpin_rules(pm_for("a", "10.99.0.5", "fd00::5"))
    assert [r[0]["match"]["right"] for r in snat] == [
        {"prefix": {"addr": "10.99.0.0", "len": 24}},
        {"prefix": {"addr": "fd00::", "len": 64}},
        {"prefix": {"addr": "127.0.0.0", "len": 8}},
    ]
    assert npm.hairpin_rules(pm_for("a", snat=False, masq_all=True)) == [[{"masquerade": None}]]
    off = pm_for("a", snat=False)
    assert npm.hairpin_rules(off) == []
    assert not any("hp-" in json.dumps(c) for c in npm.ensure_layout(off))


def test_ensure_layout_is_whole_and_idempotent(fake: FakeNft) -> None:
    pm = pm_for("a")
    fake.run(npm.ensure_layout(pm))
    once = copy.deepcopy(fake.state)
    fake.run(npm.ensure_layout(pm))
    assert fake.state == once
    hooks = {n: c["head"].get("hook") for n, c in fake.state["chains"].items()}
    assert hooks == {"hostports": None, "prerouting": "prerouting", "output": "output",
                     "postrouting": "postrouting", npm.hairpin_chain(pm): None}


# ------------------------------------------------------------------------ nft backend


def test_first_add_writes_the_layout_then_adds_are_pure_inserts(
    fake: FakeNft, nft: NftPortmap
) -> None:
    nft.setup(pm_for("a", "10.99.0.5"))
    assert len(fake.batches) == 1  # the insert failed (no table): the layout from nothing
    assert not {"flush", "delete"} & set(fake.batches[0])
    nft.setup(pm_for("b", "10.99.0.6", None, PortMapping(None, 8081, 80)))
    assert fake.batches[-1] == ["create"] * 3  # addr, port, hairpin: nothing else
    assert nft.check(pm_for("a", "10.99.0.5")) == []


def test_a_retried_add_and_a_leftover_with_another_value_are_replaced(
    fake: FakeNft, nft: NftPortmap
) -> None:
    a = pm_for("a", "10.99.0.5")
    nft.setup(a)
    nft.setup(a)  # retried: same elements
    assert fake.elements() == 3
    b = pm_for("b", "10.99.0.9")  # same host port, leftover of a (DEL never ran)
    nft.setup(b)
    assert fake.elements() == 4  # a's port elements now b's; a's hairpin element stays
    assert nft.check(b) == []
    problems = nft.check(a)
    assert any("labelled" in p for p in problems)


def test_teardown_by_hint_deletes_exactly_and_without_reading(
    fake: FakeNft, nft: NftPortmap
) -> None:
    a, b = pm_for("a", "10.99.0.5"), pm_for("b", "10.99.0.6", None, PortMapping(None, 9, 9))
    nft.setup(a)
    nft.setup(b)
    nft.teardown(a.key, a)
    assert fake.batches[-1] == ["delete"] * 3  # one write, no list
    assert fake.elements() == 3
    assert nft.check(b) == []


def test_teardown_without_hint_or_with_a_stale_hint_goes_by_label(
    fake: FakeNft, nft: NftPortmap
) -> None:
    a = pm_for("a", "10.99.0.5", "fd00::5")
    nft.setup(a)
    wrong = pm_for("a", "10.99.0.7")  # what the runtime thinks; not what was published
    nft.teardown(a.key, wrong)
    assert fake.elements() == 0
    nft.setup(a)
    nft.teardown(a.key)
    nft.teardown(a.key)  # already gone: success
    assert fake.elements() == 0


def test_gc_keeps_valid_attachments_and_other_networks(
    fake: FakeNft, nft: NftPortmap
) -> None:
    nft.setup(pm_for("a", "10.99.0.5"))
    nft.setup(pm_for("b", "10.99.0.6", None, PortMapping(None, 9, 9)))
    nft.setup(pm_for("c", "10.98.0.6", None, PortMapping(None, 7, 7), network="other"))
    assert nft.gc("net", [("a", "eth0")]) == []
    assert nft.check(pm_for("a", "10.99.0.5")) == []
    assert nft.check(pm_for("c", "10.98.0.6", None, PortMapping(None, 7, 7),
                                    network="other")) == []
    assert fake.elements() == 6
    assert nft.gc("net", []) == []
    hp = [n for n in fake.state["chains"] if n.startswith("hp-")]
    assert len(hp) == 1  # the unused network chain went with its last element


def test_check_reports_a_missing_element_and_a_broken_chain(
    fake: FakeNft, nft: NftPortmap
) -> None:
    a = pm_for("a", "10.99.0.5")
    assert nft.check(a)[0].startswith("nftables: map")  # nothing at all yet
    nft.setup(a)
    fake.state["maps"]["dnat4_port"]["elems"].clear()
    fake.state["chains"]["prerouting"]["rules"].clear()
    problems = nft.check(a)
    assert any("no element tcp . 8080 in map dnat4_port" in p for p in problems)
    assert any("chain prerouting has unexpected rules" in p for p in problems)


def test_an_attachment_without_targets_touches_nothing(
    fake: FakeNft, nft: NftPortmap
) -> None:
    pm = pm_for("a", None, None, PortMapping("fd00::1", 1, 1))
    nft.setup(pm)
    assert fake.batches == []
    assert nft.check(pm) == []


def test_select_follows_the_masquerade_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycni.firewall import driver
    from pycni.firewall.iptables.portmap import IptPortmap

    monkeypatch.setattr(driver, "detect", NoneDriver)
    assert select(None).name == "none"
    assert isinstance(select("iptables").portmap, IptPortmap)
    assert isinstance(select("nftables").portmap, NftPortmap)


# -------------------------------------------------------------------- iptables text


def saved_after(script: str | None, state: ipt.Saved | None = None) -> ipt.Saved:
    """What iptables-save would print after ``iptables-restore --noflush script``."""
    chains = set(state.chains if state else {"PREROUTING", "OUTPUT", "POSTROUTING", "INPUT"})
    lines = list(state.lines if state else ())
    for line in (script or "").splitlines():
        if line.startswith(":"):
            name = line[1:].split()[0]
            chains.add(name)
            lines = [(c, s) for c, s in lines if c != name]
        elif line.startswith("-A "):
            chain, _, spec = line[3:].partition(" ")
            lines.append((chain, spec))
        elif line.startswith("-D "):
            chain, _, spec = line[3:].partition(" ")
            lines.remove((chain, spec))
    return ipt.Saved(chains=frozenset(chains), lines=tuple(lines))


def test_iptables_rules_are_written_as_iptables_save_prints_them() -> None:
    pm = pm_for("a", "10.99.0.5", None, PortMapping(None, 8080, 80),
                PortMapping("10.0.0.1", 53, 5353, "udp"))
    label = pm.key.label
    assert ipt.wanted_rules(pm, 4) == [
        ("PYCNI-HOSTPORTS", f"-p tcp -m tcp --dport 8080 -m comment --comment {label} "
                            "-j DNAT --to-destination 10.99.0.5:80"),
        ("PYCNI-HOSTPORTS", f"-d 10.0.0.1/32 -p udp -m udp --dport 53 -m comment --comment "
                            f"{label} -j DNAT --to-destination 10.99.0.5:5353"),
        ("PYCNI-HOSTPORTS-MASQ", "-s 10.99.0.0/24 -d 10.99.0.5/32 -p tcp -m tcp --dport 80 "
                                 f"-m conntrack --ctstate DNAT -m comment --comment {label} "
                                 "-j MASQUERADE"),
        ("PYCNI-HOSTPORTS-MASQ", "-s 127.0.0.0/8 -d 10.99.0.5/32 -p tcp -m tcp --dport 80 "
                                 f"-m conntrack --ctstate DNAT -m comment --comment {label} "
                                 "-j MASQUERADE"),
        ("PYCNI-HOSTPORTS-MASQ", "-s 10.99.0.0/24 -d 10.99.0.5/32 -p udp -m udp --dport 5353 "
                                 f"-m conntrack --ctstate DNAT -m comment --comment {label} "
                                 "-j MASQUERADE"),
        ("PYCNI-HOSTPORTS-MASQ", "-s 127.0.0.0/8 -d 10.99.0.5/32 -p udp -m udp --dport 5353 "
                                 f"-m conntrack --ctstate DNAT -m comment --comment {label} "
                                 "-j MASQUERADE"),
    ]
    v6 = ipt.wanted_rules(pm_for("a", None, "fd00::5", masq_all=True), 6)
    assert v6[0][1].endswith("--to-destination [fd00::5]:80")
    assert v6[1][1].startswith("-d fd00::5/128 -p tcp")  # masqAll: no source match


def test_iptables_setup_is_one_script_and_idempotent() -> None:
    pm = pm_for("a")
    script = ipt.setup_script(ipt.Saved(), pm, 4)
    assert script is not None
    assert script.startswith("*nat\n:PYCNI-HOSTPORTS - [0:0]\n:PYCNI-HOSTPORTS-MASQ - [0:0]\n")
    assert script.count("-A PREROUTING") == script.count("-A OUTPUT") == 1
    state = saved_after(script)
    assert ipt.setup_script(state, pm, 4) is None
    assert ipt.check_state(state, pm, 4) == []
    # a second attachment neither redeclares (flushes) the chains nor repeats the jumps
    other = ipt.setup_script(state, pm_for("b", "10.99.0.6", None, PortMapping(None, 9, 9)), 4)
    assert other is not None
    assert not other.split("\n")[1].startswith(":")
    assert "-A PREROUTING" not in other


def test_iptables_setup_deletes_a_shadowing_leftover_and_teardown_gc_go_by_label() -> None:
    stale = pm_for("old", "10.99.0.9")
    state = saved_after(ipt.setup_script(ipt.Saved(), stale, 4))
    pm = pm_for("a")
    state = saved_after(ipt.setup_script(state, pm, 4), state)
    dnat = state.rules_of("PYCNI-HOSTPORTS")
    assert len(dnat) == 1
    assert pm.key.label in dnat[0]
    assert ipt.check_state(state, pm, 4) == []
    b = pm_for("b", "10.99.0.6", None, PortMapping(None, 9, 9))
    state = saved_after(ipt.setup_script(state, b, 4), state)
    after_gc = saved_after(ipt.gc_script(state, b.key.network_tag, {b.key.label}), state)
    assert ipt.check_state(after_gc, b, 4) == []
    assert not any(pm.key.label in s for _, s in after_gc.lines)
    gone = saved_after(ipt.teardown_script(after_gc, b.key.label), after_gc)
    assert [c for c, _ in gone.lines] == ["PREROUTING", "OUTPUT", "POSTROUTING"]
    assert ipt.teardown_script(gone, b.key.label) is None


def test_iptables_check_names_what_is_missing() -> None:
    pm = pm_for("a")
    problems = ipt.check_state(ipt.Saved(), pm, 4)
    assert "iptables: chain PYCNI-HOSTPORTS missing" in problems
    assert any(p.startswith("iptables: rule missing: -A PYCNI-HOSTPORTS ") for p in problems)


def test_parse_save_reads_only_the_nat_table() -> None:
    text = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j ACCEPT\nCOMMIT\n*nat\n" \
           ":PREROUTING ACCEPT [0:0]\n-A PREROUTING -m comment --comment \"x\" -j DOCKER\nCOMMIT\n"
    state = ipt.parse_save(text)
    assert state.chains == frozenset({"PREROUTING"})
    assert state.rules_of("PREROUTING") == ['-m comment --comment "x" -j DOCKER']


