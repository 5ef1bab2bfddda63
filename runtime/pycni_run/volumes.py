"""``-v HOST:CTR[:ro]``, ``--tmpfs PATH[:OPTS]`` and ``--read-only``.

Parsed and checked with the rest of the spec (a bind source must exist: podman's rule, not
Docker's habit of making a missing one). The container's init mounts them in its own mount
namespace after its /etc files are written and before ``pivot_root``: each target resolved
inside the new root (``inroot``: an image's symlink cannot send a mount to a host path, and
one that leads out of the root is refused), parents before children, bind mounts recursive
(``rbind``) and remounted read-only for ``ro`` (the top mount: submounts keep their own flags).
Then, for ``--read-only``, the root itself is remounted read-only: only the volumes, the
tmpfs mounts and the runtime's own /dev, /dev/shm, /proc stay writable.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pycni.linux import mountcalls
from pycni_run import inroot
from pycni_run.errors import RunError

__all__ = [
    "Mount",
    "mount_all",
    "parse_tmpfs",
    "parse_volume",
    "remount_readonly",
    "validate_mounts",
]

_FLAG_OPTIONS: Final = {
    "nosuid": (mountcalls.MS_NOSUID, True),
    "suid": (mountcalls.MS_NOSUID, False),
    "nodev": (mountcalls.MS_NODEV, True),
    "dev": (mountcalls.MS_NODEV, False),
    "noexec": (mountcalls.MS_NOEXEC, True),
    "exec": (mountcalls.MS_NOEXEC, False),
    "ro": (mountcalls.MS_RDONLY, True),
    "rw": (mountcalls.MS_RDONLY, False),
}
_DATA_OPTIONS: Final = {
    "size": re.compile(r"\d+[kmg%]?"),
    "nr_inodes": re.compile(r"\d+[kmg]?"),
    "mode": re.compile(r"[0-7]{3,4}"),
    "uid": re.compile(r"\d+"),
    "gid": re.compile(r"\d+"),
}
# Docker's defaults for --tmpfs: no suid, no devices, no exec; world-writable and sticky.
_TMPFS_FLAGS: Final = mountcalls.MS_NOSUID | mountcalls.MS_NODEV | mountcalls.MS_NOEXEC
_TMPFS_MODE: Final = "mode=1777"
_RESERVED: Final = ("/proc", "/sys", "/dev")
_KEPT_FLAGS: Final = mountcalls.MS_NOSUID | mountcalls.MS_NODEV | mountcalls.MS_NOEXEC


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    kind: Literal["bind", "tmpfs"]
    target: str  # absolute and normalized, as the container names it
    source: str = ""  # the host path of a bind mount
    read_only: bool = False
    flags: int = 0  # tmpfs: MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY as asked
    data: str = ""  # tmpfs: size=..,mode=..

    def to_doc(self) -> dict[str, Any]:
        """As Docker's ``inspect`` shows a mount."""
        doc: dict[str, Any] = {"Type": self.kind, "Destination": self.target,
                               "RW": not self.read_only}
        if self.kind == "bind":
            doc["Source"] = self.source
        else:
            doc["Options"] = self.data
        return doc


def _target(text: str, flag: str, item: str) -> str:
    if not text.startswith("/"):
        raise RunError(f"invalid {flag} {item!r}: the container path must be absolute")
    target = os.path.normpath(text)
    if target.startswith("//"):
        target = target[1:]  # normpath keeps a leading "//" (POSIX allows it to differ)
    if target == "/":
        raise RunError(f"invalid {flag} {item!r}: cannot mount over the container's /")
    if any(target == r or target.startswith(r + "/") for r in _RESERVED):
        raise RunError(f"invalid {flag} {item!r}: {target} is the runtime's own mount")
    return target


