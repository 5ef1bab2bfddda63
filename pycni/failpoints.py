"""Test-only crash points: ``failpoint("bridge.add.after_veth")`` kills the process right there.

A failpoint does nothing unless the environment variable ``PYCNI_FAILPOINTS`` names it::

    PYCNI_FAILPOINTS="bridge.add.after_veth=kill,hostlocal.del.after_remove=sleep:5"

(``name`` alone means ``name=kill``.) ``kill``: the failpoint SIGKILLs its own process (the
plugin executable, or the fork server's worker running the call) exactly as a crash, an OOM
kill or a node reboot would stop it, with no ``finally`` or undo running. The
crash-consistency tests (tests/e2e/test_crash_consistency.py) then prove that DEL and GC leave
nothing behind. ``sleep:SECONDS``: the process stops there that long, half-way through its
work, for a test to do something to it meanwhile (kill the fork server under its worker).
Both say so on stderr first, with the pid.

Cost when disabled: one membership test on a module-level frozenset, computed once at import
from ``os.environ``. A forked child (the fork server's worker, which takes its caller's
environment after the fork) recomputes it once, at its first failpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Final

__all__ = ["ENV", "active", "failpoint", "parse"]

ENV: Final = "PYCNI_FAILPOINTS"
_SLEEP: Final = "sleep:"


def _actions(text: str) -> dict[str, str]:
    """Failpoint name -> action, for the entries of ``text`` with a known action."""
    found: dict[str, str] = {}
    for item in text.replace(";", ",").split(","):
        name, _, action = item.strip().partition("=")
        action = action or "kill"
        if name and (action == "kill" or _seconds(action) is not None):
            found[name] = action
    return found


def _seconds(action: str) -> float | None:
    if not action.startswith(_SLEEP):
        return None
    try:
        seconds = float(action[len(_SLEEP) :])
    except ValueError:
        return None
    return seconds if 0 <= seconds < 3600 else None


def parse(text: str) -> frozenset[str]:
    """The failpoint names ``text`` enables; entries with an unknown action are ignored."""
    return frozenset(_actions(text))


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
    action = _actions(os.environ.get(ENV, "")).get(name, "kill")
    seconds = _seconds(action)
    what = f"sleeping {seconds:g} s" if seconds is not None else "SIGKILL"
    with contextlib.suppress(OSError, ValueError):  # stderr is gone: carry on anyway
        print(f"pycni: failpoint {name}: {what} pid {os.getpid()}", file=sys.stderr, flush=True)
    if seconds is not None:
        time.sleep(seconds)
        return
    os.kill(os.getpid(), signal.SIGKILL)
