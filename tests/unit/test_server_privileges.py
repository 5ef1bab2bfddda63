"""Who a socket's caller is and whether a call of theirs may be done with the server's
privileges (``pycni.warmfork.privileges``): pure comparisons, and this process as a caller."""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest

from pycni.warmfork import privileges
from pycni.warmfork.privileges import Privileges

FULL = Privileges(effective=0x1FFFEFFFFFF, permitted=0x1FFFEFFFFFF, bounding=0x1FFFEFFFFFF,
                  inheritable=0, ambient=0, no_new_privs=False, seccomp=0, user_ns=(4, 1))


def test_a_caller_with_every_privilege_of_the_server_is_served() -> None:
    assert privileges.refusal(FULL, FULL) == ""
    more = dataclasses.replace(FULL, inheritable=0xFF, bounding=(1 << 41) - 1)
    assert privileges.refusal(more, FULL) == ""


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"effective": 0, "permitted": 0, "bounding": 0},
         "its effective capabilities lack CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, "
         "CAP_FOWNER and 36 more"),
        ({"effective": FULL.effective & ~(1 << 21)}, "its effective capabilities lack "
                                                     "CAP_SYS_ADMIN"),
        ({"bounding": FULL.bounding & ~(1 << 12)}, "its bounding capabilities lack "
                                                   "CAP_NET_ADMIN"),
        ({"no_new_privs": True}, "it has no_new_privs set"),
        ({"seccomp": 2}, "it runs under a seccomp filter"),
        ({"user_ns": (4, 2)}, "it is in another user namespace"),
    ],
)
def test_a_caller_lacking_anything_the_server_has_is_refused(change: dict[str, object],
                                                             why: str) -> None:
    caller = dataclasses.replace(FULL, **change)  # type: ignore[arg-type]
    assert privileges.refusal(caller, FULL) == why


def test_the_server_with_inheritable_capabilities_needs_them_in_the_caller_too() -> None:
    server = dataclasses.replace(FULL, inheritable=1 << 13)
    assert privileges.refusal(FULL, server) == "its inheritable capabilities lack CAP_NET_RAW"


def test_this_process_identified_through_a_socket_is_itself() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        caller = privileges.identify(a)
    me = privileges.myself()
    assert (caller.pid, caller.uid) == (os.getpid(), os.geteuid())
    assert caller == me
    assert privileges.refusal(caller.privileges, me.privileges) == ""
