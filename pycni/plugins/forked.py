"""One of our plugins run in a forked child, as its executable would run it.

A warm process (the ``pycni-run`` daemon's worker, `pycni add`, a network manager) then pays a
fork, not an interpreter start, per plugin. What the exec path gives a plugin, the child gets
too: its environment as its whole environment, the config as stdin (fd 0 is /dev/null, as it
is at EOF), stdout (and stderr, unless it is the caller's) as pipes, no other descriptor,
signal handling as a fresh interpreter has it (``pycni.warmfork.child.reset_child``) and its
own process group, so a timeout kills what it started as well. Whatever the plugin code does
(exit, raise, crash, leave state behind) happens in the child: the caller only reads the
pipes and a status. Its module is imported here first, so a forked ADD and the DEL that
follows share that cost (and a warm process pays it never).

A child that reported its status is not waited for (its exit, unmapping a copy of a big warm
heap, takes ~2 ms here): ``reap`` waits for them all once the caller's operation is done.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Final, NoReturn

from pycni.cni.runner import Outcome, PluginTimeout
from pycni.plugins import PLUGINS
from pycni.warmfork.child import forget_imports_of_other_threads, reset_child

__all__ = ["reap", "run_forked"]

MAX_FD: Final = 1 << 20  # above any RLIMIT_NOFILE: closerange uses close_range(2) anyway

# Children that reported their status and closed their pipes but may still be exiting.
# Runtimes call plugins from several threads at once (parallel ADDs): the list has its lock.
_unreaped: list[int] = []
_unreaped_lock = threading.Lock()


def run_forked(
    kind: str,
    *,
    stdin: bytes,
    env: Mapping[str, str],
    timeout: float,
    capture_stderr: bool = True,
) -> Outcome:
    """Our plugin ``kind`` in a forked child (see the module's docstring); its stderr is
    this process's unless ``capture_stderr``. ``PluginTimeout`` past ``timeout``."""
    importlib.import_module(PLUGINS[kind].module)
    _reap_finished()
    pipes = [os.pipe() for _ in range(3 if capture_stderr else 2)]  # status, stdout[, stderr]
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its pipes and status
        _child(kind, stdin=stdin, env=env, fds=[w for _, w in pipes])
    with contextlib.suppress(OSError):  # both sides set it: no window for killpg
        os.setpgid(pid, pid)
    for _, w in pipes:
        os.close(w)
    try:
        outputs = _read_all([r for r, _ in pipes], timeout)
    except BaseException:  # the timeout, or the caller interrupted: no orphans
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        for r, _ in pipes:
            os.close(r)
    return Outcome(_status(pid, outputs[0]), outputs[1], outputs[2] if capture_stderr else b"")


def _status(pid: int, reported: bytes) -> int:
    """The status the child reported (it is then reaped later), else its wait status."""
    if len(reported) == 1:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                with _unreaped_lock:
                    _unreaped.append(pid)
        return reported[0]
    _, wait_status = os.waitpid(pid, 0)  # it died before reporting: crashed, killed, exited
    return os.waitstatus_to_exitcode(wait_status)


def reap() -> None:
    """Wait for every forked plugin that reported but was left exiting: no plugin process
    of the caller's outlives its operation, not even as a zombie."""
    with _unreaped_lock:
        for pid in _unreaped:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        _unreaped.clear()


def _reap_finished() -> None:
    with _unreaped_lock:
        for pid in list(_unreaped):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            _unreaped.remove(pid)


def _child(kind: str, *, stdin: bytes, env: Mapping[str, str], fds: list[int]) -> NoReturn:
    """Run the plugin; write its stdout, then its status byte; close everything, exit."""
    status = 1
    try:
        forget_imports_of_other_threads()
        os.setpgid(0, 0)
        reset_child()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(fds[1], 1)
        if len(fds) > 2:
            os.dup2(fds[2], 2)
        os.dup2(fds[0], 3)
        os.closerange(4, MAX_FD)  # what subprocess's close_fds gives an exec'd plugin (but 3)
        # An exec'd plugin's sys.stderr is fd 2: the parent's may be any object (a runtime's
        # logger, pytest's capture) on a descriptor just closed.
        sys.stderr = open(  # noqa: SIM115 - lives until this process exits
            2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
        )
        from pycni.cni import skel

        os.environ.clear()
        os.environ.update(env)
        out = io.StringIO()
        status = skel.run(
            PLUGINS[kind], env=os.environ, stdin=io.BytesIO(stdin), stdout=out, stderr=sys.stderr
        )
        data = out.getvalue().encode()
        while data:
            data = data[os.write(1, data) :]
        sys.stderr.flush()
        os.write(3, bytes([status & 0xFF]))
    finally:
        os.closerange(0, MAX_FD)  # EOF for the runtime now, before this exit's teardown
        os._exit(status)


def _read_all(fds: list[int], timeout: float) -> list[bytes]:
    """Everything written to ``fds`` until each is at EOF; PluginTimeout at the deadline."""
    chunks: dict[int, list[bytes]] = {fd: [] for fd in fds}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    open_fds = set(fds)
    while open_fds:
        remaining = deadline - time.monotonic()
        events = poller.poll(max(0, int(remaining * 1000))) if remaining > 0 else []
        if not events:
            raise PluginTimeout(f"ran past {timeout}s")
        for fd, _ in events:
            chunk = os.read(fd, 65536)
            if chunk:
                chunks[fd].append(chunk)
            else:
                poller.unregister(fd)
                open_fds.discard(fd)
    return [b"".join(chunks[fd]) for fd in fds]
