"""The iptables engine: run iptables-save/-restore, parse a dump, apply a change under one lock;
every feature's I/O goes through here (layouts: ``masquerade``, ``forward``, ``portmap``).

Per call and IP version: one ``*-save`` to read, then at most one ``*-restore --noflush`` to
apply the whole change (no exec per rule: field failure #6). Read and write happen under one
file lock, because a restore script that declares a chain flushes it: without the lock, two
ADDs that both saw a shared chain missing would wipe each other's rules. Waits are bounded and
end in code 11. The binaries are whatever ``iptables``/``ip6tables`` the host has
(iptables-nft on Debian).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.model import AttachmentKey, network_tag
from pycni.lockfile import hold

__all__ = [
    "FIREWALL_LOCK",
    "Rule",
    "SaveState",
    "Xtables",
    "gc_lines",
    "host",
    "ip_versions",
    "parse_rule",
    "parse_save",
    "restore",
    "run",
    "save",
    "script",
    "tool",
    "tool_name",
]

FIREWALL_LOCK: Final = "/run/pycni/locks/firewall-iptables.lock"
_EXEC_TIMEOUT: Final = 30.0
_XTABLES_BUSY: Final = 4  # iptables' exit status when the xtables lock is held
_SBIN: Final = "/usr/sbin:/sbin:/usr/bin:/bin"
_QUOTING: Final = frozenset("\"'\\")


def tool_name(version: int) -> str:
    """``iptables`` for IPv4, ``ip6tables`` for IPv6."""
    return "iptables" if version == 4 else "ip6tables"


def tool(version: int, verb: str) -> str:
    """``iptables-<verb>`` or ``ip6tables-<verb>``, found even on a PATH without sbin."""
    name = f"{tool_name(version)}-{verb}"
    return shutil.which(name) or shutil.which(name, path=_SBIN) or name


def ip_versions() -> tuple[int, ...]:
    # Without IPv6 in this namespace's kernel there are no ip6tables tables to hold rules.
    return (4, 6) if os.path.isdir("/proc/sys/net/ipv6") else (4,)


def run(argv: list[str], stdin: str | None = None) -> str:
    """Run one xtables tool; its stdout, or a ``CNIError`` (code 11 when the lock is busy)."""
    try:
        proc = subprocess.run(argv, input=(stdin or "").encode(), capture_output=True,
                              timeout=_EXEC_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CNIError(ErrorCode.INTERNAL, f"cannot run {argv[0]}", str(err)) from err
    if proc.returncode == _XTABLES_BUSY:
        raise CNIError(ErrorCode.TRY_AGAIN_LATER, f"{argv[0]}: xtables lock busy",
                       proc.stderr.decode(errors="replace").strip())
    if proc.returncode != 0:
        raise CNIError(ErrorCode.INTERNAL, f"{argv[0]} failed (exit {proc.returncode})",
                       proc.stderr.decode(errors="replace").strip())
    return proc.stdout.decode(errors="replace")


def save(version: int, table: str) -> str:
    return run([tool(version, "save"), "-t", table])


def restore(version: int, text: str, *, wait: int = 5) -> None:
    run([tool(version, "restore"), "--noflush", "-w", str(wait)], text)


# ---------------------------------------------------------------------- the one parser


@dataclass(frozen=True)
class Rule:
    """One ``-A`` line of iptables-save, with the few parts pycni looks at."""

    chain: str
    line: str
    source: str | None = None
    dest: str | None = None
    comment: str | None = None
    target: str | None = None

    @property
    def spec(self) -> str:
        """The rule after ``-A <chain> `` (what a ``-D`` or ``-A`` line repeats)."""
        return self.line[3:].partition(" ")[2]

    @property
    def delete_line(self) -> str:
        """The same rule spec as a ``-D`` command (iptables-restore matches it exactly)."""
        return "-D" + self.line[2:]


def parse_rule(line: str) -> Rule:
    # shlex only where iptables-save quoted something (a comment with spaces): it costs ~10x
    # str.split, and the nat table of a busy host holds tens of thousands of rules.
    tokens = shlex.split(line) if _QUOTING.intersection(line) else line.split()
    parts: dict[str, str] = {}
    negated = False
    for flag, value in itertools.pairwise(tokens):
        if flag == "!":
            negated = True
            continue
        if flag in ("-s", "-d", "--comment", "-j"):
            # A negated match is never one of ours; keep it distinguishable.
            parts[flag] = f"!{value}" if negated else value
        negated = False
    return Rule(chain=tokens[1], line=line, source=parts.get("-s"), dest=parts.get("-d"),
                comment=parts.get("--comment"), target=parts.get("-j"))


@dataclass(frozen=True)
class SaveState:
    """One table of an ``iptables-save`` dump: its chains, their policies (``-`` for a user
    chain) and its rules, in order."""

    chains: frozenset[str] = frozenset()
    policies: tuple[tuple[str, str], ...] = ()
    rules: tuple[Rule, ...] = ()

    def rules_of(self, chain: str) -> list[Rule]:
        return [r for r in self.rules if r.chain == chain]

    def lines_of(self, chain: str) -> list[str]:
        return [r.line for r in self.rules_of(chain)]

    def policy(self, chain: str) -> str | None:
        return dict(self.policies).get(chain)


def parse_save(text: str, table: str) -> SaveState:
    """The ``*<table>`` section of ``iptables-save`` output."""
    policies: list[tuple[str, str]] = []
    rules: list[Rule] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            inside = line == f"*{table}"
        elif inside and line.startswith(":"):
            name, policy = [*line[1:].split(), "-"][:2]
            policies.append((name, policy))
        elif inside and line.startswith("-A "):
            rules.append(parse_rule(line))
    return SaveState(chains=frozenset(name for name, _ in policies), policies=tuple(policies),
                     rules=tuple(rules))


# ----------------------------------------------------------------------------- building


def host(ip: str) -> str:
    """An address as iptables-save prints a host match (``10.0.0.2/32``)."""
    addr = ipaddress.ip_address(ip)
    return f"{addr}/{addr.max_prefixlen}"


def script(table: str, declare: Iterable[str], lines: Iterable[str]) -> str | None:
    """A restore script for one table; None when there is nothing to change. Declaring
    ``:CHAIN`` creates the chain but also *flushes* an existing one: declare only chains that
    are missing or rewritten whole."""
    declared = [f":{chain} - [0:0]" for chain in declare]
    body = list(lines)
    if not declared and not body:
        return None
    return "\n".join([f"*{table}", *declared, *body, "COMMIT", ""])


def gc_lines(rules: Iterable[Rule], chains: Iterable[str], *, network_tag: str,
             keep: Collection[str], chain_prefix: str) -> list[str]:
    """Delete the network's rules (found by label) not labelled with a ``keep`` label, then
    flush and delete the network's chains (``chain_prefix``) no remaining rule jumps to."""
    ours = f"{network_tag}-"
    rules = list(rules)
    drop = [r for r in rules if (r.comment or "").startswith(ours) and r.comment not in keep]
    dropped = {id(r) for r in drop}
    still = {r.target for r in rules if id(r) not in dropped}
    unused = sorted(c for c in chains if c.startswith(chain_prefix) and c not in still)
    return [r.delete_line for r in drop] + [
        line for c in unused for line in (f"-F {c}", f"-X {c}")]


