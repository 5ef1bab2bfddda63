"""What a process forked from a warm parent does first, written once.

``reset_child``: a fork of a server, a runtime or a threaded caller starts out as a fresh
interpreter would, with one list of signals (``RESET_SIGNALS``) back at their defaults and
SIGINT raising KeyboardInterrupt again: what its parent installed (a server's stop through
its wakeup fd, a runtime's signal forwarding, a SIGCHLD handler) must not run in it. SIGPIPE
stays ignored, as Python's start-up leaves it. ``reset_for_exec`` is the same list for a
process about to exec something else (which keeps ignored signals and the mask across exec).

``forget_imports_of_other_threads``: a fork of a threaded parent (a runtime calling plugins
from several threads) must not wait on an import lock held by a thread that is not there.

``fork_with_channel``: the one way the fork server and the runtime daemon start a child they
watch through a pidfd, with a channel back to it.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, Final, NoReturn

__all__ = [
    "RESET_SIGNALS",
    "die_with_parent",
    "forget_imports_of_other_threads",
    "fork_with_channel",
    "reset_child",
    "reset_for_exec",
]

RESET_SIGNALS: Final = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
)


def reset_child() -> None:
    """Signal handling as a fresh interpreter has it (see the module's docstring)."""
    signal.set_wakeup_fd(-1)  # the parent's wakeup fd is not the child's
    for signum in RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def reset_for_exec() -> None:
    """Before an exec: what exec does not reset, an empty signal mask and no ignored signal
    (SIGPIPE included: the program exec'd is not Python)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for signum in (*RESET_SIGNALS, signal.SIGINT, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)


def die_with_parent(parent: int) -> None:
    """SIGKILL as this process's parent-death signal: a parent that dies (SIGKILL, OOM) takes
    it along. Exits at once if ``parent`` died before the signal was set."""
    from pycni.linux import nscalls  # ctypes: only where it is used

    nscalls.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


def forget_imports_of_other_threads() -> None:
    """In a child just forked from a threaded parent: a module another thread was importing
    at the fork is half-made here, and its import lock is held by a thread that does not
    exist here, so importing it would wait forever (the soak test's plugins hung so, 120 s).
    Forget both: this child imports such a module afresh. CPython resets only its global
    import lock at fork, not the per-module ones (``importlib._bootstrap._module_locks``)."""
    from importlib import _bootstrap

    me = _thread.get_ident()
    locks: dict[str, Any] = getattr(_bootstrap, "_module_locks", {})
    for name, ref in list(locks.items()):
        lock = ref()
        owner = getattr(lock, "owner", None)
        if owner is None or owner == me:
            continue
        locks.pop(name, None)
        module = sys.modules.get(name)
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            del sys.modules[name]


def fork_with_channel(
    child: Callable[[socket.socket], NoReturn], *, own_group: bool = False
) -> tuple[int, int, socket.socket]:
    """Fork; the child runs ``child(its end of a SEQPACKET socketpair)`` and never returns.
    The parent gets (pid, pidfd, its end). ``own_group``: the child leads its own process
    group (set on both sides, so there is no window for a ``killpg`` to miss it)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        raise
    if pid == 0:  # pragma: no cover - the child reports through its channel and exit
        if own_group:
            os.setpgid(0, 0)
        ours.close()
        child(theirs)
    theirs.close()
    if own_group:
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        ours.close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return pid, pidfd, ours
