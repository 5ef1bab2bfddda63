"""The nftables backend against the kernel, always inside a throwaway "host" namespace.

nftables state is per network namespace, so entering ``host_ns`` before every backend call
keeps the root namespace untouched. The oracle is ``nft -j list ruleset`` run in the same
namespace, independent of the library the backend uses.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from pycni.firewall.model import AttachmentKey, Masquerade
from pycni.firewall.nftables import engine
from pycni.firewall.nftables import masquerade as nft_masq
from pycni.firewall.nftables.engine import ExecRunner, LibRunner, NftRunner
from pycni.firewall.nftables.forward import NftForward
from pycni.firewall.nftables.masquerade import NftMasquerade
from pycni.net import netns
from tests.support import netfilter_sockets

SUBNETS = ("10.88.0.0/16", "fd00:88::/64")


def masq(cid: str, *sources: str, network: str = "pycni",
         subnets: tuple[str, ...] = SUBNETS) -> Masquerade:
    return Masquerade(key=AttachmentKey(network, cid, "eth0"), network_subnets=subnets,
                      sources=sources)


def ruleset(ns: str) -> list[dict[str, Any]]:
    with netns.enter(ns):
        out = subprocess.run(["nft", "-j", "list", "ruleset"], check=True, capture_output=True)
    return [o for o in json.loads(out.stdout)["nftables"] if "metainfo" not in o]


def elements(ns: str) -> dict[str, tuple[str | None, str]]:
    """address -> (comment, jump target) of every element of pycni's masquerade maps."""
    found: dict[str, tuple[str | None, str]] = {}
    for obj in ruleset(ns):
        body = obj.get("map", {})
        if body.get("table") != "pycni" or body.get("name") not in ("masq4", "masq6"):
            continue
        for key, value in body.get("elem", []):
            addr, comment = (key["elem"]["val"], key["elem"].get("comment")) \
                if isinstance(key, dict) else (key, None)
            assert addr not in found, f"duplicate element {addr}"
            found[addr] = (comment, value["jump"]["target"])
    return found


def rule_count(ns: str) -> int:
    return sum(1 for obj in ruleset(ns) if "rule" in obj)


@pytest.fixture(params=["libnftables", "nft"])
def runner(request: pytest.FixtureRequest) -> NftRunner:
    return LibRunner() if request.param == "libnftables" else ExecRunner()


@pytest.fixture
def in_host(host_ns: str, runner: NftRunner) -> Callable[..., Any]:
    """``in_host(method, *args)``: call a backend method inside the sandbox host netns."""
    backend = NftMasquerade(runner=runner)

    def call(method: str, *args: Any) -> Any:
        with netns.enter(host_ns):
            return getattr(backend, method)(*args)

    return call


def test_setup_adds_one_element_per_address(host_ns: str, in_host: Callable[..., Any]) -> None:
    m = masq("c1", "10.88.0.2", "fd00:88::2")
    in_host("setup", m)
    chain = nft_masq.chain_name(m)
    assert elements(host_ns) == {"10.88.0.2": (m.key.label, chain),
                                 "fd00:88::2": (m.key.label, chain)}
    assert in_host("check", m) == []
    assert in_host("status") is None


def test_repeated_setup_does_not_duplicate(host_ns: str, in_host: Callable[..., Any]) -> None:
    m = masq("c1", "10.88.0.2")
    in_host("setup", m)
    before = ruleset(host_ns)
    in_host("setup", m)
    in_host("setup", m)
    after = ruleset(host_ns)
    assert len(elements(host_ns)) == 1
    assert rule_count(host_ns) == sum(1 for o in before if "rule" in o)
    assert [o for o in after if "rule" not in o] == [o for o in before if "rule" not in o]


def test_rules_do_not_grow_with_containers(host_ns: str, in_host: Callable[..., Any]) -> None:
    in_host("setup", masq("c0", "10.88.1.0"))
    rules = rule_count(host_ns)
    for i in range(1, 40):
        in_host("setup", masq(f"c{i}", f"10.88.1.{i}"))
    assert rule_count(host_ns) == rules
    assert len(elements(host_ns)) == 40


def test_teardown_by_key_without_addresses(host_ns: str, in_host: Callable[..., Any]) -> None:
    in_host("setup", masq("c1", "10.88.0.2", "fd00:88::2"))
    in_host("setup", masq("c2", "10.88.0.3"))
    in_host("teardown", AttachmentKey("pycni", "c1", "eth0"))
    assert set(elements(host_ns)) == {"10.88.0.3"}
    in_host("teardown", AttachmentKey("pycni", "c1", "eth0"))  # already gone
    assert set(elements(host_ns)) == {"10.88.0.3"}


