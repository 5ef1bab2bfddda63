"""Kernel parameters under ``/proc/sys``: read, write, ensure. Standard library only.

Keys follow sysctl(8): ``net.ipv4.ip_forward`` (dots separate) or ``net/ipv4/ip_forward``
(slashes separate). Interface names may contain dots (``eth0.100``), so:

- a key whose first separator is ``/`` is a path: ``net/ipv4/conf/eth0.100/rp_filter``;
- a key whose first separator is ``.`` uses dots, and any ``/`` in it stands for a literal dot
  (sysctl(8)'s swap): ``net.ipv4.conf.eth0/100.rp_filter``.

``conf_key`` builds the path form for per-interface keys, which is always safe.

Everything under ``/proc/sys/net`` belongs to the network namespace of the calling *thread* at
open time: wrap calls in ``pycni.net.netns.enter(handle)`` to act inside a container. Files
are read and written with plain system calls: a text file object costs four more per open
(fstat, ioctl, two lseeks), and an ADD touches three keys.
"""

from __future__ import annotations

import os
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode

__all__ = [
    "PROC_SYS",
    "conf_key",
    "ensure",
    "path_for",
    "read",
    "write",
]

PROC_SYS: Final = "/proc/sys"
_READ_SIZE: Final = 4096


def _invalid(key: str, why: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid sysctl key {key!r}", why)


def _split(key: str) -> list[str]:
    """The path components of ``key``, per the convention in the module docstring."""
    if key.startswith(PROC_SYS + "/"):
        return key[len(PROC_SYS) + 1 :].split("/")
    slash, dot = key.find("/"), key.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return key.split("/")
    # Dotted form: "/" marks a dot inside a component (sysctl(8) swaps the two).
    return [part.replace("/", ".") for part in key.split(".")]


def path_for(key: str) -> str:
    """The file under ``/proc/sys`` for ``key``; ``CNIError`` code 7 for anything that could
    point elsewhere (``..``, ``.``, empty components, NUL, a leading ``/`` other than /proc/sys)."""
    if not key or "\0" in key:
        raise _invalid(key, "empty or contains NUL")
    if key.startswith("/") and not key.startswith(PROC_SYS + "/"):
        raise _invalid(key, f"absolute paths must be under {PROC_SYS}")
    parts = _split(key)
    for part in parts:
        if part in ("", ".", ".."):
            raise _invalid(key, "empty, '.' or '..' component")
    return "/".join([PROC_SYS, *parts])


def conf_key(family: str, ifname: str, name: str) -> str:
    """``net/<family>/conf/<ifname>/<name>`` in path form, correct for names with dots."""
    if family not in ("ipv4", "ipv6"):
        raise _invalid(f"{family}/{ifname}/{name}", "family must be ipv4 or ipv6")
    if "/" in ifname or "/" in name:
        raise _invalid(f"{family}/{ifname}/{name}", "'/' in interface or parameter name")
    return f"net/{family}/conf/{ifname}/{name}"


def read(key: str) -> str:
    """The value of ``key`` without the trailing newline."""
    path = path_for(key)
    chunks = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            while chunk := os.read(fd, _READ_SIZE):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as err:
        raise CNIError(ErrorCode.IO_FAILURE, f"read sysctl {key} failed", str(err)) from err
    return b"".join(chunks).decode("ascii").rstrip("\n")


def write(key: str, value: str | int) -> None:
    """Write ``value`` to ``key`` in one write: /proc/sys reports a rejected value from it,
    and that error must reach the caller as ``CNIError``."""
    path = path_for(key)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode("ascii"))
        finally:
            os.close(fd)
    except OSError as err:
        raise CNIError(
            ErrorCode.IO_FAILURE, f"write sysctl {key}={value} failed", str(err)
        ) from err


def ensure(key: str, value: str | int) -> bool:
    """Write ``value`` unless ``key`` already holds it; True if a write happened.

    Values compare by whitespace-separated fields, so "4096\\t131072" equals "4096 131072".
    """
    if read(key).split() == str(value).split():
        return False
    write(key, value)
    return True
