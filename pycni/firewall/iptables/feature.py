"""What every iptables feature's facet does the same way, written once: its pure text builders
(``TextLayout``) run through the engine, per IP version, under the feature's lock."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pycni.firewall.iptables.engine import SaveState, Xtables, ip_versions
from pycni.firewall.model import AttachmentKey

__all__ = ["TextLayout", "XtablesFacet", "address_versions"]

S = TypeVar("S")  # what the plugin hands in (Masquerade, Forward, PortMap)
St = TypeVar("St")  # the table as the builders read it


class _Sourced(Protocol):
    def sources_of(self, version: int) -> tuple[str, ...]: ...


def address_versions(spec: _Sourced) -> list[int]:
    """The IP versions (4, 6) ``spec`` has source addresses of."""
    return [v for v in (4, 6) if spec.sources_of(v)]


@dataclass(frozen=True, slots=True)
class TextLayout(Generic[S, St]):
    """A feature's builders: its table, how they read a dump (``view``), the IP versions a
    spec needs, the restore scripts (None when there is nothing to change) and CHECK."""

    table: str
    view: Callable[[SaveState], St]
    versions: Callable[[S], list[int]]
    setup: Callable[[St, S, int], str | None]
    teardown: Callable[[St, str], str | None]
    gc: Callable[[St, str, Collection[str]], str | None]
    check: Callable[[St, S, int], list[str]]


class XtablesFacet(Generic[S, St]):
    """A facet from a ``TextLayout``: one read and at most one restore per IP version and
    call, under ``lock_path``; teardown and GC go by label in every IP version."""

    def __init__(self, layout: TextLayout[S, St], what: str, *, lock_path: str,
                 lock_timeout: float = 10.0, xtables_wait: int = 5) -> None:
        self._layout, self._what = layout, what
        self._ipt = Xtables(layout.table, lock_path=lock_path, lock_timeout=lock_timeout,
                            xtables_wait=xtables_wait, what=f"{what} changes")

    def setup(self, spec: S) -> None:
        layout = self._layout
        versions = layout.versions(spec)
        if versions:  # nothing to write: not even the lock is taken
            self._ipt.apply(versions, lambda state, v: layout.setup(layout.view(state), spec, v))

    def teardown(self, key: AttachmentKey, hint: object = None) -> None:
        del hint  # a rule is deleted by its full text, which only a read gives
        layout = self._layout
        self._ipt.apply(ip_versions(),
                        lambda state, _v: layout.teardown(layout.view(state), key.label))

    def check(self, spec: S) -> list[str]:
        layout = self._layout
        return self._ipt.check(layout.versions(spec),
                               lambda state, v: layout.check(layout.view(state), spec, v))

    def gc(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        layout = self._layout
        return self._ipt.gc(self._what, network, valid,
                            lambda state, tag, keep: layout.gc(layout.view(state), tag, keep))

    def status(self) -> str | None:
        return self._ipt.status()
