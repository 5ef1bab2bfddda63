"""The typed seam around pyroute2's ``IPRoute`` API: opening a handle in a namespace, errors.

pyroute2 is untyped; ``Any`` stays in this module and in the thin wrappers next to it
(``links``, ``addrs``), so plugin code sees dataclasses and ``CNIError`` only.

A netlink socket stays bound to the network namespace it was created in, so ``open_ipr``
enters the namespace, opens the socket, and leaves at once. The handle is a ``SyncRtnl``
(pyroute2's requests over a blocking socket, see ``rtnl``). ``IPRoute(netns=...)`` is never
used: it forks a helper and, by default, creates a missing namespace.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Any, TypeAlias

from pyroute2.netlink.exceptions import NetlinkError

from pycni.cni.errors import CNIError, ErrorCode, LinkNotFound
from pycni.net import netns
from pycni.net.netns import NetNSRef
from pycni.net.rtnl import SyncRtnl

__all__ = [
    "IPR",
    "error_errno",
    "open_ipr",
    "translate_netlink_error",
]

# pyroute2.IPRoute's API (a SyncRtnl, see rtnl.py), untyped; the alias names it for readers.
IPR: TypeAlias = Any


def _new_iproute() -> IPR:
    # No multicast groups: a plugin's handle only makes requests; subscribing would queue
    # every link/address/route event on a busy host for nobody to read.
    return SyncRtnl()


@contextlib.contextmanager
def open_ipr(target: NetNSRef | None = None) -> Iterator[IPR]:
    """An ``IPRoute`` handle bound to ``target`` (a ``NetNS`` handle, fd or path; None: the
    current netns), closed on exit. A missing namespace raises ``NetNSNotFound``; nothing is
    ever created.
    """
    with translate_netlink_error("open netlink socket"):
        if target is None:
            ipr = _new_iproute()
        else:
            with netns.enter(target):
                ipr = _new_iproute()
    try:
        yield ipr
    finally:
        ipr.close()


def error_errno(err: BaseException) -> int | None:
    """The errno carried by a ``NetlinkError`` or ``OSError`` (None for anything else)."""
    if isinstance(err, NetlinkError):
        return int(err.code)
    if isinstance(err, OSError):
        return err.errno
    return None


@contextlib.contextmanager
def translate_netlink_error(
    operation: str,
    *,
    link: str | None = None,
    code: ErrorCode = ErrorCode.INTERNAL,
) -> Iterator[None]:
    """Turn ``NetlinkError``/``OSError`` raised in the body into ``CNIError`` naming ``operation``.

    With ``link`` given, "no such device" becomes ``LinkNotFound(link)`` so callers (DEL) can
    treat a vanished interface as already gone. ``CNIError`` raised inside passes through
    untouched (it is neither).
    """
    try:
        yield
    except (NetlinkError, OSError) as err:
        num = error_errno(err)
        if link is not None and num == errno.ENODEV:
            raise LinkNotFound(link) from err
        raise CNIError(code, f"{operation} failed", _describe(err)) from err


def _describe(err: BaseException) -> str:
    num = error_errno(err)
    name = errno.errorcode.get(num, "") if num is not None else ""
    text = err.args[1] if len(err.args) > 1 else str(err)
    return f"{name}: {text}" if name else str(text)