Build = Callable[[SaveState, int], "str | None"]


class Xtables:
    """One table of every IP version, read and written under one lock, in the calling
    thread's network namespace."""

    def __init__(self, table: str, *, lock_path: str, lock_timeout: float = 10.0,
                 xtables_wait: int = 5, what: str = "iptables changes") -> None:
        self.table = table
        self._lock_path, self._lock_timeout = lock_path, lock_timeout
        self._wait, self._what = xtables_wait, what

    def save(self, version: int) -> SaveState:
        return parse_save(save(version, self.table), self.table)

    def apply(self, versions: Iterable[int], build: Build) -> None:
        """Read, build and write each IP version under the lock; every version is attempted,
        and the errors are raised together (a single one as it is, keeping its code)."""
        errors: list[CNIError] = []
        with hold(self._lock_path, timeout=self._lock_timeout):
            for version in versions:
                try:
                    text = build(self.save(version), version)
                    if text is not None:
                        restore(version, text, wait=self._wait)
                except CNIError as err:
                    errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise CNIError(
                ErrorCode.INTERNAL, f"{self._what} failed", "; ".join(str(e) for e in errors)
            ) from errors[0]

    def status(self) -> str | None:
        """None if iptables-restore is there and the table can be read, else why not."""
        restore_tool = tool(4, "restore")
        if not os.path.isabs(restore_tool):
            return f"{restore_tool} not found"
        try:
            self.save(4)
        except CNIError as err:
            return str(err)
        return None

    def check(self, versions: Iterable[int],
              judge: Callable[[SaveState, int], list[str]]) -> list[str]:
        """What ``judge`` finds wrong in each version's table; a failed read is a problem."""
        problems: list[str] = []
        for version in versions:
            try:
                problems += judge(self.save(version), version)
            except CNIError as err:
                problems.append(str(err))
        return problems

    def gc(self, what: str, network: str, valid: Collection[tuple[str, str]],
           build: Callable[[SaveState, str, set[str]], str | None]) -> list[str]:
        """Remove the attachments of ``network`` not in ``valid`` in every IP version; the
        error met, as GC collects them."""
        keep = {AttachmentKey(network, cid, ifname).label for cid, ifname in valid}
        tag = network_tag(network)
        try:
            self.apply(ip_versions(), lambda state, _v: build(state, tag, keep))
        except CNIError as err:
            return [f"{what} GC of network {network!r}: {err}"]
        return []
