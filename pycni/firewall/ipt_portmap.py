"""The iptables fallback for port mappings: one ``iptables-restore --noflush`` per call and IP
version, rules tagged with the attachment label. Layout in the nat table::

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
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final

from pycni.cni.errors import CNIError
from pycni.firewall import xtables
from pycni.firewall.model import AttachmentKey, network_tag
from pycni.firewall.portmap_model import PortMap

__all__ = [
    "DNAT_CHAIN",
    "MASQ_CHAIN",
    "IptPortmapBackend",
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
DEFAULT_LOCK: Final = "/run/pycni/locks/portmap-iptables.lock"
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
    """The nat table of one ``iptables-save -t nat``: chains, and each ``-A`` line by chain."""

    chains: frozenset[str] = frozenset()
    lines: tuple[tuple[str, str], ...] = ()  # (chain, rule spec after "-A <chain> ")

    def rules_of(self, chain: str) -> list[str]:
        return [spec for c, spec in self.lines if c == chain]


def parse_save(text: str) -> Saved:
    dump = xtables.parse_save(text, "nat")
    split = (line[3:].partition(" ") for line in dump.rule_lines)
    return Saved(chains=dump.chains, lines=tuple((chain, spec) for chain, _, spec in split))


def _comment(spec: str) -> str | None:
    words = spec.split()
    for i, word in enumerate(words[:-1]):
        if word == "--comment":
            return words[i + 1].strip('"')
    return None


def _match_part(spec: str) -> str:
    """What a rule matches on, without its comment and target (to spot a shadowing rule)."""
    return spec.split(" -m comment ", 1)[0]


def _host(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    return f"{addr}/{addr.max_prefixlen}"


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ipaddress.ip_address(ip).version == 6 else f"{ip}:{port}"


def wanted_rules(pm: PortMap, version: int) -> list[tuple[str, str]]:
    """(chain, spec) of every rule of ``pm`` for one IP version, in order."""
    label = pm.key.label
    rules: list[tuple[str, str]] = []
    for t in (t for t in pm.targets() if t.version == version):
        dest = f"-d {_host(t.host_addr)} " if t.host_addr else ""
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
            rules.append((MASQ_CHAIN, f"{head}-d {_host(ip)} -p {proto} -m {proto} --dport {port} "
                          f"-m conntrack --ctstate DNAT -m comment --comment {label} "
                          "-j MASQUERADE"))
    return rules


def _script(declare: Iterable[str], lines: Iterable[str]) -> str | None:
    declared = [f":{chain} - [0:0]" for chain in declare]
    body = list(lines)
    if not declared and not body:
        return None
    return "\n".join(["*nat", *declared, *body, "COMMIT", ""])


def _infrastructure(state: Saved) -> tuple[list[str], list[str]]:
    declare = [c for c in (DNAT_CHAIN, MASQ_CHAIN) if c not in state.chains]
    jumps = [f"-A {chain} {spec}" for chain, spec in _JUMPS if spec not in state.rules_of(chain)]
    return declare, jumps


def _owned(state: Saved, keep: Callable[[str | None], bool]) -> list[tuple[str, str]]:
    return [(c, s) for c, s in state.lines if c in (DNAT_CHAIN, MASQ_CHAIN) and keep(_comment(s))]


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
    tool = "iptables" if version == 4 else "ip6tables"
    declare, jumps = _infrastructure(state)
    problems = [f"{tool}: chain {c} missing" for c in declare]
    problems += [f"{tool}: jump missing: {j}" for j in jumps]
    wanted = wanted_rules(pm, version)
    mine = _owned(state, lambda c: c == pm.key.label)
    problems += [f"{tool}: rule missing: -A {c} {s}" for c, s in wanted if (c, s) not in mine]
    problems += [f"{tool}: stale rule of this attachment: -A {c} {s}"
                 for c, s in mine if (c, s) not in wanted]
    return problems


# --------------------------------------------------------------------------- backend


class IptPortmapBackend:
    """``PortmapBackend`` on iptables-restore; read and write under one file lock (declaring a
    chain in a restore script flushes it). Acts in the calling thread's network namespace."""

    name = "iptables"

    def __init__(self, *, lock_path: str = DEFAULT_LOCK, lock_timeout: float = 10.0,
                 xtables_wait: int = 5) -> None:
        self._lock_path = lock_path
        self._lock_timeout = lock_timeout
        self._wait = xtables_wait

    def _save(self, version: int) -> Saved:
        return parse_save(xtables.save(version, "nat"))

    def _apply(self, versions: Iterable[int], build: Callable[[Saved, int], str | None]) -> None:
        xtables.apply_locked(lock_path=self._lock_path, lock_timeout=self._lock_timeout,
                             versions=versions, read=self._save, build=build, wait=self._wait,
                             what="iptables port mapping changes")

    @staticmethod
    def _versions() -> tuple[int, ...]:
        return xtables.ip_versions()

    @staticmethod
    def _versions_of(pm: PortMap) -> list[int]:
        return [v for v in (4, 6) if any(t.version == v for t in pm.targets())]

    def setup_portmap(self, pm: PortMap) -> None:
        versions = self._versions_of(pm)
        if versions:
            self._apply(versions, lambda state, v: setup_script(state, pm, v))

    def teardown_portmap(self, key: AttachmentKey, hint: PortMap | None = None) -> None:
        del hint  # a rule is deleted by its full text, which only a read gives
        self._apply(self._versions(), lambda state, _v: teardown_script(state, key.label))

    def check_portmap(self, pm: PortMap) -> list[str]:
        problems: list[str] = []
        for version in self._versions_of(pm):
            try:
                problems += check_state(self._save(version), pm, version)
            except CNIError as err:
                problems.append(str(err))
        return problems

    def gc_portmap(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        keep = {AttachmentKey(network, cid, ifname).label for cid, ifname in valid}
        tag = network_tag(network)
        try:
            self._apply(self._versions(), lambda state, _v: gc_script(state, tag, keep))
        except CNIError as err:
            return [f"iptables portmap GC of network {network!r}: {err}"]
        return []

    def status(self) -> str | None:
        if not os.path.isabs(xtables.tool(4, "restore")):
            return "iptables-restore not found"
        try:
            self._save(4)
        except CNIError as err:
            return str(err)
        return None
