"""Forward acceptance and network isolation on iptables (the fallback driver): layout, restore
scripts and checker (pure text), and the facet.

The same decision as the nftables layout (``model.Forward``), in the filter table, per IP
version. The accepts live in ``FORWARD`` itself, where iptables' policy DROP is applied, so
they win over it; the jump is inserted at position 1, as the reference firewall plugin does::

    -A FORWARD -m comment --comment pycni-forward -j PYCNI-FORWARD      # inserted at the top
    -A PYCNI-FORWARD -j MARK --set-xmark 0x0/0x100000                   # static
    -A PYCNI-FORWARD -j PYCNI-FWD-SRC
    -A PYCNI-FORWARD -j PYCNI-FWD-DST
    -A PYCNI-FORWARD -m mark --mark 0x100000/0x100000 -j ACCEPT
    -A PYCNI-FWD-SRC -s 10.99.0.2/32 -m comment --comment <label> -j PYCNI-F-<net>-<chain>
    -A PYCNI-FWD-DST -d 10.99.0.2/32 -m comment --comment <label> -j PYCNI-F-<net>-<chain>
    -A PYCNI-F-<net>-<chain> -s 10.99.0.0/24 -d 10.99.0.0/24 -j ACCEPT
    -A PYCNI-F-<net>-<chain> -d 10.99.0.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    -A PYCNI-F-<net>-<chain> -d 10.99.0.0/24 -m conntrack --ctstate DNAT -j ACCEPT
    -A PYCNI-F-<net>-<chain> -d 10.99.0.0/24 -m mark --mark 0x100000/0x100000 -j DROP
    -A PYCNI-F-<net>-<chain> -s 10.99.0.0/24 -j MARK --set-xmark 0x100000/0x100000
    (internal: the first rule, then -s 10.99.0.0/24 -j DROP and -d 10.99.0.0/24 -j DROP)

Two rules per container address (iptables has no sets without ipset), tagged with the
attachment label. One ``iptables-save -t filter`` and at most one ``iptables-restore
--noflush`` per IP version and call, under the same lock as masquerade.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Final

from pycni.cni.errors import CNIError
from pycni.firewall.iptables import engine
from pycni.firewall.iptables.engine import (
    FIREWALL_LOCK,
    Rule,
    SaveState,
    gc_lines,
    host,
    script,
)
from pycni.firewall.iptables.feature import TextLayout, XtablesFacet, address_versions
from pycni.firewall.model.forward import FORWARD_MARK, HOLE_COMMENT, Forward

__all__ = [
    "DST_CHAIN",
    "SRC_CHAIN",
    "TOP_CHAIN",
    "FilterState",
    "IptForward",
    "check_state",
    "gc_script",
    "network_chain",
    "network_lines",
    "parse_filter",
    "setup_script",
    "teardown_script",
]

TOP_CHAIN: Final = "PYCNI-FORWARD"
SRC_CHAIN: Final = "PYCNI-FWD-SRC"
DST_CHAIN: Final = "PYCNI-FWD-DST"
_PREFIX: Final = "PYCNI-F-"
_MARK: Final = f"{FORWARD_MARK:#x}/{FORWARD_MARK:#x}"

FilterState = SaveState  # the filter table of ``iptables-save -t filter``


def network_chain(f: Forward) -> str:
    """28 characters, iptables' limit."""
    return f"{_PREFIX}{f.key.network_tag[:10]}-{f.chain_tag[:9]}"


def parse_filter(text: str) -> FilterState:
    return engine.parse_save(text, "filter")


# ------------------------------------------------------------------------------- builders


def _top_lines() -> list[str]:
    return [f"-A {TOP_CHAIN} -j MARK --set-xmark 0x0/{FORWARD_MARK:#x}",
            f"-A {TOP_CHAIN} -j {SRC_CHAIN}", f"-A {TOP_CHAIN} -j {DST_CHAIN}",
            f"-A {TOP_CHAIN} -m mark --mark {_MARK} -j ACCEPT"]


def network_lines(f: Forward, version: int) -> list[str]:
    chain, subnets = network_chain(f), f.subnets_of(version)
    ingress = "DROP" if f.isolated else "ACCEPT"
    lines = [f"-A {chain} -s {s} -d {d} -j ACCEPT" for s in subnets for d in subnets]
    if f.internal:  # nothing else in or out
        return lines + [f"-A {chain} {way} {s} -j DROP" for way in ("-s", "-d") for s in subnets]
    for d in subnets:
        lines += [f"-A {chain} -d {d} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                  f"-A {chain} -d {d} -m conntrack --ctstate DNAT -j ACCEPT",
                  f"-A {chain} -d {d} -m mark --mark {_MARK} -j {ingress}"]
    lines += [f"-A {chain} -s {s} -j MARK --set-xmark {_MARK}" for s in subnets]
    return lines


