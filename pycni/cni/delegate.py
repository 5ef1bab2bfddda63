"""Delegated plugin execution (spec §4): a main plugin calls its IPAM plugin through CNI_PATH.

The delegate gets the caller's own stdin and CNI_* environment, with only CNI_COMMAND set to
the verb, exactly as the reference plugins do; plugins never import each other's modules.

Fast path: when the executable found on CNI_PATH is a pycni executable rendered for this very
code (``pycni install``), exec'ing it would start a new interpreter only to run
``skel.run(PLUGINS[kind])``. Instead that very call runs here, in this process, with the same
env mapping (passed explicitly: ``os.environ`` is not touched), the same stdin bytes and exit
status; its stdout goes into a buffer and its stderr is ours. That is safe because our IPAM
plugins touch no process-global state: no environment, cwd, signal handlers or leftover
descriptors (their store lock is an fd closed on the way out), and the store lock bounds every
wait. Our other kinds run in a forked child (``run_ours_forked``) that hands its stdout back
through a pipe; the runtime side (``pycni.cni.invoke``) runs our plugins the same way. Any
other executable (the reference plugins, another install) is exec'd, and so is everything
when ``PYCNI_DELEGATE_EXEC`` is set.
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
from typing import Any, Final, NoReturn

from pycni.cni import jsonio
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.types import Result

__all__ = [
    "DELEGATE_TIMEOUT",
    "ForkedTimeout",
    "delegate",
    "delegate_add",
    "find_in_path",
    "forget_imports_of_other_threads",
    "is_our_executable",
    "reap_forked",
    "run_ours_forked",
    "run_ours_in_process",
]

DELEGATE_TIMEOUT = 30.0
# The package root a rendered executable puts first on sys.path: ours, or not ours.
_OUR_ROOT: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MAX_EXECUTABLE: Final = 4096
MAX_FD: Final = 1 << 20  # above any RLIMIT_NOFILE: closerange uses close_range(2) anyway
# Our plugin kinds that run as a delegate in-process; any other of ours runs in a forked child.
_IN_PROCESS_KINDS: Final = frozenset({"host-local"})
# What a forked plugin must not inherit: handlers a runtime installs (signal forwarding) would
# otherwise run plugin-side. An exec'd Python plugin starts with these at their defaults (and
# SIGINT raising KeyboardInterrupt); SIGPIPE stays ignored, as Python's start-up leaves it.
_RESET_SIGNALS: Final = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
)


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


def delegate(
    kind: str, *, command: str, stdin: bytes, env: Mapping[str, str], path: tuple[str, ...]
) -> bytes:
    """Exec delegate ``kind`` for ``command``: its stdout, or its error as ``CNIError``."""
    binary = find_in_path(kind, path)
    child_env = {**env, "CNI_COMMAND": command}
    if not is_our_executable(binary, kind):
        returncode, stdout, stderr = _run_exec(binary, kind, command, stdin=stdin, env=child_env)
    elif kind in _IN_PROCESS_KINDS:
        returncode, stdout, stderr = _run_in_process(kind, stdin=stdin, env=child_env)
    else:
        returncode, stdout, stderr = _run_forked(kind, command, stdin=stdin, env=child_env)
    if stderr:
        sys.stderr.write(stderr.decode(errors="replace"))
    if returncode == 0:
        return stdout
    text = stdout.strip()
    try:
        doc = jsonio.loads(text) if text else None
    except ValueError:
        doc = None
    fallback = (text or stderr).decode(errors="replace").strip()
    failure = CNIError.from_dict(doc, fallback=fallback)
    failure.msg = f"{kind}: {failure.msg}"
    raise failure


def _run_exec(
    binary: str, kind: str, command: str, *, stdin: bytes, env: Mapping[str, str]
) -> tuple[int, bytes, bytes]:
    import subprocess  # ~3 ms: only for a delegate that is not ours

    try:
        proc = subprocess.run(
            [binary],
            input=stdin,
            env=env,
            capture_output=True,
            timeout=DELEGATE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise CNIError(ErrorCode.INTERNAL, f"delegate {kind} {command} timed out") from err
    except OSError as err:
        raise CNIError(ErrorCode.INTERNAL, f"cannot execute delegate {kind}", str(err)) from err
    return proc.returncode, proc.stdout, proc.stderr


def is_our_executable(binary: str, kind: str) -> bool:
    """True for `pycni install`'s rendering of ``kind`` whose import path starts with our code."""
    from pycni.plugins import PLUGINS

    if kind not in PLUGINS or os.environ.get("PYCNI_DELEGATE_EXEC"):
        return False
    try:
        with open(binary, "rb") as f:
            head = f.read(_MAX_EXECUTABLE + 1)
    except OSError:
        return False
    text = head.decode(errors="replace")
    return (
        len(head) <= _MAX_EXECUTABLE
        and f"\nsys.path[:0] = [{_OUR_ROOT!r}" in text
        and text.endswith(f'\nfrom pycni.launcher import launch\n\nlaunch("{kind}")\n')
    )


