"""Running one plugin executable: found on CNI_PATH, then run by a ``PluginRunner``.

Both sides of the protocol run plugins: a runtime its network's chain (``invoke.Invoker``), a
plugin its IPAM delegate (``delegate``). Each is handed the runner its caller chose; the
default is libcni's, ``EXEC``: the executable started with the request's environment and
stdin, in its own process group (a timeout kills what the plugin started too, a shell plugin's
``sleep`` or a helper, which would otherwise live on holding its pipes), "text file busy" (a
plugin being installed) retried as libcni does. A caller that knows some executables better
(``pycni.plugins.runner``: pycni's own, run forked or in-process) passes its own runner; which
executables are its own is its registry's business, never this package's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from pycni.cni.errors import CNIError, ErrorCode

__all__ = ["EXEC", "ExecRunner", "Outcome", "PluginRunner", "PluginTimeout", "find_in_path"]

TEXT_BUSY_RETRIES: Final = 6  # libcni retries "text file busy" (a plugin being installed) too


@dataclass(frozen=True, slots=True)
class Outcome:
    """What running a plugin gave: its exit status (negative: killed by that signal, as
    subprocess reports it), its stdout, and its stderr (b"" if it went to ours). (Not a
    ``NamedTuple``: with string annotations that compiles each field's type, ~1 ms of a
    one-shot plugin's start; a dataclass's methods come from ``pycni.codecache``.)"""

    status: int
    stdout: bytes
    stderr: bytes


class PluginTimeout(Exception):
    """The plugin ran past its timeout; it was killed with its process group."""


class PluginRunner(Protocol):
    """How a plugin executable is run for one verb."""

    def run(
        self, binary: str, kind: str, *, stdin: bytes, env: Mapping[str, str], timeout: float
    ) -> Outcome:
        """Run ``binary`` (of plugin type ``kind``) with ``env`` as its whole environment and
        ``stdin``; ``PluginTimeout`` past ``timeout``, ``CNIError`` if it cannot be started."""
        ...

    def settle(self) -> None:
        """The caller's whole operation (a chain's verb) is done: nothing it ran may outlive
        it, not even as a zombie."""
        ...


class ExecRunner:
    """libcni's way: exec the executable (see the module's docstring)."""

    def run(
        self, binary: str, kind: str, *, stdin: bytes, env: Mapping[str, str], timeout: float
    ) -> Outcome:
        for attempt in range(TEXT_BUSY_RETRIES):
            try:
                return _exec_once(binary, stdin=stdin, env=env, timeout=timeout)
            except OSError as err:
                if err.errno != errno.ETXTBSY or attempt == TEXT_BUSY_RETRIES - 1:
                    raise CNIError(ErrorCode.INTERNAL, f"cannot execute {binary}",
                                   str(err)) from err
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def settle(self) -> None:
        """Every exec'd plugin was waited for already."""


EXEC: Final = ExecRunner()


def _exec_once(binary: str, *, stdin: bytes, env: Mapping[str, str], timeout: float) -> Outcome:
    import subprocess  # ~3 ms of imports: not on the path of a plugin that never execs one

    with subprocess.Popen(
        [binary],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        process_group=0,
    ) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except BaseException as failure:  # the timeout, or the caller interrupted: no orphans
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if isinstance(failure, subprocess.TimeoutExpired):
                raise PluginTimeout(f"{binary} ran past {timeout}s") from failure
            raise
    return Outcome(proc.returncode, out, err)


def find_in_path(kind: str, path: tuple[str, ...]) -> str:
    """The first executable ``<dir>/<kind>`` on ``path`` (CNI_PATH), as libcni looks it up."""
    if not kind or "/" in kind or "\\" in kind or kind in (".", ".."):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "invalid plugin type", repr(kind))
    for directory in path:
        candidate = os.path.join(directory, kind)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        f"failed to find plugin {kind!r}",
        f"searched CNI_PATH {list(path)}",
    )
