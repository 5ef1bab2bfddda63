"""Test-only crash points: ``failpoint("bridge.add.after_veth")`` kills the process right there.

A failpoint does nothing unless the environment variable ``PYCNI_FAILPOINTS`` names it::

    PYCNI_FAILPOINTS="bridge.add.after_veth=kill,hostlocal.del.after_remove=kill"

(``name`` alone means ``name=kill``; ``kill`` is the only action.) A named failpoint SIGKILLs
its own process: the plugin executable, or the fork server's worker running the call, exactly
as a crash, an OOM kill or a node reboot would stop it, with no ``finally`` or undo running.
The crash-consistency tests (tests/e2e/test_crash_consistency.py) then prove that DEL and GC
leave nothing behind.

Cost when disabled: one membership test on a module-level frozenset, computed once at import
from ``os.environ``. A forked child (the fork server's worker, which takes its caller's
environment after the fork) recomputes it once, at its first failpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Final

__all__ = ["ENV", "active", "failpoint", "parse"]

ENV: Final = "PYCNI_FAILPOINTS"
_ACTIONS: Final = frozenset({"kill"})


def parse(text: str) -> frozenset[str]:
    """The failpoint names ``text`` enables; entries with an unknown action are ignored."""
    names: set[str] = set()
    for item in text.replace(";", ",").split(","):
        name, _, action = item.strip().partition("=")
        if name and (action or "kill") in _ACTIONS:
            names.add(name)
    return frozenset(names)


# The enabled names; [None] after a fork until the first failpoint reads the environment again.
_ACTIVE: list[frozenset[str] | None] = [parse(os.environ.get(ENV, ""))]


def _forget() -> None:
    """After fork: the child may be about to become someone else (a server worker)."""
    _ACTIVE[0] = None


os.register_at_fork(after_in_child=_forget)


def active() -> frozenset[str]:
    """The enabled failpoints of this process (read from the environment once)."""
    names = _ACTIVE[0]
    if names is None:
        names = _ACTIVE[0] = parse(os.environ.get(ENV, ""))
    return names


def failpoint(name: str) -> None:
    """Die here with SIGKILL if ``name`` is enabled; otherwise do nothing."""
    names = _ACTIVE[0]
    if names is None:  # only in a freshly forked child
        names = active()
    if name in names:
        _fire(name)


def _fire(name: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr is gone: die anyway
        print(f"pycni: failpoint {name}: SIGKILL pid {os.getpid()}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
