"""``--user NAME|UID[:GROUP|GID]`` (or an image's ``User``): checked with the spec, resolved
inside the container (its /etc/passwd and /etc/group, after ``pivot_root`` or ``setns``: the
container's own files, as runc reads them), then taken just before exec.

As runc and Docker: a numeric uid needs no passwd entry (its group is then 0 unless given); a
name must have one; the supplementary groups are those /etc/group lists the user's name in.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from pycni_run.errors import RunError

__all__ = ["UserIds", "lookup", "parse_user", "switch"]

PASSWD: Final = "/etc/passwd"  # noqa: S105 - a path, not a password
GROUP: Final = "/etc/group"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?")
_MAX_ID: Final = (1 << 32) - 2  # (uid_t)-1 means "unchanged" to the kernel
_MAX_FILE: Final = 16 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class UserIds:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"


def _valid_part(text: str) -> bool:
    if text.isdigit():
        return int(text) <= _MAX_ID
    return bool(_NAME_RE.fullmatch(text)) and len(text) <= 256


def parse_user(text: str) -> str:
    """The ``--user`` value, syntax checked (``""`` = the image's, or root)."""
    user, sep, group = text.partition(":")
    if not text or (_valid_part(user) and (not sep or _valid_part(group))):
        return text
    raise RunError(f"invalid --user {text!r}: use NAME|UID[:GROUP|GID]")


def _entries(path: str) -> Iterator[list[str]]:
    """The colon-separated lines of a passwd/group file; none if it is missing. The file is
    the container's: a FIFO or a device there must not hang or feed the runtime."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    with open(fd, encoding="utf-8", errors="replace") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunError(f"{path} in the container is not a regular file")
        for line in f.read(_MAX_FILE).splitlines():
            if line.strip() and not line.startswith("#"):
                yield line.split(":")


def _passwd_entry(user: str, path: str) -> list[str] | None:
    for fields in _entries(path):
        if len(fields) >= 7 and (fields[0] == user or (user.isdigit() and fields[2] == user)):
            return fields
    return None


def _group_id(group: str, path: str) -> int:
    for fields in _entries(path):
        if len(fields) >= 3 and (fields[0] == group or (group.isdigit() and fields[2] == group)):
            return int(fields[2])
    if group.isdigit():
        return int(group)
    raise RunError(f"unable to find group {group}: no matching entries in group file")


def _member_of(name: str, path: str) -> tuple[int, ...]:
    return tuple(
        int(fields[2])
        for fields in _entries(path)
        if len(fields) >= 4 and fields[2].isdigit() and name in fields[3].split(",")
    )


def lookup(text: str, *, passwd: str = PASSWD, group: str = GROUP) -> UserIds:
    """In the container: ``NAME|UID[:GROUP|GID]`` as ids; RunError for an unknown name."""
    user, _, group_part = text.partition(":")
    entry = _passwd_entry(user, passwd)
    if entry is None and not user.isdigit():
        raise RunError(f"unable to find user {user}: no matching entries in passwd file")
    try:
        uid = int(entry[2]) if entry else int(user)
        gid = int(entry[3]) if entry else 0
    except ValueError:
        raise RunError(f"unable to read the passwd entry of {user}") from None
    if group_part:
        gid = _group_id(group_part, group)
    extra = _member_of(entry[0], group) if entry else ()
    return UserIds(uid=uid, gid=gid, groups=tuple(dict.fromkeys((gid, *extra))),
                   home=entry[5] if entry and entry[5] else "/")


def switch(ids: UserIds) -> None:
    """Groups, then gid, then uid (the order that keeps the right to change each). Leaving
    uid 0 makes the kernel clear the permitted, effective and ambient capability sets."""
    try:
        os.setgroups(list(ids.groups))
        os.setresgid(ids.gid, ids.gid, ids.gid)
        os.setresuid(ids.uid, ids.uid, ids.uid)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        raise RunError(f"cannot run as uid {ids.uid}, gid {ids.gid} (groups "
                       f"{', '.join(map(str, ids.groups)) or 'none'}): not mapped in the "
                       "container's user namespace") from None
