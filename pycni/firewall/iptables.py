"""The iptables fallback backend, for hosts where nftables is not usable.

Per call and IP version: one ``iptables-save -t nat`` to read, then at most one
``iptables-restore --noflush`` to apply the whole change at once (field failure #6: no exec per
rule), under one file lock (``xtables.apply_locked`` says why).

The binaries are whatever ``iptables``/``ip6tables`` the host has (iptables-nft on Debian).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Final

from pycni.cni.errors import CNIError
from pycni.firewall import iptables_rules as ipt
from pycni.firewall import xtables
from pycni.firewall.model import AttachmentKey, Masquerade, network_tag

__all__ = ["DEFAULT_LOCK", "IptablesBackend"]

DEFAULT_LOCK: Final = "/run/pycni/locks/firewall-iptables.lock"
Build = Callable[[ipt.SaveState, int], str | None]


class IptablesBackend:
    """``FirewallBackend`` on iptables-restore. Acts in the calling thread's network namespace."""

    name = "iptables"

    def __init__(self, *, lock_path: str = DEFAULT_LOCK, lock_timeout: float = 10.0,
                 xtables_wait: int = 5) -> None:
        self._lock_path = lock_path
        self._lock_timeout = lock_timeout
        self._wait = xtables_wait

    # ---------------------------------------------------------------- plumbing

    def _save(self, version: int) -> ipt.SaveState:
        return ipt.parse_save(xtables.save(version, "nat"))

    def _apply(self, versions: Collection[int], build: Build) -> None:
        xtables.apply_locked(lock_path=self._lock_path, lock_timeout=self._lock_timeout,
                             versions=versions, read=self._save, build=build, wait=self._wait)

    @staticmethod
    def _all_versions() -> tuple[int, ...]:
        return xtables.ip_versions()

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
        restore = xtables.tool(4, "restore")
        if not os.path.isabs(restore):
            return f"{restore} not found"
        try:
            self._save(4)
        except CNIError as err:
            return str(err)
        return None
