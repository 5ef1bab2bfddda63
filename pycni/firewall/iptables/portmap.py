"""Port mappings on iptables (the fallback driver): one ``iptables-restore --noflush`` per call
and IP version, rules tagged with the attachment label; the facet. Layout in the nat table::

    -A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment pycni-portmap -j PYCNI-HOSTPORTS
    -A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment pycni-portmap -j PYCNI-HOSTPORTS
    -A POSTROUTING -m comment --comment pycni-portmap -j PYCNI-HOSTPORTS-MASQ
    -A PYCNI-HOSTPORTS [-d <hostIP>/32] -p tcp -m tcp --dport 8080 -m comment --comment <label> \
        -j DNAT --to-destination 10.88.0.5:80
    -A PYCNI-HOSTPORTS-MASQ [-s 10.88.0.0/16] -d 10.88.0.5/32 -p tcp -m tcp --dport 80 \
        -m conntrack --ctstate DNAT -m comment --comment <label> -j MASQUERADE

Rules are written in the order ``iptables-save`` prints them, so the saved text is compared
as is. Masquerading is decided from conntrack's DNAT state and the post-DNAT tuple, so no
packet mark is needed (the reference's ``markMasqBit``). A rule list per chain is O(rules)
per new connection: this is the fallback where nftables is absent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final

from pycni.firewall.iptables import engine
from pycni.firewall.iptables.engine import SaveState, host, parse_rule, script
from pycni.firewall.iptables.feature import TextLayout, XtablesFacet
from pycni.firewall.model.portmap import PortMap

__all__ = [
    "DNAT_CHAIN",
    "MASQ_CHAIN",
    "IptPortmap",
    "Saved",
    "check_state",
    "gc_script",
    "parse_save",
    "setup_script",
    "teardown_script",
    "wanted_rules",
]

DNAT_CHAIN: Final = "PYCNI-HOSTPORTS"
MASQ_CHAIN: Final = "PYCNI-HOSTPORTS-MASQ"
JUMP_COMMENT: Final = "pycni-portmap"
PORTMAP_LOCK: Final = "/run/pycni/locks/portmap-iptables.lock"
_JUMPS: Final = (
    ("PREROUTING", f"-m addrtype --dst-type LOCAL -m comment --comment {JUMP_COMMENT} "
                   f"-j {DNAT_CHAIN}"),
    ("OUTPUT", f"-m addrtype --dst-type LOCAL -m comment --comment {JUMP_COMMENT} "
               f"-j {DNAT_CHAIN}"),
    ("POSTROUTING", f"-m comment --comment {JUMP_COMMENT} -j {MASQ_CHAIN}"),
)
_LOCALHOST: Final = "127.0.0.0/8"


# ------------------------------------------------------------------------ pure text


@dataclass(frozen=True)
class Saved:
    """The nat table as (chain, rule spec after "-A <chain> ") pairs, compared as text:
    iptables-save prints a rule back exactly as these builders write it."""

    chains: frozenset[str] = frozenset()
    lines: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, state: SaveState) -> Saved:
        return cls(chains=state.chains, lines=tuple((r.chain, r.spec) for r in state.rules))

    def rules_of(self, chain: str) -> list[str]:
        return [spec for c, spec in self.lines if c == chain]


def parse_save(text: str) -> Saved:
    return Saved.of(engine.parse_save(text, "nat"))


def _comment(chain: str, spec: str) -> str | None:
    return parse_rule(f"-A {chain} {spec}").comment


def _match_part(spec: str) -> str:
    """What a rule matches on, without its comment and target (to spot a shadowing rule)."""
    return spec.split(" -m comment ", 1)[0]


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ipaddress.ip_address(ip).version == 6 else f"{ip}:{port}"


def wanted_rules(pm: PortMap, version: int) -> list[tuple[str, str]]:
    """(chain, spec) of every rule of ``pm`` for one IP version, in order."""
    label = pm.key.label
    rules: list[tuple[str, str]] = []
    for t in (t for t in pm.targets() if t.version == version):
        dest = f"-d {host(t.host_addr)} " if t.host_addr else ""
        rules.append((DNAT_CHAIN, f"{dest}-p {t.protocol} -m {t.protocol} --dport {t.host_port} "
                      f"-m comment --comment {label} -j DNAT --to-destination "
                      f"{_endpoint(t.container_ip, t.container_port)}"))
    sources: list[str | None] = []
    if pm.snat:
        sources += [*pm.subnets_of(version), *([_LOCALHOST] if version == 4 else [])]
    if pm.masq_all:
        sources = [None]
    for ip, proto, port in pm.hairpin_keys(version):
        for src in sources:
            head = f"-s {src} " if src else ""
            rules.append((MASQ_CHAIN, f"{head}-d {host(ip)} -p {proto} -m {proto} --dport {port} "
                          f"-m conntrack --ctstate DNAT -m comment --comment {label} "
                          "-j MASQUERADE"))
    return rules


def _script(declare: Iterable[str], lines: Iterable[str]) -> str | None:
    return script("nat", declare, lines)


def _infrastructure(state: Saved) -> tuple[list[str], list[str]]:
    declare = [c for c in (DNAT_CHAIN, MASQ_CHAIN) if c not in state.chains]
    jumps = [f"-A {chain} {spec}" for chain, spec in _JUMPS if spec not in state.rules_of(chain)]
    return declare, jumps


def _owned(state: Saved, keep: Callable[[str | None], bool]) -> list[tuple[str, str]]:
    return [(c, s) for c, s in state.lines
            if c in (DNAT_CHAIN, MASQ_CHAIN) and keep(_comment(c, s))]


def setup_script(state: Saved, pm: PortMap, version: int) -> str | None:
    """What makes ``state`` hold ``pm`` for one version; None if it already does. A rule of
    another label matching the same packets (a leftover that would shadow ours) goes too."""
    declare, lines = _infrastructure(state)
    wanted = wanted_rules(pm, version)
    label = pm.key.label
    mine = _owned(state, lambda c: c == label)
    if mine == wanted and not declare and not lines:
        return None
    matches = {(c, _match_part(s)) for c, s in wanted}
    shadows = [(c, s) for c, s in _owned(state, lambda c: c != label)
               if (c, _match_part(s)) in matches]
    lines += [f"-D {c} {s}" for c, s in (*mine, *shadows)]
    lines += [f"-A {c} {s}" for c, s in wanted]
    return _script(declare, lines)


def teardown_script(state: Saved, label: str) -> str | None:
    return _script((), (f"-D {c} {s}" for c, s in _owned(state, lambda c: c == label)))


def gc_script(state: Saved, net_tag: str, keep: Collection[str]) -> str | None:
    def stale(comment: str | None) -> bool:
        return (comment or "").startswith(f"{net_tag}-") and comment not in keep

    return _script((), (f"-D {c} {s}" for c, s in _owned(state, stale)))


def check_state(state: Saved, pm: PortMap, version: int) -> list[str]:
    tool = engine.tool_name(version)
    declare, jumps = _infrastructure(state)
    problems = [f"{tool}: chain {c} missing" for c in declare]
    problems += [f"{tool}: jump missing: {j}" for j in jumps]
    wanted = wanted_rules(pm, version)
    mine = _owned(state, lambda c: c == pm.key.label)
    problems += [f"{tool}: rule missing: -A {c} {s}" for c, s in wanted if (c, s) not in mine]
    problems += [f"{tool}: stale rule of this attachment: -A {c} {s}"
                 for c, s in mine if (c, s) not in wanted]
    return problems


# ------------------------------------------------------------------------------ the facet


def _versions(pm: PortMap) -> list[int]:
    return [v for v in (4, 6) if any(t.version == v for t in pm.targets())]


_TEXT: Final = TextLayout(table="nat", view=Saved.of, versions=_versions, setup=setup_script,
                          teardown=teardown_script, gc=gc_script, check=check_state)


class IptPortmap(XtablesFacet[PortMap, Saved]):
    """``PortmapFacet`` on iptables-restore, under a file lock of its own. Acts in the
    calling thread's network namespace."""

    def __init__(self, *, lock_path: str = PORTMAP_LOCK, lock_timeout: float = 10.0,
                 xtables_wait: int = 5) -> None:
        super().__init__(_TEXT, "iptables portmap", lock_path=lock_path,
                         lock_timeout=lock_timeout, xtables_wait=xtables_wait)