def _run_in_process(
    kind: str, *, stdin: bytes, env: Mapping[str, str]
) -> tuple[int, bytes, bytes]:
    """Run our ``kind`` right here, as its executable would: (status, stdout, b"")."""
    from pycni.cni import skel
    from pycni.plugins import PLUGINS

    out = io.StringIO()
    status = skel.run(
        PLUGINS[kind], env=dict(env), stdin=io.BytesIO(stdin), stdout=out, stderr=sys.stderr
    )
    return status, out.getvalue().encode(), b""


def run_ours_in_process(
    kind: str, *, stdin: bytes, env: Mapping[str, str]
) -> tuple[int, bytes, bytes]:
    """Our plugin ``kind`` right here: (status, stdout, stderr), as its executable would give.

    Only for a process that is itself thrown away after one call (the ``pycni-run`` daemon's
    worker): what the plugin does to the process cannot outlive the call, an exit or an
    exception becomes a status, and a crash ends only that call's worker."""
    from pycni.cni import skel
    from pycni.plugins import PLUGINS

    out, err = io.StringIO(), io.StringIO()
    try:
        status = skel.run(
            PLUGINS[kind], env=dict(env), stdin=io.BytesIO(stdin), stdout=out, stderr=err
        )
    except SystemExit as done:  # skel.run catches Exception only; exit is its status, as exec'd
        code = done.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
    return status, out.getvalue().encode(), err.getvalue().encode()


def _run_forked(
    kind: str, command: str, *, stdin: bytes, env: Mapping[str, str]
) -> tuple[int, bytes, bytes]:
    """Run our ``kind`` in a forked child, as its executable would: (status, stdout, b"").

    The child's stderr is ours (the exec path copies it there too)."""
    try:
        status, stdout, stderr = run_ours_forked(
            kind, command, stdin=stdin, env=env, timeout=DELEGATE_TIMEOUT, capture_stderr=False
        )
    except ForkedTimeout as err:
        raise CNIError(ErrorCode.INTERNAL, f"delegate {kind} {command} timed out") from err
    if status < 0:
        raise CNIError(ErrorCode.INTERNAL, f"delegate {kind} {command} killed by signal {-status}")
    return status, stdout, stderr


