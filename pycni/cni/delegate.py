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
wait. Plugins that would not be (``_FORKED_KINDS``) run in a forked child that hands its stdout
back through a pipe. Any other executable (the reference plugins, another install) is exec'd.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Final, NoReturn

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.types import Result

__all__ = ["DELEGATE_TIMEOUT", "delegate", "delegate_add", "find_in_path"]

DELEGATE_TIMEOUT = 30.0
# The package root a rendered executable puts first on sys.path: ours, or not ours.
_OUR_ROOT: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MAX_EXECUTABLE: Final = 4096
# Our plugin kinds that run as a delegate in-process; any other of ours runs in a forked child.
_IN_PROCESS_KINDS: Final = frozenset({"host-local"})


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
    if not _is_our_executable(binary, kind):
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
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    fallback = (text or stderr).decode(errors="replace").strip()
    failure = CNIError.from_dict(doc, fallback=fallback)
    failure.msg = f"{kind}: {failure.msg}"
    raise failure


def _run_exec(
    binary: str, kind: str, command: str, *, stdin: bytes, env: Mapping[str, str]
) -> tuple[int, bytes, bytes]:
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


def _is_our_executable(binary: str, kind: str) -> bool:
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


def _run_forked(
    kind: str, command: str, *, stdin: bytes, env: Mapping[str, str]
) -> tuple[int, bytes, bytes]:
    """Run our ``kind`` in a forked child, as its executable would: (status, stdout, b"").

    The child's stderr is ours (the exec path copies it there too)."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and exits
        os.close(read_end)
        _forked_child(kind, stdin=stdin, env=env, out_fd=write_end)
    os.close(write_end)
    try:
        data = _read_all(read_end, pid, f"delegate {kind} {command} timed out")
    finally:
        os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    if status < 0:
        raise CNIError(ErrorCode.INTERNAL, f"delegate {kind} {command} killed by signal {-status}")
    return status, data, b""


def _forked_child(kind: str, *, stdin: bytes, env: Mapping[str, str], out_fd: int) -> NoReturn:
    from pycni.cni import skel
    from pycni.plugins import PLUGINS

    status = 1
    try:
        os.environ.clear()
        os.environ.update(env)
        out = io.StringIO()
        status = skel.run(
            PLUGINS[kind], env=os.environ, stdin=io.BytesIO(stdin), stdout=out, stderr=sys.stderr
        )
        data = out.getvalue().encode()
        while data:
            data = data[os.write(out_fd, data) :]
        sys.stderr.flush()
    finally:
        os._exit(status)


def _read_all(fd: int, pid: int, timeout_msg: str) -> bytes:
    chunks: list[bytes] = []
    deadline = time.monotonic() + DELEGATE_TIMEOUT
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise CNIError(ErrorCode.INTERNAL, timeout_msg)
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def delegate_add(
    kind: str, *, stdin: bytes, env: Mapping[str, str], path: tuple[str, ...]
) -> Result:
    out = delegate(kind, command="ADD", stdin=stdin, env=env, path=path)
    try:
        doc = json.loads(out)
    except ValueError as err:
        raise CNIError(
            ErrorCode.DECODING_FAILURE, f"delegate {kind} printed no valid result", str(err)
        ) from err
    return Result.from_dict(doc, "ipam result.")