def parse_volume(item: str) -> Mount:
    """``HOST:CTR[:ro|rw]``: HOST absolute and existing (named volumes are not supported)."""
    parts = item.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise RunError(f"invalid -v {item!r}: use HOST:CTR[:ro]")
    source, target = parts[0], _target(parts[1], "-v", item)
    if not source.startswith("/"):
        raise RunError(f"invalid -v {item!r}: named volumes are not supported, "
                       "give an absolute host path")
    options = parts[2].split(",") if len(parts) == 3 else []
    unknown = [o for o in options if o not in ("ro", "rw")]
    if unknown or len(options) > 1:
        raise RunError(f"invalid -v {item!r}: the only options are ro and rw")
    if not os.path.exists(source):
        raise RunError(f"invalid -v {item!r}: bind source path does not exist: {source}")
    return Mount(kind="bind", target=target, source=os.path.realpath(source),
                 read_only=options == ["ro"])


def parse_tmpfs(item: str) -> Mount:
    """``PATH[:OPTS]``, OPTS among ro, rw, [no]suid, [no]dev, [no]exec, size=, nr_inodes=,
    mode=, uid=, gid= (Docker's defaults: nosuid, nodev, noexec, mode=1777)."""
    path, _, opts = item.partition(":")
    target = _target(path, "--tmpfs", item)
    flags, data = _TMPFS_FLAGS, []
    for option in filter(None, opts.split(",")):
        key, sep, value = option.partition("=")
        if not sep and key in _FLAG_OPTIONS:
            bit, on = _FLAG_OPTIONS[key]
            flags = flags | bit if on else flags & ~bit
        elif sep and key in _DATA_OPTIONS and _DATA_OPTIONS[key].fullmatch(value):
            data.append(option)
        else:
            raise RunError(f"invalid --tmpfs {item!r}: unknown or malformed option {option!r}")
    if not any(d.startswith("mode=") for d in data):
        data.append(_TMPFS_MODE)
    return Mount(kind="tmpfs", target=target, read_only=bool(flags & mountcalls.MS_RDONLY),
                 flags=flags, data=",".join(data))


def validate_mounts(mounts: Iterable[Mount]) -> None:
    seen: set[str] = set()
    for m in mounts:
        if m.target in seen:
            raise RunError(f"duplicate mount point: {m.target}")
        seen.add(m.target)


# ---------------------------------------------------------------------- in the init


def _bind(root: str, m: Mount, tree: int | None) -> None:
    """``tree``: the source as a detached mount the runtime cloned (a user namespace's init
    may not reach the source's path), already read-only if asked."""
    is_dir = stat.S_ISDIR(os.stat(tree).st_mode) if tree is not None else os.path.isdir(m.source)
    target = inroot.resolve(root, m.target, create="dir" if is_dir else "file")
    if tree is not None:
        mountcalls.attach_tree(tree, target)
        return
    mountcalls.mount(m.source, target, None, mountcalls.MS_BIND | mountcalls.MS_REC)
    if m.read_only:
        remount_readonly(target)


def _tmpfs(root: str, m: Mount) -> None:
    target = inroot.resolve(root, m.target, create="dir")
    mountcalls.mount("tmpfs", target, "tmpfs", m.flags, m.data)


def remount_readonly(path: str) -> None:
    """The mount at ``path`` read-only. A bind remount must repeat the flags it keeps
    (proc's nosuid, nodev, noexec): without them it would clear them."""
    kept = os.statvfs(path).f_flag & _KEPT_FLAGS
    flags = mountcalls.MS_BIND | mountcalls.MS_REMOUNT | mountcalls.MS_RDONLY | kept
    mountcalls.mount(None, path, None, flags)


def mount_all(root: str, mounts: Sequence[Mount], *, read_only: bool, workdir: str,
              trees: Mapping[str, int] | None = None) -> None:
    """Before the pivot: every volume and tmpfs (parents first), then ``--read-only`` (the
    working directory made first, as a writable root would have it made after the pivot).
    ``trees``: each volume's source as a detached mount, by target (``detached``)."""
    for m in sorted(mounts, key=lambda m: m.target.count("/")):
        try:
            if m.kind == "bind":
                _bind(root, m, None if trees is None else trees[m.target])
            else:
                _tmpfs(root, m)
        except (OSError, RunError) as err:
            reason = err.strerror if isinstance(err, OSError) else str(err)
            raise RunError(f"cannot mount {m.source or 'tmpfs'} on {m.target}: {reason}") from err
    if read_only:
        inroot.resolve(root, workdir, create="dir")
        remount_readonly(root)