def run_ours_forked(
    kind: str,
    command: str,
    *,
    stdin: bytes,
    env: Mapping[str, str],
    timeout: float,
    capture_stderr: bool = True,
) -> tuple[int, bytes, bytes]:
    """Our plugin ``kind`` in a forked child, as its executable would run it: (status, stdout,
    stderr), the status negative (-signal) if it was killed, as subprocess reports it.

    What the exec path gives a plugin, the child gets too: ``env`` as its whole environment,
    the config as stdin (fd 0 is /dev/null, as it is at EOF), stdout (and stderr unless
    ``capture_stderr`` is False: then it is ours) as pipes, no other descriptor, default signal
    handlers and its own process group, so a timeout kills what it started as well. Whatever
    the plugin code does (exit, raise, crash, leave state behind) happens in the child: this
    process only reads two pipes and a wait status. Its module is imported here first, so a forked
    ADD and the DEL that follows share that cost (and a warm process pays it never).
    """
    from pycni.plugins import PLUGINS

    importlib.import_module(PLUGINS[kind].module)
    _reap_finished()
    pipes = [os.pipe() for _ in range(3 if capture_stderr else 2)]  # status, stdout[, stderr]
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its pipes and status
        _forked_child(kind, stdin=stdin, env=env, fds=[w for _, w in pipes])
    with contextlib.suppress(OSError):  # both sides set it: no window for killpg
        os.setpgid(pid, pid)
    for _, w in pipes:
        os.close(w)
    try:
        outputs = _read_all([r for r, _ in pipes], pid, timeout)
    except BaseException:  # the timeout, or the caller interrupted: no orphans
        _kill_group(pid)
        os.waitpid(pid, 0)
        raise
    finally:
        for r, _ in pipes:
            os.close(r)
    status = _status(pid, outputs[0])
    return status, outputs[1], outputs[2] if capture_stderr else b""


# Children that reported their status and closed their pipes but may still be exiting: their
# exit (unmapping a copy of a big warm heap, ~2 ms here) is not worth waiting for. Runtimes
# call plugins from several threads at once (parallel ADDs): the list has its own lock.
_unreaped: list[int] = []
_unreaped_lock = threading.Lock()


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


def reap_forked() -> None:
    """Wait for every forked plugin that reported but was left exiting. A runtime calls this
    once its whole operation is done (``Invoker``'s verbs do): no plugin process of it
    outlives it, not even as a zombie, and its chain never waited for each exit."""
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


class ForkedTimeout(CNIError):
    """A forked plugin ran past its timeout (it was killed with its process group)."""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def forget_imports_of_other_threads() -> None:
    """In a child just forked from a threaded parent: a module another thread was importing
    at the fork is half-made here, and its import lock is held by a thread that does not
    exist here, so importing it would wait forever (the soak test's plugins hung so, 120 s).
    Forget both: this child imports such a module afresh. CPython resets only its global
    import lock at fork, not the per-module ones (``importlib._bootstrap._module_locks``)."""
    from importlib import _bootstrap

    me = threading.get_ident()
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


def _forked_child(
    kind: str, *, stdin: bytes, env: Mapping[str, str], fds: list[int]
) -> NoReturn:
    """Run the plugin; write its stdout, then its status byte; close everything, exit."""
    status = 1
    try:
        forget_imports_of_other_threads()
        os.setpgid(0, 0)
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)  # a server's wakeup fd is not the plugin's
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
        from pycni.plugins import PLUGINS

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


def _read_all(fds: list[int], pid: int, timeout: float) -> list[bytes]:
    """Everything written to ``fds`` until each is at EOF; ForkedTimeout at the deadline."""
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
            raise ForkedTimeout(ErrorCode.INTERNAL, f"pid {pid} timed out", f"after {timeout}s")
        for fd, _ in events:
            chunk = os.read(fd, 65536)
            if chunk:
                chunks[fd].append(chunk)
            else:
                poller.unregister(fd)
                open_fds.discard(fd)
    return [b"".join(chunks[fd]) for fd in fds]


def delegate_add(
    kind: str, *, stdin: bytes, env: Mapping[str, str], path: tuple[str, ...]
) -> Result:
    out = delegate(kind, command="ADD", stdin=stdin, env=env, path=path)
    try:
        doc = jsonio.loads(out)
    except ValueError as err:
        raise CNIError(
            ErrorCode.DECODING_FAILURE, f"delegate {kind} printed no valid result", str(err)
        ) from err
    return Result.from_dict(doc, "ipam result.")