def test_teardown_and_gc_on_a_pristine_namespace(host_ns: str, in_host: Callable[..., Any]) -> None:
    in_host("teardown", AttachmentKey("pycni", "c1", "eth0"))
    assert in_host("gc", "pycni", []) == []
    assert ruleset(host_ns) == []  # nothing created by a DEL/GC that had nothing to do


class _TableAppearsAfterTheRead:
    """Right after the backend's first read of pycni's table (there is none yet: the read
    fails, or finds nothing), another plugin's ADD creates it, as a concurrent ADD did in
    the soak test."""

    def __init__(self, runner: NftRunner, concurrent_add: Callable[[], None]) -> None:
        self._runner, self._concurrent_add = runner, concurrent_add
        self.kind, self.raced = runner.kind, False

    def run(self, commands: list[dict[str, Any]]) -> dict[str, Any]:
        what = commands[0].get("list", {})
        try:
            return self._runner.run(commands)
        finally:
            if not self.raced and what and "tables" not in what:  # a read of the table
                self.raced = True
                self._concurrent_add()


def test_teardown_of_nothing_while_an_add_creates_the_table(
        host_ns: str, runner: NftRunner) -> None:
    other = masq("c2", "10.88.0.3")
    racing = _TableAppearsAfterTheRead(
        runner, lambda: NftMasquerade(runner=runner).setup(other))
    with netns.enter(host_ns):
        NftMasquerade(runner=racing).teardown(AttachmentKey("pycni", "c1", "eth0"))
    assert racing.raced
    assert elements(host_ns) == {"10.88.0.3": (other.key.label, nft_masq.chain_name(other))}


def test_a_teardown_reads_and_deletes_in_pycnis_table_only(
        host_ns: str, in_host: Callable[..., Any]) -> None:
    """Listing the maps lists every inet table's (nftables 1.0.6 ignores the table asked
    for): a map of another program's that has our map's name and an element with our label
    is not ours to read, nor to delete from."""
    m = masq("c1", "10.88.0.2")
    in_host("setup", m)
    with netns.enter(host_ns):
        subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
            "table inet other {\n map masq4 { type ipv4_addr : verdict; }\n}\n"
            f'add element inet other masq4 {{ 10.77.0.9 comment "{m.key.label}" : accept }}\n'))
    in_host("teardown", m.key)
    assert elements(host_ns) == {}
    with netns.enter(host_ns):
        other = subprocess.run(["nft", "list", "map", "inet", "other", "masq4"], check=True,
                               capture_output=True, text=True).stdout
        subprocess.run(["nft", "delete", "table", "inet", "other"], check=True)
    assert "10.77.0.9" in other


def test_gc_keeps_valid_and_drops_others(host_ns: str, in_host: Callable[..., Any]) -> None:
    for cid, ip in (("a", "10.88.0.2"), ("b", "10.88.0.3"), ("c", "fd00:88::4")):
        in_host("setup", masq(cid, ip))
    in_host("setup", masq("x", "10.99.0.2", network="other", subnets=("10.99.0.0/16",)))
    assert in_host("gc", "pycni", [("a", "eth0"), ("c", "eth0"), ("zz", "eth0")]) == []
    assert set(elements(host_ns)) == {"10.88.0.2", "fd00:88::4", "10.99.0.2"}
    assert in_host("gc", "pycni", []) == []
    assert set(elements(host_ns)) == {"10.99.0.2"}
    chains = {o["chain"]["name"] for o in ruleset(host_ns) if "chain" in o}
    assert chains == {"masq-postrouting", nft_masq.chain_name(masq("x", network="other",
                                                                    subnets=("10.99.0.0/16",)))}


def test_check_reports_a_missing_element(host_ns: str, in_host: Callable[..., Any]) -> None:
    m = masq("c1", "10.88.0.2")
    in_host("setup", m)
    with netns.enter(host_ns):
        subprocess.run(["nft", "delete", "element", "inet", "pycni", "masq4", "{ 10.88.0.2 }"],
                       check=True)
    assert in_host("check", m) == [
        "nftables: no masquerade element for 10.88.0.2 in map masq4"]
    in_host("setup", m)  # ADD again repairs it
    assert in_host("check", m) == []


def test_setup_takes_over_an_address_left_by_another_network(
        host_ns: str, in_host: Callable[..., Any]) -> None:
    in_host("setup", masq("old", "10.88.0.2", network="other"))
    m = masq("new", "10.88.0.2")
    in_host("setup", m)
    assert elements(host_ns) == {"10.88.0.2": (m.key.label, nft_masq.chain_name(m))}


