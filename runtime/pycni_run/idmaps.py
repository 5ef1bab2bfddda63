"""``--userns``, ``--uidmap`` and ``--gidmap``: id mappings, checked and allocated (no kernel).

``--userns=host`` (the default) keeps the host's ids. ``--userns=auto[:size=N]`` takes a free
range of N ids (65536 by default) from the subordinate ids the runtime's user has in
``/etc/subuid`` and ``/etc/subgid`` (``userns_user``, podman's ``containers`` by default; the
files and the user are ``pycni.yaml`` settings): container id 0..N-1 -> that range. A range is
free when no other container's state records a mapping onto any of it, so two containers never
share one; it is recorded in the container's state and free again once the state is removed
(``rm``). ``--uidmap CONTAINER:HOST:SIZE`` (repeatable; ``--gidmap`` alike, and either alone
serves both) maps exactly that, within the subordinate ranges: this runtime maps only ids it
was given to map, and never the host's root.

Everything here is checked before anything is made: a malformed map, two maps overlapping on
either side, a map that leaves the container's root unmapped, or one outside the subordinate
ranges is a RunError.
"""

from __future__ import annotations

import contextlib
import itertools
import pwd
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pycni_run.errors import RunError

__all__ = [
    "DEFAULT_SIZE",
    "IdMap",
    "Mappings",
    "UsernsOptions",
    "first_free",
    "kernel_text",
    "parse_idmap",
    "parse_userns",
    "read_subids",
    "user_options",
    "within",
]

DEFAULT_SIZE: Final = 65536  # podman's and Docker's userns-remap size
MAX_ID: Final = (1 << 32) - 1  # (uid_t)-1 is no id: an id range ends at or below it
MAX_LINES: Final = 340  # the kernel's limit for one uid_map or gid_map (Linux >= 4.15)
Mode = Literal["host", "auto", "maps"]


@dataclass(frozen=True, slots=True)
class IdMap:
    """One line of uid_map/gid_map: ``size`` ids from ``container`` (inside) onto ``host``."""

    container: int
    host: int
    size: int

    def __str__(self) -> str:
        return f"{self.container}:{self.host}:{self.size}"

    @property
    def host_end(self) -> int:
        return self.host + self.size


