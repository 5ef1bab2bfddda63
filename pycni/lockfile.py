"""Advisory file locks (flock) with a bounded wait, for state shared by concurrent plugin calls."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode

__all__ = ["LOCK_DIR", "hold", "network_lock", "network_lock_path"]

LOCK_DIR: Final = "/run/pycni/locks"
_POLL: Final = 0.002


@contextlib.contextmanager
def hold(path: str, *, timeout: float = 30.0) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed).

    Bounded: after ``timeout`` seconds the caller gets code 11 (try again later) instead of
    hanging forever behind a wedged peer — the failure mode of unbounded xtables locks.
    """
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise CNIError(
                        ErrorCode.TRY_AGAIN_LATER, f"timed out waiting for lock {path}"
                    ) from err
                time.sleep(_POLL)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def network_lock(
    kind: str, name: str, *, timeout: float = 30.0
) -> contextlib.AbstractContextManager[None]:
    """The lock serialising changes to one shared host object (e.g. ``("bridge", "pycni0")``)."""
    return hold(network_lock_path(kind, name), timeout=timeout)


def network_lock_path(kind: str, name: str) -> str:
    """Where ``network_lock(kind, name)`` lives (removed with the object it guards)."""
    return os.path.join(LOCK_DIR, f"{kind}-{name}.lock")
