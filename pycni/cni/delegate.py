"""Delegated plugin execution (spec §4): a main plugin calls its IPAM plugin through CNI_PATH.

The delegate gets the caller's own stdin and CNI_* environment, with only CNI_COMMAND set to
the verb, exactly as the reference plugins do; plugins never import each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.types import Result

__all__ = ["DELEGATE_TIMEOUT", "delegate", "delegate_add", "find_in_path"]

DELEGATE_TIMEOUT = 30.0


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
    try:
        proc = subprocess.run(
            [binary],
            input=stdin,
            env=child_env,
            capture_output=True,
            timeout=DELEGATE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise CNIError(ErrorCode.INTERNAL, f"delegate {kind} {command} timed out") from err
    except OSError as err:
        raise CNIError(ErrorCode.INTERNAL, f"cannot execute delegate {kind}", str(err)) from err
    if proc.stderr:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
    if proc.returncode == 0:
        return proc.stdout
    text = proc.stdout.strip()
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    fallback = (text or proc.stderr).decode(errors="replace").strip()
    failure = CNIError.from_dict(doc, fallback=fallback)
    failure.msg = f"{kind}: {failure.msg}"
    raise failure


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
