"""The iptables fallback backend, for hosts where nftables is not usable.

Per call and IP version: one ``iptables-save -t nat`` to read, then at most one
``iptables-restore --noflush`` to apply the whole change at once (field failure #6: no exec per
rule). The read and the write happen under one file lock, because a restore script that
declares a chain flushes it: without the lock, two ADDs that both saw the shared chain missing
would wipe each other's rules. Lock waits are bounded and end in code 11 (try again later).

The binaries are whatever ``iptables``/``ip6tables`` the host has (iptables-nft on Debian).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Collection
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall import iptables_rules as ipt
from pycni.firewall.model import AttachmentKey, Masquerade, network_tag
from pycni.lockfile import hold

__all__ = ["DEFAULT_LOCK", "IptablesBackend"]

DEFAULT_LOCK: Final = "/run/pycni/locks/firewall-iptables.lock"
_EXEC_TIMEOUT: Final = 30.0
_XTABLES_RESOURCE_PROBLEM: Final = 4  # iptables' exit status when the xtables lock is held
_SBIN: Final = "/usr/sbin:/sbin:/usr/bin:/bin"

Build = Callable[[ipt.SaveState, int], str | None]


def _tool(version: int, verb: str) -> str:
    name = f"{'iptables' if version == 4 else 'ip6tables'}-{verb}"
    return shutil.which(name) or shutil.which(name, path=_SBIN) or name


def _ipv6_enabled() -> bool:
    # Without IPv6 in this namespace's kernel there is no ip6tables nat table to hold rules.
    return os.path.isdir("/proc/sys/net/ipv6")


class IptablesBackend:
    """``FirewallBackend`` on iptables-restore. Acts in the calling thread's network namespace."""

    name = "iptables"

    def __init__(self, *, lock_path: str = DEFAULT_LOCK, lock_timeout: float = 10.0,
                 xtables_wait: int = 5) -> None:
        self._lock_path = lock_path
        self._lock_timeout = lock_timeout
        self._wait = xtables_wait

    # ---------------------------------------------------------------- plumbing

    def _exec(self, argv: list[str], stdin: str | None = None) -> str:
        try:
            proc = subprocess.run(argv, input=(stdin or "").encode(), capture_output=True,
                                  timeout=_EXEC_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise CNIError(ErrorCode.INTERNAL, f"cannot run {argv[0]}", str(err)) from err
        if proc.returncode == _XTABLES_RESOURCE_PROBLEM:
            raise CNIError(ErrorCode.TRY_AGAIN_LATER, f"{argv[0]}: xtables lock busy",
                           proc.stderr.decode(errors="replace").strip())
        if proc.returncode != 0:
            raise CNIError(ErrorCode.INTERNAL, f"{argv[0]} failed (exit {proc.returncode})",
                           proc.stderr.decode(errors="replace").strip())
        return proc.stdout.decode(errors="replace")

    def _save(self, version: int) -> ipt.SaveState:
        return ipt.parse_save(self._exec([_tool(version, "save"), "-t", "nat"]))

    def _restore(self, version: int, script: str) -> None:
        self._exec([_tool(version, "restore"), "--noflush", "-w", str(self._wait)], script)

    def _apply(self, versions: Collection[int], build: Build) -> None:
        """Read, build and write each IP version under the lock; every version is attempted,
        and the errors are raised together."""
        errors: list[CNIError] = []
        with hold(self._lock_path, timeout=self._lock_timeout):
            for version in versions:
                try:
                    script = build(self._save(version), version)
                    if script is not None:
                        self._restore(version, script)
                except CNIError as err:
                    errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise CNIError(ErrorCode.INTERNAL, "iptables changes failed",
                           "; ".join(str(e) for e in errors)) from errors[0]

    @staticmethod
    def _all_versions() -> tuple[int, ...]:
        return (4, 6) if _ipv6_enabled() else (4,)

    # ------------------------------------------------------------- the protocol

    def setup_masquerade(self, m: Masquerade) -> None:
        versions = [v for v in (4, 6) if m.sources_of(v)]
        if versions:
            self._apply(versions, lambda state, v: ipt.setup_script(state, m, v))

    def teardown_masquerade(self, key: AttachmentKey) -> None:
        self._apply(self._all_versions(), lambda state, _v: ipt.teardown_script(state, key.label))

    def check_masquerade(self, m: Masquerade) -> list[str]:
        problems: list[str] = []
        for version in (v for v in (4, 6) if m.sources_of(v)):
            try:
                problems += ipt.check_state(self._save(version), m, version)
            except CNIError as err:
                problems.append(str(err))
        return problems

    def gc_masquerade(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        keep = {AttachmentKey(network, cid, ifname).label for cid, ifname in valid}
        tag = network_tag(network)
        try:
            self._apply(self._all_versions(), lambda state, _v: ipt.gc_script(state, tag, keep))
        except CNIError as err:
            return [f"iptables masquerade GC of network {network!r}: {err}"]
        return []

    def check_layout(self) -> list[str]:
        try:
            state = self._save(4)
        except CNIError as err:
            return [str(err)]
        if not any(r.target == ipt.TOP_CHAIN for r in state.rules_of("POSTROUTING")):
            return [f"iptables: POSTROUTING does not jump to {ipt.TOP_CHAIN}"]
        return []

    def status(self) -> str | None:
        restore = _tool(4, "restore")
        if not os.path.isabs(restore):
            return f"{restore} not found"
        try:
            self._save(4)
        except CNIError as err:
            return str(err)
        return None
