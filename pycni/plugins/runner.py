"""How pycni runs its own plugins when it finds them on CNI_PATH: without an exec.

``pycni.cni`` runs plugin executables through the ``PluginRunner`` its caller passes (exec by
default, as libcni does). The callers on this side know pycni's own executables
(``executable.is_ours``: rendered for this very code, of a type in ``PLUGINS``): exec'ing one
would start an interpreter only to run ``skel.run`` of code this process has (or can import).
They run it instead, still through the protocol (the same environment, stdin bytes, stdout
JSON, stderr and exit status), and exec anything else:

- ``FORKED``: in a forked child (``forked``), with the timeout and process-group kill of the
  exec path. What a runtime that lives on uses (`pycni add`, the network manager, pycni-run).
- ``IN_PROCESS``: right here. Only for a process that is itself thrown away after one call
  (the ``pycni-run`` daemon's worker), where a fork costs more (~5 ms of copy-on-write faults
  and exit per plugin here) than the plugin itself: what the plugin does to the process cannot
  outlive the call, an exit or an exception becomes a status, a crash ends only that worker.
- ``DELEGATES``: what a plugin of ours passes to ``delegate``. Its IPAM, host-local, runs
  right here: it touches no process-global state (no environment, cwd, signal handlers or
  leftover descriptors: its store lock is an fd closed on the way out) and the store lock
  bounds every wait. Our other kinds run forked. The delegate's stderr is the plugin's own.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TextIO

from pycni.cni.runner import EXEC, Outcome
from pycni.plugins import PLUGINS
from pycni.plugins.executable import is_ours

__all__ = ["DELEGATES", "FORKED", "IN_PROCESS", "OursRunner"]

RunOurs = Callable[[str, bytes, Mapping[str, str], float], Outcome]


@dataclass(frozen=True, slots=True)
class OursRunner:
    """A ``PluginRunner``: our executables run by ``run_ours(kind, stdin, env, timeout)``,
    any other exec'd."""

    run_ours: RunOurs

    def run(
        self, binary: str, kind: str, *, stdin: bytes, env: Mapping[str, str], timeout: float
    ) -> Outcome:
        if kind in PLUGINS and is_ours(binary, kind):
            return self.run_ours(kind, stdin, env, timeout)
        return EXEC.run(binary, kind, stdin=stdin, env=env, timeout=timeout)

    def settle(self) -> None:
        """Every forked plugin that reported is waited for (if any was forked at all)."""
        forked = sys.modules.get("pycni.plugins.forked")
        if forked is not None:
            forked.reap()


def _forked(kind: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> Outcome:
    from pycni.plugins.forked import run_forked

    return run_forked(kind, stdin=stdin, env=env, timeout=timeout)


def _in_process(kind: str, stdin: bytes, env: Mapping[str, str], _timeout: float) -> Outcome:
    return _run_here(kind, stdin, env, None)


def _run_here(kind: str, stdin: bytes, env: Mapping[str, str], stderr: TextIO | None) -> Outcome:
    """``skel.run`` of our ``kind`` in this process. ``stderr`` None (``IN_PROCESS``): the
    plugin's stderr is captured into the Outcome and an exit is its status, as exec'd (skel.run
    catches Exception only). Otherwise (a delegate) it writes to ``stderr``, the Outcome
    carries none, and an exit ends the caller as well, as it would the caller's own code."""
    from pycni.cni import skel

    out, err = io.StringIO(), io.StringIO()  # err stays empty when stderr is given
    try:
        status = skel.run(
            PLUGINS[kind], env=dict(env), stdin=io.BytesIO(stdin), stdout=out,
            stderr=err if stderr is None else stderr,
        )
    except SystemExit as done:
        if stderr is not None:
            raise  # a delegate's exit is its caller's
        code = done.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
    return Outcome(status, out.getvalue().encode(), err.getvalue().encode())


# Our kinds a plugin runs as its delegate in-process (see the module's docstring).
_DELEGATED_HERE: Final = frozenset({"host-local"})


def _delegated(kind: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> Outcome:
    if kind not in _DELEGATED_HERE:
        from pycni.plugins.forked import run_forked

        return run_forked(kind, stdin=stdin, env=env, timeout=timeout, capture_stderr=False)
    return _run_here(kind, stdin, env, sys.stderr)


FORKED: Final = OursRunner(_forked)
IN_PROCESS: Final = OursRunner(_in_process)
DELEGATES: Final = OursRunner(_delegated)
