"""Delegated plugin execution (spec §4): a main plugin calls its IPAM plugin through CNI_PATH.

The delegate gets the caller's own stdin and CNI_* environment, with only CNI_COMMAND set to
the verb, exactly as the reference plugins do; plugins never import each other's modules. It
is run by the runner the calling plugin passes (``pycni.cni.runner``; exec unless it passes
another: pycni's plugins pass theirs, ``pycni.plugins.runner.DELEGATES``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Final

from pycni.cni import jsonio
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.runner import EXEC, PluginRunner, PluginTimeout, find_in_path
from pycni.cni.types import Result

__all__ = ["DELEGATE_TIMEOUT", "delegate", "delegate_add"]

DELEGATE_TIMEOUT: Final = 30.0


def delegate(
    kind: str,
    *,
    command: str,
    stdin: bytes,
    env: Mapping[str, str],
    path: tuple[str, ...],
    runner: PluginRunner = EXEC,
) -> bytes:
    """Run delegate ``kind`` for ``command``: its stdout, or its error as ``CNIError``."""
    binary = find_in_path(kind, path)
    try:
        outcome = runner.run(binary, kind, stdin=stdin, env={**env, "CNI_COMMAND": command},
                             timeout=DELEGATE_TIMEOUT)
    except PluginTimeout as err:
        raise CNIError(ErrorCode.INTERNAL, f"delegate {kind} {command} timed out") from err
    if outcome.stderr:
        sys.stderr.write(outcome.stderr.decode(errors="replace"))
    if outcome.status < 0:
        raise CNIError(ErrorCode.INTERNAL,
                       f"delegate {kind} {command} killed by signal {-outcome.status}")
    if outcome.status == 0:
        return outcome.stdout
    text = outcome.stdout.strip()
    try:
        doc = jsonio.loads(text) if text else None
    except ValueError:
        doc = None
    fallback = (text or outcome.stderr).decode(errors="replace").strip()
    failure = CNIError.from_dict(doc, fallback=fallback)
    failure.msg = f"{kind}: {failure.msg}"
    raise failure


def delegate_add(
    kind: str,
    *,
    stdin: bytes,
    env: Mapping[str, str],
    path: tuple[str, ...],
    runner: PluginRunner = EXEC,
) -> Result:
    out = delegate(kind, command="ADD", stdin=stdin, env=env, path=path, runner=runner)
    try:
        doc = jsonio.loads(out)
    except ValueError as err:
        raise CNIError(
            ErrorCode.DECODING_FAILURE, f"delegate {kind} printed no valid result", str(err)
        ) from err
    return Result.from_dict(doc, "ipam result.")