def test_concurrent_setups_all_land(host_ns: str) -> None:
    def worker(n: int) -> None:
        backend = NftMasquerade()
        with netns.enter(host_ns):
            for i in range(10):
                backend.setup(masq(f"w{n}-{i}", f"10.88.{n}.{i + 2}"))

    pids = []
    for n in range(6):
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                worker(n)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert [os.waitpid(pid, 0)[1] for pid in pids] == [0] * 6
    assert len(elements(host_ns)) == 60


def _nft(ns: str, script: str) -> None:
    with netns.enter(ns):
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)


class _ChainGoesAwayAfterTheListing:
    """After the first ``list chains``, the host's firewall deletes its table (as firewalld's
    reload does) before the backend lists the rules of the dropping chain it found."""

    def __init__(self, runner: NftRunner, ns: str) -> None:
        self._runner, self._ns = runner, ns
        self.kind, self.raced = runner.kind, False

    def run(self, commands: list[dict[str, Any]]) -> dict[str, Any]:
        out = self._runner.run(commands)
        if not self.raced and commands[0].get("list", {}).get("chains", 0) is None:
            self.raced = True
            _nft(self._ns, "delete table inet hostfw\n")
        return out


def test_foreign_chains_when_a_listed_chain_goes_away(host_ns: str, runner: NftRunner) -> None:
    _nft(host_ns, "add table inet hostfw\n"
                  "add chain inet hostfw forward { type filter hook forward priority 0; "
                  "policy drop; }\n")
    racing = _ChainGoesAwayAfterTheListing(runner, host_ns)
    with netns.enter(host_ns):
        assert NftForward(runner=racing).foreign_chains() == []
    assert racing.raced


def test_held_contexts_keep_their_sockets_until_released(host_ns: str) -> None:
    """A caller that reports before it exits holds its contexts: their sockets (whose release
    after a deletion waits for a grace period) stay open until it lets them go."""
    backend = NftMasquerade(runner=LibRunner())
    m = masq("held", "10.88.0.9")
    engine.hold_contexts()
    try:
        with netns.enter(host_ns):
            backend.setup(m)
            backend.teardown(m.key)
        assert elements(host_ns) == {}  # the batches were applied all the same
        held = netfilter_sockets(host_ns)
    finally:
        engine.release_held_contexts()
    assert held >= 2  # at least the deletion's and the read before it
    assert netfilter_sockets(host_ns) == 0
    with netns.enter(host_ns):
        backend.setup(m)  # not holding any more: freed at once
    assert netfilter_sockets(host_ns) == 0


def test_held_contexts_are_bounded(host_ns: str) -> None:
    """A worker that runs many nft batches (a teardown of hundreds of containers) frees the
    oldest held contexts as it goes: never more than ``HELD_MAX`` descriptors."""
    runner = LibRunner()
    engine.hold_contexts()
    try:
        with netns.enter(host_ns):
            for _ in range(engine.HELD_MAX + 8):
                runner.run([{"list": {"tables": None}}])
        held = netfilter_sockets(host_ns)
    finally:
        engine.release_held_contexts()
    assert held == engine.HELD_MAX
    assert netfilter_sockets(host_ns) == 0


def _without_handles(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{kind: {k: v for k, v in body.items() if k != "handle"}}
            for obj in objs for kind, body in obj.items()]


def test_the_first_write_on_a_fresh_host_makes_what_the_rewrite_makes(
    make_netns: Callable[..., str], runner: NftRunner
) -> None:
    """On a fresh host the layout is made from nothing, additions only (no flush, no
    replaced element: nothing queued for destruction), and it is exactly what the rewrite
    makes; on a table that exists that write fails whole and changes nothing."""
    m = masq("c1", "10.88.0.2", "fd00:88::2")
    fresh, rewritten = make_netns("fresh"), make_netns("rewritten")
    table = engine.NftTable(runner=runner)
    with netns.enter(fresh):
        table.run(nft_masq.setup_fresh(m))
    with netns.enter(rewritten):
        table.run(nft_masq.setup_blind(m))
    assert _without_handles(ruleset(fresh)) == _without_handles(ruleset(rewritten))
    assert elements(fresh) == {"10.88.0.2": (m.key.label, nft_masq.chain_name(m)),
                               "fd00:88::2": (m.key.label, nft_masq.chain_name(m))}
    before = ruleset(fresh)
    with netns.enter(fresh), pytest.raises(engine.NftError):
        table.run(nft_masq.setup_fresh(masq("c2", "10.88.0.3")))
    assert ruleset(fresh) == before
