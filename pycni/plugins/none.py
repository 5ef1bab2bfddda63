"""`none`: Docker's ``--net=none``: the container gets a loopback device and nothing else.

ADD sets lo up and reports it (with its sandbox); the plugin owns nothing in the host, so
DEL has nothing to remove and succeeds whether or not the netns still exists.
"""

from __future__ import annotations

from pycni.cni.skel import CmdArgs
from pycni.cni.types import Result
from pycni.plugins._lo import loopback_result, set_lo, validate_lo_up

__all__ = ["cmd_add", "cmd_check", "cmd_del"]


def cmd_add(args: CmdArgs) -> Result:
    cidrs = set_lo(args.container_netns(), up=True)
    return loopback_result(args.cni_version, args.netns, cidrs)


def cmd_del(args: CmdArgs) -> None:
    """Nothing to undo: lo dies with the namespace, and the host was never touched."""


def cmd_check(args: CmdArgs) -> None:
    validate_lo_up(args.container_netns())
