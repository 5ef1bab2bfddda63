"""Running iptables-save/-restore: the plumbing the iptables backends share.

Per call and IP version: one ``*-save`` to read, then at most one ``*-restore --noflush`` to
apply the whole change (no exec per rule). Read and write happen under one file lock, because
a restore script that declares a chain flushes it: without the lock, two ADDs that both saw a
shared chain missing would wipe each other's rules. Waits are bounded and end in code 11.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

from pycni.cni.errors import CNIError, ErrorCode
from pycni.lockfile import hold

__all__ = [
    "SaveDump",
    "apply_locked",
    "ip_versions",
    "parse_save",
    "restore",
    "run",
    "save",
    "tool",
]

_EXEC_TIMEOUT: Final = 30.0
_XTABLES_BUSY: Final = 4  # iptables' exit status when the xtables lock is held
_SBIN: Final = "/usr/sbin:/sbin:/usr/bin:/bin"

State = TypeVar("State")


def tool(version: int, verb: str) -> str:
    """``iptables-<verb>`` or ``ip6tables-<verb>``, found even on a PATH without sbin."""
    name = f"{'iptables' if version == 4 else 'ip6tables'}-{verb}"
    return shutil.which(name) or shutil.which(name, path=_SBIN) or name


def ip_versions() -> tuple[int, ...]:
    # Without IPv6 in this namespace's kernel there are no ip6tables tables to hold rules.
    return (4, 6) if os.path.isdir("/proc/sys/net/ipv6") else (4,)


def run(argv: list[str], stdin: str | None = None) -> str:
    """Run one xtables tool; its stdout, or a ``CNIError`` (code 11 when the lock is busy)."""
    try:
        proc = subprocess.run(
            argv,
            input=(stdin or "").encode(),
            capture_output=True,
            timeout=_EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CNIError(ErrorCode.INTERNAL, f"cannot run {argv[0]}", str(err)) from err
    if proc.returncode == _XTABLES_BUSY:
        raise CNIError(
            ErrorCode.TRY_AGAIN_LATER,
            f"{argv[0]}: xtables lock busy",
            proc.stderr.decode(errors="replace").strip(),
        )
    if proc.returncode != 0:
        raise CNIError(
            ErrorCode.INTERNAL,
            f"{argv[0]} failed (exit {proc.returncode})",
            proc.stderr.decode(errors="replace").strip(),
        )
    return proc.stdout.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class SaveDump:
    """One table of an ``iptables-save`` dump: its chains with their policies (``-`` for a
    user chain) and its ``-A`` lines, in order. Each backend reads the parts it needs."""

    policies: tuple[tuple[str, str], ...] = ()
    rule_lines: tuple[str, ...] = ()

    @property
    def chains(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.policies)


def parse_save(text: str, table: str) -> SaveDump:
    """The ``*<table>`` section of ``iptables-save`` output."""
    policies: list[tuple[str, str]] = []
    rule_lines: list[str] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            inside = line == f"*{table}"
        elif inside and line.startswith(":"):
            name, policy = [*line[1:].split(), "-"][:2]
            policies.append((name, policy))
        elif inside and line.startswith("-A "):
            rule_lines.append(line)
    return SaveDump(policies=tuple(policies), rule_lines=tuple(rule_lines))


def save(version: int, table: str) -> str:
    return run([tool(version, "save"), "-t", table])


def restore(version: int, script: str, *, wait: int = 5) -> None:
    run([tool(version, "restore"), "--noflush", "-w", str(wait)], script)


def apply_locked(
    *,
    lock_path: str,
    lock_timeout: float,
    versions: Iterable[int],
    read: Callable[[int], State],
    build: Callable[[State, int], str | None],
    wait: int = 5,
    what: str = "iptables changes",
) -> None:
    """Read, build and write each IP version under the lock; every version is attempted,
    and the errors are raised together (a single one as it is, keeping its code)."""
    errors: list[CNIError] = []
    with hold(lock_path, timeout=lock_timeout):
        for version in versions:
            try:
                script = build(read(version), version)
                if script is not None:
                    restore(version, script, wait=wait)
            except CNIError as err:
                errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise CNIError(
            ErrorCode.INTERNAL, f"{what} failed", "; ".join(str(e) for e in errors)
        ) from errors[0]
