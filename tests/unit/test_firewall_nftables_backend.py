"""NftMasquerade's control flow against an in-memory stand-in for nft (no kernel, no root).

The stand-in applies a document all-or-nothing with the kernel's rules that matter here:
``create`` refuses an existing key, ``add`` refuses an existing key with another value and
keeps the old comment when the value is the same, deletes of missing things fail, a chain
something jumps to cannot be deleted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.model import AttachmentKey, Masquerade
from pycni.firewall.nftables import engine as nft_table
from pycni.firewall.nftables import masquerade as nft_masq
from pycni.firewall.nftables.engine import NftError
from pycni.firewall.nftables.masquerade import NftMasquerade

Doc = dict[str, Any]


@dataclass
class _Model:
    table: bool = False
    maps: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)


def _target(value: Any) -> str:
    return str(value["jump"]["target"])


class FakeNft:
    kind = "fake"

    def __init__(self) -> None:
        self.model = _Model()
        self.calls: list[list[Doc]] = []

    # -------- applying one command to a scratch copy
    def _need(self, ok: bool, what: str) -> None:
        if not ok:
            raise NftError(what)

    def _element(self, m: _Model, verb: str, body: Doc) -> None:
        self._need(body["name"] in m.maps, "No such file or directory (map)")
        entries = m.maps[body["name"]]
        for item in body["elem"]:
            if verb == "delete":
                self._need(item in entries, "No such file or directory (element)")
                del entries[item]
                continue
            raw, value = item
            key, comment = raw, None
            if isinstance(raw, dict):
                key, comment = raw["elem"]["val"], raw["elem"]["comment"]
            self._need(_target(value) in m.chains, "No such file or directory (chain)")
            if key in entries:
                self._need(verb == "add" and entries[key][1] == _target(value), "File exists")
                continue
            entries[key] = (comment, _target(value))

    def _chain(self, m: _Model, verb: str, body: Doc) -> None:
        name = body["name"]
        if verb == "create":
            self._need(name not in m.chains, "File exists (chain)")
            verb = "add"
        if verb == "add":
            m.chains.setdefault(name, {"head": body, "rules": []})
            return
        self._need(name in m.chains, "No such file or directory (chain)")
        if verb == "flush":
            m.chains[name]["rules"] = []
        else:
            used = any(t == name for entries in m.maps.values() for _, t in entries.values())
            self._need(not used, "Device or resource busy")
            del m.chains[name]

    def _apply(self, m: _Model, cmd: Doc) -> Doc | None:
        (verb, body), = cmd.items()
        if verb == "list":
            return self._list(m, body)
        (kind, obj), = body.items()
        if kind == "table":
            m.table = True
            return None
        self._need(m.table, "No such file or directory (table)")
        if kind == "map":
            self._need(verb != "create" or obj["name"] not in m.maps, "File exists (map)")
            m.maps.setdefault(obj["name"], {})
        elif kind == "chain":
            self._chain(m, verb, obj)
        elif kind == "rule":
            self._need(obj["chain"] in m.chains, "No such file or directory (chain)")
            m.chains[obj["chain"]]["rules"].append(obj["expr"])
        elif kind == "element":
            self._element(m, verb, obj)
        return None

    def _list(self, m: _Model, body: Doc) -> Doc:
        if "tables" in body:
            return {"nftables": [{"table": {"family": "inet", "name": "pycni"}}] if m.table else []}
        self._need(m.table, "No such file or directory (table)")
        where = {"family": "inet", "table": "pycni"}
        out: list[Doc] = [{"map": {**where, "name": name, "elem": [
            [{"elem": {"val": k, "comment": c}} if c else k, {"jump": {"target": t}}]
            for k, (c, t) in entries.items()]}} for name, entries in m.maps.items()]
        for name, chain in m.chains.items():
            head = {k: v for k, v in chain["head"].items() if k in ("type", "hook", "prio")}
            out.append({"chain": {**where, "name": name, **head}})
            out += [{"rule": {**where, "chain": name, "expr": e}} for e in chain["rules"]]
        return {"nftables": out}

    # -------- the runner protocol
    def run(self, commands: list[Doc]) -> Doc:
        self.calls.append(commands)
        scratch = copy.deepcopy(self.model)
        out: Doc = {"nftables": []}
        for cmd in commands:
            out = self._apply(scratch, cmd) or out
        self.model = scratch
        return out

    def writes(self) -> list[list[Doc]]:
        return [c for c in self.calls if "list" not in c[0]]


def masq(cid: str, *sources: str, network: str = "pycni") -> Masquerade:
    return Masquerade(key=AttachmentKey(network, cid, "eth0"),
                      network_subnets=("10.88.0.0/16", "fd00::/64"), sources=sources)


@pytest.fixture
def fake() -> FakeNft:
    return FakeNft()


@pytest.fixture
def backend(fake: FakeNft) -> NftMasquerade:
    return NftMasquerade(runner=fake)


def elements(fake: FakeNft) -> dict[str, tuple[str | None, str]]:
    return {k: v for entries in fake.model.maps.values() for k, v in entries.items()}


def test_first_setup_builds_layout_after_the_insert_fails(
        fake: FakeNft, backend: NftMasquerade) -> None:
    m = masq("c1", "10.88.0.2", "fd00::2")
    backend.setup(m)
    # insert refused (no table yet), then the layout made from nothing: additions only
    assert len(fake.calls) == 2
    verbs = {next(iter(c)) for c in fake.calls[1]}
    assert "create" in verbs
    assert not {"flush", "delete"} & verbs
    assert elements(fake) == {"10.88.0.2": (m.key.label, nft_masq.chain_name(m)),
                              "fd00::2": (m.key.label, nft_masq.chain_name(m))}
    assert backend.check(m) == []


def test_a_new_network_in_the_table_is_the_rewrite(
        fake: FakeNft, backend: NftMasquerade) -> None:
    backend.setup(masq("c1", "10.88.0.2"))
    fake.calls.clear()
    m = masq("c2", "10.88.0.3", network="other")
    backend.setup(m)
    # insert refused (no chain of that network), made from nothing refused (the maps and
    # the base chain exist), then the rewrite
    assert len(fake.calls) == 3
    assert fake.calls[2] == nft_masq.setup_blind(m)
    assert backend.check(m) == []


def test_next_container_is_a_single_insert(fake: FakeNft, backend: NftMasquerade) -> None:
    backend.setup(masq("c1", "10.88.0.2"))
    fake.calls.clear()
    backend.setup(masq("c2", "10.88.0.3"))
    assert fake.calls == [nft_masq.create_elements(masq("c2", "10.88.0.3"))]


def test_repeated_setup_adds_nothing(fake: FakeNft, backend: NftMasquerade) -> None:
    m = masq("c1", "10.88.0.2")
    backend.setup(m)
    before = copy.deepcopy(fake.model)
    backend.setup(m)
    backend.setup(m)
    assert fake.model == before


def test_setup_takes_over_a_leftover_with_the_same_chain(
        fake: FakeNft, backend: NftMasquerade) -> None:
    backend.setup(masq("crashed", "10.88.0.2"))  # never DELeted
    m = masq("c2", "10.88.0.2")
    backend.setup(m)
    assert elements(fake)["10.88.0.2"][0] == m.key.label
    assert backend.check(m) == []


def test_setup_takes_over_a_leftover_of_another_network(
        fake: FakeNft, backend: NftMasquerade) -> None:
    backend.setup(masq("old", "10.88.0.2", network="other"))
    fake.calls.clear()
    m = masq("c2", "10.88.0.2")
    backend.setup(m)
    # insert, from nothing (refused: the table exists), blind replace (refused: another
    # value), read, informed replace
    assert len(fake.calls) == 5
    assert elements(fake)["10.88.0.2"] == (m.key.label, nft_masq.chain_name(m))


def test_teardown_by_key_needs_no_addresses(fake: FakeNft, backend: NftMasquerade) -> None:
    backend.setup(masq("c1", "10.88.0.2", "fd00::2"))
    backend.setup(masq("c2", "10.88.0.3"))
    backend.teardown(AttachmentKey("pycni", "c1", "eth0"))
    assert set(elements(fake)) == {"10.88.0.3"}
    fake.calls.clear()
    backend.teardown(AttachmentKey("pycni", "c1", "eth0"))
    assert fake.writes() == []  # already gone: success without writing


def test_teardown_reads_the_maps_not_the_chains_and_rules(
        fake: FakeNft, backend: NftMasquerade) -> None:
    """A teardown goes by the elements' labels: the table's chains and rules (one set per
    network) are not listed, and neither is anything in another table."""
    backend.setup(masq("c1", "10.88.0.2"))
    fake.calls.clear()
    backend.teardown(AttachmentKey("pycni", "c1", "eth0"))
    reads = [c for c in fake.calls if "list" in c[0]]
    assert reads == [[{"list": {"maps": {"family": "inet", "table": "pycni"}}}]]


def test_teardown_without_a_table_is_success(fake: FakeNft, backend: NftMasquerade) -> None:
    backend.teardown(AttachmentKey("pycni", "c1", "eth0"))
    assert fake.writes() == []
    assert not fake.model.table


def test_gc_keeps_valid_attachments_and_other_networks(
        fake: FakeNft, backend: NftMasquerade) -> None:
    for cid, ip in (("a", "10.88.0.2"), ("b", "10.88.0.3"), ("c", "10.88.0.4")):
        backend.setup(masq(cid, ip))
    backend.setup(masq("x", "10.99.0.2", network="other"))
    assert backend.gc("pycni", [("a", "eth0"), ("c", "eth1")]) == []
    assert set(elements(fake)) == {"10.88.0.2", "10.99.0.2"}
    assert backend.gc("pycni", []) == []
    assert set(elements(fake)) == {"10.99.0.2"}
    prefix = f"masq-{masq('a').key.network_tag}"
    assert not any(name.startswith(prefix) for name in fake.model.chains)


def test_check_reports_a_missing_element(fake: FakeNft, backend: NftMasquerade) -> None:
    m = masq("c1", "10.88.0.2")
    backend.setup(m)
    del fake.model.maps["masq4"]["10.88.0.2"]
    assert backend.check(m) == [
        "nftables: no masquerade element for 10.88.0.2 in map masq4"]


def test_no_sources_means_no_calls(fake: FakeNft, backend: NftMasquerade) -> None:
    backend.setup(masq("c1"))
    assert backend.check(masq("c1")) == []
    assert fake.calls == []


def test_errors_become_cni_errors(fake: FakeNft, backend: NftMasquerade) -> None:
    def refuse(commands: list[Doc]) -> Doc:
        raise NftError("Operation not permitted")

    fake.run = refuse  # type: ignore[method-assign]
    with pytest.raises(CNIError) as info:
        backend.setup(masq("c1", "10.88.0.2"))
    assert info.value.code == ErrorCode.INTERNAL
    assert "Operation not permitted" in str(info.value)
    assert backend.gc("pycni", [])[0].startswith("nftables masquerade GC")
    assert backend.status() == "nftables command failed: Operation not permitted"


def test_unavailable_nftables(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise OSError("libnftables.so.1: cannot open shared object file; nft not found")

    monkeypatch.setattr(nft_table, "default_runner", missing)
    backend = NftMasquerade()
    assert "libnftables.so.1" in (backend.status() or "")
    with pytest.raises(CNIError):
        backend.teardown(AttachmentKey("pycni", "c1", "eth0"))


def test_a_listing_that_keeps_failing_on_an_existing_table_is_an_error(
        fake: FakeNft, backend: NftMasquerade) -> None:
    backend.setup(masq("c1", "10.88.0.2"))
    real_run = fake.run

    def read_of_the_table(commands: list[Doc]) -> bool:
        what = commands[0].get("list", {})
        return bool(what) and "tables" not in what  # not the question whether it exists

    def listing_refused(commands: list[Doc]) -> Doc:
        if read_of_the_table(commands):
            fake.calls.append(commands)
            raise NftError("Operation not permitted")
        return real_run(commands)

    fake.run = listing_refused  # type: ignore[method-assign]
    fake.calls.clear()
    with pytest.raises(CNIError, match="Operation not permitted"):
        backend.teardown(AttachmentKey("pycni", "c1", "eth0"))
    listings = [c for c in fake.calls if read_of_the_table(c)]
    assert len(listings) == nft_table.ATTEMPTS  # asked again, but not forever
