"""`loopback`: bring lo up in the container (the reference plugin's behaviour).

ADD sets lo up and returns prevResult if chained, else lo with its loopback addresses.
DEL sets lo down; a missing netns (or none given) is already gone. CHECK: lo must be up.
"""

from __future__ import annotations

from pycni.cni.skel import CmdArgs
from pycni.cni.types import Result
from pycni.plugins._lo import loopback_result, set_lo, validate_lo_up

__all__ = ["cmd_add", "cmd_check", "cmd_del"]


def cmd_add(args: CmdArgs) -> Result:
    cidrs = set_lo(args.container_netns(), up=True)
    if args.config.prev_result is not None:
        return args.config.prev_result
    return loopback_result(args.cni_version, args.netns, cidrs)


def cmd_del(args: CmdArgs) -> None:
    if args.netns_handle is not None:  # none given, or gone already: nothing to set down
        set_lo(args.netns_handle, up=False)


def cmd_check(args: CmdArgs) -> None:
    validate_lo_up(args.container_netns())
