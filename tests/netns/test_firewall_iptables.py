"""The iptables fallback against the kernel (iptables-nft on Debian), only inside ``host_ns``.

The oracle is ``iptables-save``/``ip6tables-save`` run in the same throwaway namespace.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pycni.firewall.iptables import masquerade as ipt
from pycni.firewall.iptables.masquerade import IptMasquerade
from pycni.firewall.model import AttachmentKey, Masquerade
from pycni.net import netns

SUBNETS = ("10.88.0.0/16", "fd00:88::/64")


def masq(cid: str, *sources: str, network: str = "pycni") -> Masquerade:
    return Masquerade(key=AttachmentKey(network, cid, "eth0"), network_subnets=SUBNETS,
                      sources=sources)


def saved(ns: str, version: int = 4) -> ipt.SaveState:
    tool = "iptables-save" if version == 4 else "ip6tables-save"
    with netns.enter(ns):
        out = subprocess.run([tool, "-t", "nat"], check=True, capture_output=True, text=True)
    return ipt.parse_save(out.stdout)


def sources(ns: str, version: int = 4) -> list[tuple[str | None, str | None]]:
    """(source, label) of every rule in PYCNI-POSTROUTING, in order."""
    return [(r.source, r.comment) for r in saved(ns, version).rules_of(ipt.TOP_CHAIN)]


@pytest.fixture
def in_host(host_ns: str, tmp_path: Path) -> Callable[..., Any]:
    backend = IptMasquerade(lock_path=str(tmp_path / "iptables.lock"))

    def call(method: str, *args: Any) -> Any:
        with netns.enter(host_ns):
            return getattr(backend, method)(*args)

    return call


def test_setup_adds_one_rule_per_address(host_ns: str, in_host: Callable[..., Any]) -> None:
    m = masq("c1", "10.88.0.2", "fd00:88::2")
    in_host("setup", m)
    assert sources(host_ns, 4) == [("10.88.0.2/32", m.key.label)]
    assert sources(host_ns, 6) == [("fd00:88::2/128", m.key.label)]
    assert in_host("check", m) == []
    assert in_host("status") is None


def test_repeated_setup_does_not_duplicate(host_ns: str, in_host: Callable[..., Any]) -> None:
    m = masq("c1", "10.88.0.2")
    in_host("setup", m)
    before = saved(host_ns)
    in_host("setup", m)
    in_host("setup", m)
    assert saved(host_ns) == before


def test_second_container_keeps_the_first(host_ns: str, in_host: Callable[..., Any]) -> None:
    first, second = masq("c1", "10.88.0.2"), masq("c2", "10.88.0.3")
    in_host("setup", first)
    in_host("setup", second)
    assert sources(host_ns) == [("10.88.0.2/32", first.key.label),
                                ("10.88.0.3/32", second.key.label)]
    assert in_host("check", first) == []


def test_teardown_by_key_without_addresses(host_ns: str, in_host: Callable[..., Any]) -> None:
    in_host("setup", masq("c1", "10.88.0.2", "fd00:88::2"))
    in_host("setup", masq("c2", "10.88.0.3"))
    in_host("teardown", AttachmentKey("pycni", "c1", "eth0"))
    assert [s for s, _ in sources(host_ns, 4)] == ["10.88.0.3/32"]
    assert sources(host_ns, 6) == []
    in_host("teardown", AttachmentKey("pycni", "c1", "eth0"))  # already gone


def test_gc_keeps_valid_and_drops_others(host_ns: str, in_host: Callable[..., Any]) -> None:
    for cid, ip in (("a", "10.88.0.2"), ("b", "10.88.0.3"), ("c", "10.88.0.4")):
        in_host("setup", masq(cid, ip))
    in_host("setup", masq("x", "10.99.0.2", network="other"))
    assert in_host("gc", "pycni", [("a", "eth0"), ("c", "eth0")]) == []
    assert [s for s, _ in sources(host_ns)] == ["10.88.0.2/32", "10.88.0.4/32", "10.99.0.2/32"]
    assert in_host("gc", "pycni", []) == []
    state = saved(host_ns)
    assert [s for s, _ in sources(host_ns)] == ["10.99.0.2/32"]
    assert ipt.network_chain(masq("a")) not in state.chains
    assert ipt.network_chain(masq("x", network="other")) in state.chains


def test_check_reports_a_missing_rule(host_ns: str, in_host: Callable[..., Any]) -> None:
    m = masq("c1", "10.88.0.2")
    in_host("setup", m)
    rule = saved(host_ns).rules_of(ipt.TOP_CHAIN)[0]
    with netns.enter(host_ns):
        subprocess.run(["iptables-restore", "--noflush"], text=True, check=True,
                       input=f"*nat\n{rule.delete_line}\nCOMMIT\n")
    assert in_host("check", m) == [
        "iptables: 0 masquerade rules for 10.88.0.2, expected 1"]
    in_host("setup", m)
    assert in_host("check", m) == []


def test_concurrent_setups_all_land(host_ns: str, tmp_path: Path) -> None:
    # Without the lock, two restores declaring the shared chain would flush each other's rules.
    lock = str(tmp_path / "iptables.lock")
    pids = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                backend = IptMasquerade(lock_path=lock)
                with netns.enter(host_ns):
                    for i in range(5):
                        backend.setup(masq(f"w{n}-{i}", f"10.88.{n}.{i + 2}"))
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert [os.waitpid(pid, 0)[1] for pid in pids] == [0] * 4
    assert len(sources(host_ns)) == 20
