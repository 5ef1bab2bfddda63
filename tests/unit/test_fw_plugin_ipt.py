"""The iptables forward layout: restore scripts against an in-memory filter table."""

from __future__ import annotations

import pytest

from pycni.firewall.iptables import forward as ipf
from pycni.firewall.model import HOLE_COMMENT, AttachmentKey, Forward

EMPTY = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
        "-A FORWARD -j DOCKER-USER\nCOMMIT\n"


def fwd(cid: str = "c1", *sources: str, network: str = "net",
        policy: str = "same-bridge", internal: bool = False) -> Forward:
    return Forward(key=AttachmentKey(network, cid, "eth0"), network_subnets=("10.99.0.0/24",),
                   sources=sources or ("10.99.0.5",), ingress_policy=policy, internal=internal)


def apply(save: str, script: str | None) -> str:
    """What iptables-restore --noflush does with ``script``, for the commands we emit."""
    if script is None:
        return save
    state = ipf.parse_filter(save)
    chains = {name: [r.line for r in state.rules_of(name)] for name in sorted(state.chains)}
    policies = dict(state.policies)
    for line in script.splitlines():
        if line.startswith(":"):
            chains[line[1:].split()[0]] = []
            policies.setdefault(line[1:].split()[0], "-")
        elif line.startswith("-A "):
            chains[line.split()[1]].append(line)
        elif line.startswith("-I "):
            _, chain, pos, *rest = line.split()
            chains[chain].insert(int(pos) - 1, " ".join(["-A", chain, *rest]))
        elif line.startswith("-D "):
            chains[line.split()[1]].remove("-A" + line[2:])
        elif line.startswith("-F "):
            chains[line.split()[1]] = []
        elif line.startswith("-X "):
            del chains[line.split()[1]]
    heads = [f":{c} {policies.get(c, '-')} [0:0]" for c in chains]
    rules = [r for c in chains for r in chains[c]]
    return "\n".join(["*filter", *heads, *rules, "COMMIT", ""])


def test_setup_puts_the_jump_at_the_top_and_is_idempotent() -> None:
    f = fwd()
    save = apply(EMPTY, ipf.setup_script(ipf.parse_filter(EMPTY), f, 4))
    state = ipf.parse_filter(save)
    assert state.lines_of("FORWARD")[0] == \
        f"-A FORWARD -m comment --comment {HOLE_COMMENT} -j PYCNI-FORWARD"
    assert state.lines_of("FORWARD")[1] == "-A FORWARD -j DOCKER-USER"
    assert ipf.check_state(state, f, 4) == []
    assert ipf.setup_script(state, f, 4) is None
    assert len(ipf.network_chain(f)) <= 28


def test_internal_chain_accepts_within_and_drops_the_rest() -> None:
    f = fwd(internal=True)
    chain = ipf.network_chain(f)
    assert ipf.network_lines(f, 4) == [
        f"-A {chain} -s 10.99.0.0/24 -d 10.99.0.0/24 -j ACCEPT",
        f"-A {chain} -s 10.99.0.0/24 -j DROP",
        f"-A {chain} -d 10.99.0.0/24 -j DROP",
    ]
    assert chain != ipf.network_chain(fwd())
    save = apply(EMPTY, ipf.setup_script(ipf.parse_filter(EMPTY), f, 4))
    assert ipf.check_state(ipf.parse_filter(save), f, 4) == []


def test_second_container_adds_two_rules_only() -> None:
    save = apply(EMPTY, ipf.setup_script(ipf.parse_filter(EMPTY), fwd(), 4))
    script = ipf.setup_script(ipf.parse_filter(save), fwd("c2", "10.99.0.6"), 4)
    assert script is not None
    body = [ln for ln in script.splitlines() if ln.startswith(("-", ":"))]
    assert len(body) == 2
    assert all("10.99.0.6/32" in ln for ln in body)


def test_a_leftover_rule_for_the_address_is_replaced() -> None:
    save = apply(EMPTY, ipf.setup_script(ipf.parse_filter(EMPTY), fwd("old"), 4))
    new = fwd("new")
    save = apply(save, ipf.setup_script(ipf.parse_filter(save), new, 4))
    state = ipf.parse_filter(save)
    assert ipf.check_state(state, new, 4) == []
    assert not any(r.comment == fwd("old").key.label for r in state.rules)


def test_open_policy_accepts_marked_ingress() -> None:
    assert any(ln.endswith("-m mark --mark 0x100000/0x100000 -j ACCEPT")
               for ln in ipf.network_lines(fwd(policy="open"), 4))
    assert any(ln.endswith("-m mark --mark 0x100000/0x100000 -j DROP")
               for ln in ipf.network_lines(fwd(), 4))


def test_teardown_and_gc() -> None:
    save = EMPTY
    for f in (fwd("a"), fwd("b", "10.99.0.6"), fwd("x", "10.98.0.2", network="other")):
        save = apply(save, ipf.setup_script(ipf.parse_filter(save), f, 4))
    save = apply(save, ipf.teardown_script(ipf.parse_filter(save), fwd("a").key.label))
    assert "10.99.0.5" not in save
    assert ipf.teardown_script(ipf.parse_filter(save), fwd("a").key.label) is None
    save = apply(save, ipf.gc_script(ipf.parse_filter(save), fwd().key.network_tag, set()))
    state = ipf.parse_filter(save)
    assert "10.99.0.6" not in save
    assert ipf.network_chain(fwd()) not in state.chains
    assert ipf.check_state(state, fwd("x", "10.98.0.2", network="other"), 4) == []


def test_check_reports_a_flushed_forward_chain() -> None:
    f = fwd()
    save = apply(EMPTY, ipf.setup_script(ipf.parse_filter(EMPTY), f, 4))
    state = ipf.parse_filter(save)
    flushed = ipf.FilterState(chains=state.chains, policies=state.policies,
                              rules=tuple(r for r in state.rules if r.chain != "FORWARD"))
    assert ipf.check_state(flushed, f, 4) == ["iptables: FORWARD does not jump to PYCNI-FORWARD"]


@pytest.mark.parametrize("version", [4, 6])
def test_ipv6_lines(version: int) -> None:
    f = Forward(key=AttachmentKey("n", "c", "eth0"), network_subnets=("fd00::/64",),
                sources=("fd00::5",))
    lines = ipf.network_lines(f, version)
    assert bool(lines) == (version == 6)
