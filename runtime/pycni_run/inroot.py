"""Paths inside a container's root, resolved as the container itself will see them.

Before ``pivot_root`` the runtime writes into the container's tree with the host's root as
``/``: an image's symlink ``/etc -> /etc`` (or ``/data -> ../../..``) must never send a mount
or a write to the host. ``resolve`` walks one component at a time without following anything
(``lstat``), reads each symlink it meets and goes on from the container's root for an absolute
target, as ``chroot`` would; a ``..`` that would climb above the root is refused. What it
returns is a host path under ``root`` with no symlink left in it, so the kernel's own walk of
it goes exactly where this one went (nothing else writes into the tree before it starts).
"""

from __future__ import annotations

import os
import stat
from collections import deque
from typing import Final, Literal

from pycni_run.errors import RunError

__all__ = ["resolve"]

MAX_SYMLINKS: Final = 40  # the kernel's own limit for one walk
Create = Literal["dir", "file"] | None


def _make(parent: str, name: str, kind: Create, last: bool) -> None:
    if kind == "file" and last:
        os.close(os.open(os.path.join(parent, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    elif kind is not None:
        os.mkdir(os.path.join(parent, name), 0o755)
    else:
        raise FileNotFoundError


def resolve(root: str, path: str, *, create: Create = None) -> str:
    """``path`` (as the container names it) under ``root``, symlinks resolved inside the root.
    Missing components are made (directories; the last one a file if ``create="file"``) or,
    without ``create``, RunError. RunError if a symlink or ``..`` leads out of the root."""
    todo = deque(path.split("/"))
    walked: list[str] = []  # real directories below root, every one checked
    links = 0
    while todo:
        name = todo.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            if not walked:
                raise RunError(f"{path}: leads out of the container's root (through '..')")
            walked.pop()
            continue
        parent = os.path.join(root, *walked)
        try:
            st = os.lstat(os.path.join(parent, name))
        except FileNotFoundError:
            try:
                _make(parent, name, create, last=not todo)
            except FileNotFoundError:
                raise RunError(f"{path}: no such file or directory in the container") from None
            st = os.lstat(os.path.join(parent, name))
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise RunError(f"{path}: too many levels of symbolic links in the container")
            target = os.readlink(os.path.join(parent, name))
            if target.startswith("/"):
                walked = []  # an absolute link means the container's root, never the host's
            todo.extendleft(reversed(target.split("/")))
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise RunError(f"{path}: {'/'.join([*walked, name])} is not a directory")
        walked.append(name)
    return os.path.join(root, *walked)