@dataclass(frozen=True, slots=True, kw_only=True)
class UsernsOptions:
    """What the command line asked for (``host``: no user namespace of its own)."""

    mode: Mode = "host"
    size: int = DEFAULT_SIZE  # auto
    uid_map: tuple[IdMap, ...] = ()  # maps
    gid_map: tuple[IdMap, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Mappings:
    """A container's user namespace: its maps as written to the kernel and kept in its state."""

    mode: Mode
    uid_map: tuple[IdMap, ...]
    gid_map: tuple[IdMap, ...]

    @property
    def root(self) -> tuple[int, int]:
        """The host uid and gid of the container's root."""
        return _host_of_zero(self.uid_map), _host_of_zero(self.gid_map)

    def to_doc(self) -> dict[str, Any]:
        return {"Mode": self.mode, "UidMap": [str(m) for m in self.uid_map],
                "GidMap": [str(m) for m in self.gid_map]}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Mappings | None:
        """None for a state without a user namespace of its own."""
        if not doc or doc.get("Mode", "host") == "host":
            return None
        return cls(mode=doc["Mode"], uid_map=tuple(map(_parse_line, doc["UidMap"])),
                   gid_map=tuple(map(_parse_line, doc["GidMap"])))


def kernel_text(maps: Iterable[IdMap]) -> str:
    """What ``/proc/PID/uid_map`` takes, in one write: ``CONTAINER HOST SIZE`` per line."""
    return "".join(f"{m.container} {m.host} {m.size}\n" for m in maps)


def _host_of_zero(maps: Iterable[IdMap]) -> int:
    for m in maps:
        if m.container == 0:
            return m.host
    raise RunError("the container's root (id 0) is not mapped")  # refused while parsing


# ---------------------------------------------------------------------- the command line


def _parse_line(text: str) -> IdMap:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(text)
    container, host, size = map(int, parts)
    if size < 1 or container + size > MAX_ID or host + size > MAX_ID:
        raise ValueError(text)
    return IdMap(container, host, size)


def parse_idmap(items: Sequence[str], flag: str) -> tuple[IdMap, ...]:
    """``CONTAINER:HOST:SIZE`` items, each valid, none overlapping another on either side,
    the container's root among them."""
    try:
        maps = tuple(_parse_line(item) for item in items)
    except ValueError as err:
        raise RunError(f"invalid {flag} {err}: use CONTAINER:HOST:SIZE (decimal, SIZE >= 1, "
                       f"every id below {MAX_ID})") from None
    if len(maps) > MAX_LINES:
        raise RunError(f"too many {flag} ranges: the kernel takes at most {MAX_LINES}")
    for side in ("container", "host"):
        ordered = sorted(maps, key=lambda m: getattr(m, side))
        for a, b in itertools.pairwise(ordered):
            if getattr(a, side) + a.size > getattr(b, side):
                raise RunError(f"invalid {flag}: {a} and {b} overlap on the {side} side")
    if maps and not any(m.container == 0 for m in maps):
        raise RunError(f"invalid {flag}: nothing maps the container's root (id 0)")
    return maps


def parse_userns(
    mode: str, uidmap: Sequence[str] = (), gidmap: Sequence[str] = ()
) -> UsernsOptions:
    """``--userns host|auto|auto:size=N`` with any ``--uidmap``/``--gidmap``."""
    uids, gids = parse_idmap(uidmap, "--uidmap"), parse_idmap(gidmap, "--gidmap")
    name, _, option = mode.partition(":")
    if uids or gids:
        if name not in ("", "host"):
            raise RunError(f"conflicting options: --userns={mode} and --uidmap/--gidmap")
        return UsernsOptions(mode="maps", uid_map=uids or gids, gid_map=gids or uids)
    if name in ("", "host") and not option:
        return UsernsOptions()
    if name == "auto":
        return UsernsOptions(mode="auto", size=_auto_size(mode, option))
    raise RunError(f"invalid --userns {mode!r}: use host, auto or auto:size=N "
                   "(or give --uidmap/--gidmap)")


def _auto_size(mode: str, option: str) -> int:
    if not option:
        return DEFAULT_SIZE
    key, _, value = option.partition("=")
    if key != "size" or not value.isdigit() or not 1 <= int(value) < MAX_ID:
        raise RunError(f"invalid --userns {mode!r}: the only option of auto is size=N")
    return int(value)


# ---------------------------------------------------------------------- subordinate ids


def user_options(user: str) -> tuple[str, ...]:
    """The names a subid file may give the user by: its name, and its uid if it has one."""
    with contextlib.suppress(KeyError):
        return (user, str(pwd.getpwnam(user).pw_uid))
    return (user,)


def read_subids(path: str, user: str) -> list[tuple[int, int]]:
    """``(start, count)`` of every ``NAME:START:COUNT`` line of ``path`` for ``user``; an
    unreadable file gives none (the caller says what is missing)."""
    names = user_options(user)
    ranges: list[tuple[int, int]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in names and parts[1].isdigit() and parts[2].isdigit():
            start, count = int(parts[1]), int(parts[2])
            if count > 0 and start + count <= MAX_ID:
                ranges.append((start, count))
    return sorted(ranges)


def within(maps: Iterable[IdMap], ranges: Sequence[tuple[int, int]]) -> IdMap | None:
    """The first map whose host ids are not all inside ``ranges`` (adjacent ranges join);
    None if every one is."""
    merged: list[list[int]] = []
    for start, count in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + count)
        else:
            merged.append([start, start + count])
    for m in maps:
        if not any(lo <= m.host and m.host_end <= hi for lo, hi in merged):
            return m
    return None


def first_free(ranges: Sequence[tuple[int, int]], used: Iterable[tuple[int, int]],
               size: int) -> int | None:
    """The lowest start of ``size`` ids inside one of ``ranges`` that overlaps none of the
    ``used`` ``(start, end)`` intervals; None if no range has such a gap."""
    taken = sorted(used)
    for start, count in sorted(ranges):
        cursor, end = start, start + count
        for lo, hi in taken:
            if hi <= cursor or lo >= end:
                continue
            if lo >= cursor + size:
                break
            cursor = max(cursor, hi)
        if cursor + size <= end:
            return cursor
    return None
