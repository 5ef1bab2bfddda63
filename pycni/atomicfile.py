"""Small state files written whole: temp file + rename, and the temp files of dead writers.

What host-local's store and portmap's host-port registry keep on disk is read by other
processes at any moment and written by processes that may be SIGKILLed at any point: a file
is replaced by rename, so a reader (and a writer killed midway) sees the old content or the
new, never an empty or half file. No fsync: the state lives on tmpfs, or describes kernel
objects a power cut ends as well. A temp file is named ``.<name>.<pid>.tmp`` next to its
file: every listing of real entries skips dot files, and whoever holds the directory's lock
may remove the leftovers of writers that died (``remove_leftovers``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Final

__all__ = ["TMP_SUFFIX", "is_temp", "remove_leftovers", "write"]

TMP_SUFFIX: Final = ".tmp"


def is_temp(name: str) -> bool:
    """Whether a directory entry is a writer's temp file, not a file of its own."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def write(path: str, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (``mode``, less the umask) by temp file + rename."""
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_leftovers(directory: str) -> None:
    """Remove the temp files in ``directory`` (the caller holds its lock: none is live).
    A missing directory has none; other errors are the caller's."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if is_temp(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
