"""What a layer tar may contain, decided from names alone (no file system access).

A member's name becomes a path relative to the layer's directory: ``.`` and empty components
are dropped (``./bin/sh`` is ``bin/sh``), an absolute name and ``..`` anywhere are refused
(Docker strips them silently; a layer that carries them was not made by an image builder).
Whiteouts are the OCI/AUFS names: ``.wh.NAME`` hides NAME of the layers below, and
``.wh..wh..opq`` everything below in its directory; other ``.wh..wh.`` names are AUFS
bookkeeping, skipped. A symlink's target is content (the container resolves it, from its own
root for an absolute one) unless a relative one climbs above the layer's root: that is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pycni_run.errors import RunError

__all__ = ["WHITEOUT_PREFIX", "MemberPath", "check_symlink_target", "member_path", "whiteout_of"]

WHITEOUT_PREFIX: Final = ".wh."
OPAQUE: Final = ".wh..wh..opq"
_AUFS_META: Final = ".wh..wh."
MAX_PATH: Final = 4096
MAX_COMPONENT: Final = 255


@dataclass(frozen=True, slots=True)
class MemberPath:
    parts: tuple[str, ...]  # () = the layer's root itself

    def __str__(self) -> str:
        return "/".join(self.parts) or "."

    @property
    def parent(self) -> MemberPath:
        return MemberPath(self.parts[:-1])


def member_path(name: str, layer: str) -> MemberPath:
    """The name of a tar member as a path inside the layer; RunError if it leaves it."""
    if "\x00" in name or len(name) > MAX_PATH:
        raise RunError(f"layer {layer}: bad member name {name[:80]!r}")
    if name.startswith("/"):
        raise RunError(f"layer {layer}: absolute path {name!r} in the layer")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise RunError(f"layer {layer}: path {name!r} leads out of the layer ('..')")
    if any(len(p) > MAX_COMPONENT for p in parts):
        raise RunError(f"layer {layer}: a component of {name[:80]!r} is longer than 255 bytes")
    return MemberPath(parts)


Whiteout = Literal["opaque", "file", "meta"]


def whiteout_of(path: MemberPath) -> tuple[Whiteout, MemberPath] | None:
    """(kind, what it hides) for a whiteout name: the directory made opaque, the path hidden,
    or AUFS metadata to skip; None for an ordinary member."""
    if not path.parts or not path.parts[-1].startswith(WHITEOUT_PREFIX):
        return None
    base = path.parts[-1]
    if base == OPAQUE:
        return "opaque", path.parent
    if base.startswith(_AUFS_META):
        return "meta", path
    hidden = base[len(WHITEOUT_PREFIX):]
    if hidden in ("", ".", ".."):
        return "meta", path
    return "file", MemberPath((*path.parent.parts, hidden))


def check_symlink_target(path: MemberPath, target: str, layer: str) -> None:
    """A relative target that climbs above the layer's root is refused (an absolute one is
    the container's business: it resolves from the container's root)."""
    if not target or "\x00" in target or len(target) > MAX_PATH:
        raise RunError(f"layer {layer}: symlink {path} has a bad target")
    if target.startswith("/"):
        return
    depth = len(path.parts) - 1  # the link's directory, below the layer's root
    for part in target.split("/"):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            raise RunError(f"layer {layer}: symlink {path} -> {target} points out of the layer")
