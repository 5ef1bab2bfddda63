"""A worker becomes its caller: stdio, namespaces, cwd, umask and environment.

What the worker then runs (a plugin's ``skel.run``, ``pycni-run``'s ``cli.main``) sees exactly
what it would have seen had the caller run it in-process: the caller's stdin, stdout and
stderr, its namespaces (the mount namespace last: from there on paths, ``/proc`` and
``/run/netns`` are the caller's), its cwd, umask and environment. The server's logging is let
go of: code that logs in the worker logs as it would in a fresh interpreter.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Sequence

from pycni.linux import nscalls

__all__ = ["JoinError", "become_caller"]


class JoinError(OSError):
    """A namespace of the caller's could not be joined (the worker runs nothing then)."""


def become_caller(
    *,
    stdio: Sequence[int],
    namespaces: Sequence[tuple[int, int]],
    cwd: bytes,
    env: Iterable[tuple[bytes, bytes]],
    umask: int | None = None,
    server_log: logging.Logger | None = None,
) -> None:
    """In a fresh worker: ``stdio`` (stdin, stdout, stderr descriptors) on 0-2 first, so
    that what fails after is reported to the caller; then each of ``namespaces`` (descriptor,
    ``CLONE_NEW*``) joined in order and closed (``JoinError``), ``cwd`` (``/`` if it is gone
    or hidden from there), ``umask`` and ``env`` as the whole environment."""
    if server_log is not None:
        for handler in list(server_log.handlers):
            server_log.removeHandler(handler)
        server_log.propagate = True
    _install_stdio(stdio)
    _join(namespaces)
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")  # the caller's cwd is gone or hidden: what it would get in "/"
    if umask is not None:
        os.umask(umask)
    os.environ.clear()
    for key, value in env:
        os.environb[key] = value


def _install_stdio(stdio: Sequence[int]) -> None:
    # Received descriptors are >= 3 (servers keep 0-2 open), so dup2 cannot clobber them.
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    for fd in stdio:
        os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - lives until exit
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )


def _join(namespaces: Sequence[tuple[int, int]]) -> None:
    try:
        for fd, nstype in namespaces:
            nscalls.setns(fd, nstype)
    except OSError as err:
        raise JoinError(err.errno, f"cannot join the caller's namespaces: {err}") from err
    finally:
        for fd, _ in namespaces:
            os.close(fd)