def _address_lines(f: Forward, version: int) -> list[str]:
    chain, label = network_chain(f), f.key.label
    return [line for ip in f.sources_of(version) for line in (
        f"-A {SRC_CHAIN} -s {host(ip)} -m comment --comment {label} -j {chain}",
        f"-A {DST_CHAIN} -d {host(ip)} -m comment --comment {label} -j {chain}")]


def _script(declare: Iterable[str], lines: Iterable[str]) -> str | None:
    return script("filter", declare, lines)


def _jumped(state: FilterState) -> bool:
    return any(r.target == TOP_CHAIN for r in state.rules_of("FORWARD"))


def _infrastructure(state: FilterState, f: Forward, version: int) -> tuple[list[str], list[str]]:
    declare: list[str] = []
    lines: list[str] = []
    if state.lines_of(TOP_CHAIN) != _top_lines() or TOP_CHAIN not in state.chains:
        declare.append(TOP_CHAIN)  # creates, or flushes for the rewrite
        lines += _top_lines()
    declare += [c for c in (SRC_CHAIN, DST_CHAIN) if c not in state.chains]
    if not _jumped(state):
        lines.append(f"-I FORWARD 1 -m comment --comment {HOLE_COMMENT} -j {TOP_CHAIN}")
    chain, want = network_chain(f), network_lines(f, version)
    if chain not in state.chains or state.lines_of(chain) != want:
        declare.append(chain)
        lines += want
    return declare, lines


def setup_script(state: FilterState, f: Forward, version: int) -> str | None:
    """What makes ``state`` hold ``f`` for one IP version; None if it already does."""
    declare, lines = _infrastructure(state, f, version)
    wanted = _address_lines(f, version)
    hosts = {host(ip) for ip in f.sources_of(version)}
    # Any rule for one of our addresses that is not exactly ours goes (a crashed leftover).
    for rule in state.rules_of(SRC_CHAIN) + state.rules_of(DST_CHAIN):
        if rule.line not in wanted and any(f" {h} " in rule.line for h in hosts):
            lines.append(rule.delete_line)
    have = set(state.lines_of(SRC_CHAIN) + state.lines_of(DST_CHAIN))
    lines += [line for line in wanted if line not in have]
    return _script(declare, lines)


def _address_rules(state: FilterState) -> list[Rule]:
    return state.rules_of(SRC_CHAIN) + state.rules_of(DST_CHAIN)


def teardown_script(state: FilterState, label: str) -> str | None:
    return _script((), (r.delete_line for r in _address_rules(state) if r.comment == label))


def gc_script(state: FilterState, net_tag: str, keep: Collection[str]) -> str | None:
    return _script((), gc_lines(_address_rules(state), state.chains, network_tag=net_tag,
                                keep=keep, chain_prefix=f"{_PREFIX}{net_tag[:10]}-"))


def check_state(state: FilterState, f: Forward, version: int) -> list[str]:
    tool = engine.tool_name(version)
    problems = []
    if not _jumped(state):
        problems.append(f"{tool}: FORWARD does not jump to {TOP_CHAIN}")
    if state.lines_of(TOP_CHAIN) != _top_lines():
        problems.append(f"{tool}: chain {TOP_CHAIN} missing or altered")
    if state.lines_of(network_chain(f)) != network_lines(f, version):
        problems.append(f"{tool}: chain {network_chain(f)} missing or altered")
    have = set(state.lines_of(SRC_CHAIN) + state.lines_of(DST_CHAIN))
    problems += [f"{tool}: missing rule {line}" for line in _address_lines(f, version)
                 if line not in have]
    return problems


# ------------------------------------------------------------------------------ the facet


_TEXT: Final = TextLayout(table="filter", view=lambda state: state, versions=address_versions,
                          setup=setup_script, teardown=teardown_script, gc=gc_script,
                          check=check_state)


class IptForward(XtablesFacet[Forward, SaveState]):
    """``ForwardFacet`` on iptables-restore, in the calling thread's network namespace."""

    def __init__(self, *, lock_path: str = FIREWALL_LOCK, lock_timeout: float = 10.0) -> None:
        super().__init__(_TEXT, "iptables forward", lock_path=lock_path,
                         lock_timeout=lock_timeout)

    def status(self) -> str | None:
        problems = []
        for version in engine.ip_versions():
            try:
                state = self._ipt.save(version)
            except CNIError as err:
                return str(err)
            if _address_rules(state) and state.policy("FORWARD") == "DROP" \
                    and not _jumped(state):
                problems.append(f"{'ip6' if version == 6 else 'ip'}tables: FORWARD policy is "
                                f"DROP and does not jump to {TOP_CHAIN}")
        return "; ".join(problems) or None
