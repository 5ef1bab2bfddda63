"""Traffic control through pyroute2: tbf rate limits, the ingress qdisc with a match-all
mirred redirect, and ifb devices. No ``tc`` binary is involved.

The numbers follow tc(8) and the reference bandwidth plugin: a tbf is given its rate in
bytes/s, a ``limit`` (queue) in bytes and a ``buffer`` in scheduler ticks, the time it takes
to send ``burst`` bytes at ``rate`` (``/proc/net/psched`` defines a tick). The buffer travels
in a u32 of ticks (at most about 275 s of tokens): a burst worth more than that at the given
rate (Kubernetes passes a burst of 2**31 - 1 bits with any rate) is clamped here to the
largest buffer the field holds, where the reference plugin's arithmetic silently overflows.
What we send is what a later read-back (CHECK) finds.

Every function takes an ``IPRoute`` handle bound to the netns it acts in and raises
``CNIError``, never a pyroute2 error.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from pyroute2.netlink.exceptions import NetlinkError

from pycni.cni.errors import CNIError, ErrorCode
from pycni.net.ipr import IPR, translate_netlink_error

__all__ = [
    "ETH_P_ALL",
    "IFALIAS_MAX",
    "MAX_TBF_BYTES",
    "TBF_LATENCY_US",
    "IfbInfo",
    "Tbf",
    "add_ifb",
    "configure_ifb",
    "delete_ifb",
    "delete_ingress_qdisc",
    "delete_root_qdisc",
    "get_ifb",
    "get_redirect_targets",
    "get_root_tbf",
    "has_ingress_qdisc",
    "list_ifbs",
    "set_tbf",
    "setup_redirect",
    "tbf_for",
    "tick_in_usec",
]

TIME_UNITS_PER_SEC: Final = 1_000_000
TBF_LATENCY_US: Final = 25_000  # the reference plugin's 25 ms
MAX_TBF_BYTES: Final = 2**32 - 1  # tc_tbf_qopt rate, limit and buffer are u32
_MAX_BUFFER_TICKS: Final = 2**32 - 1  # tc_tbf_qopt.buffer is a u32 of ticks
ETH_P_ALL: Final = 0x0003
TC_H_ROOT: Final = 0xFFFFFFFF
TC_H_INGRESS: Final = 0xFFFFFFF1
TBF_HANDLE: Final = 0x10000  # 1:
INGRESS_HANDLE: Final = 0xFFFF0000  # ffff:
REDIRECT_CLASSID: Final = 0x10001  # 1:1, as the reference filter names it
_MIRRED_EGRESS_REDIRECT: Final = 1  # TCA_EGRESS_REDIR (linux/tc_act/tc_mirred.h)
PSCHED: Final = "/proc/net/psched"


def tick_in_usec(psched: str = PSCHED) -> float:
    """Scheduler ticks per microsecond, as tc(8) and pyroute2 compute it."""
    try:
        with open(psched, encoding="ascii") as f:
            t2us, us2t, clock_res, _ = (int(x, 16) for x in f.read().split())
    except (OSError, ValueError) as err:
        raise CNIError(ErrorCode.INTERNAL, f"cannot read {psched}", str(err)) from err
    return t2us / us2t * (clock_res / TIME_UNITS_PER_SEC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tbf:
    """A tbf as the kernel holds it: rate and limit in bytes, buffer in ticks."""

    rate: int
    limit: int
    buffer: int
    burst: int  # bytes sent to pyroute2 (after clamping), which derives ``buffer`` from it


def _ticks(rate: int, burst: int, tick: float) -> int:
    # pyroute2's calc_xmittime (ported from tc): whole microseconds, then ticks.
    return int(int(TIME_UNITS_PER_SEC * (float(burst) / rate)) * tick)


def tbf_for(*, rate: int, burst: int, tick: float, latency_us: int = TBF_LATENCY_US) -> Tbf:
    """The tbf for ``rate`` bytes/s and ``burst`` bytes (the reference plugin's arithmetic)."""
    if not 0 < rate <= MAX_TBF_BYTES or not 0 < burst <= MAX_TBF_BYTES:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "invalid tbf parameters",
            f"rate {rate} and burst {burst} bytes must be within 1..{MAX_TBF_BYTES}",
        )
    sent = burst
    if _ticks(rate, sent, tick) > _MAX_BUFFER_TICKS:
        sent = int(_MAX_BUFFER_TICKS / tick * rate / TIME_UNITS_PER_SEC)
        while sent > 1 and _ticks(rate, sent, tick) > _MAX_BUFFER_TICKS:
            sent -= 1
    limit = min(int(rate * float(latency_us) / TIME_UNITS_PER_SEC + burst), MAX_TBF_BYTES)
    return Tbf(rate=rate, limit=limit, buffer=_ticks(rate, sent, tick), burst=sent)


# ---------------------------------------------------------------------------- qdiscs


def _qdisc_at(ipr: IPR, index: int, parent: int) -> Any:
    """The qdisc at ``parent`` of link ``index``; None for the kernel's built-in default, no
    ingress queue or no such link. Asked of that link alone, never read from a dump of all
    (see ``SyncRtnl.qdisc``: a dump can skip a link while others are deleted)."""
    with translate_netlink_error(f"get qdisc {parent:#x} of link #{index}"):
        try:
            msgs = ipr.qdisc(index, parent)
        except NetlinkError as err:
            if err.code in (errno.ENOENT, errno.ENODEV):
                return None
            raise
    return msgs[0] if msgs else None


def _root_qdisc(ipr: IPR, index: int) -> Any:
    return _qdisc_at(ipr, index, TC_H_ROOT)


def set_tbf(ipr: IPR, index: int, tbf: Tbf) -> None:
    """Make ``tbf`` the root qdisc (handle 1:) of link ``index``, replacing whatever was there."""
    with translate_netlink_error(f"set tbf on link #{index}", link=f"#{index}"):
        ipr.tc(
            "replace",
            "tbf",
            index,
            handle=TBF_HANDLE,
            parent=TC_H_ROOT,
            rate=tbf.rate,
            burst=tbf.burst,
            limit=tbf.limit,
        )


def get_root_tbf(ipr: IPR, index: int) -> Tbf | None:
    """The root tbf of link ``index`` as the kernel reports it; None if the root is not a tbf."""
    root = _root_qdisc(ipr, index)
    if root is None or root.get_attr("TCA_KIND") != "tbf":
        return None
    options = root.get_attr("TCA_OPTIONS")
    parms = options.get_attr("TCA_TBF_PARMS") if options is not None else None
    if parms is None:
        return None
    return Tbf(
        rate=int(parms["rate"]), limit=int(parms["limit"]), buffer=int(parms["buffer"]), burst=0
    )


def _delete_qdisc(ipr: IPR, index: int, *, handle: int, parent: int, what: str) -> bool:
    with translate_netlink_error(f"delete {what} qdisc of link #{index}"):
        try:
            ipr.tc("del", index=index, handle=handle, parent=parent)
        except NetlinkError as err:
            # Gone between our look-up and the request (or with its link): already done.
            if err.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                return False
            raise
    return True


def delete_root_qdisc(ipr: IPR, index: int) -> bool:
    """Remove the root qdisc we set (the device falls back to its default); False if none."""
    root = _root_qdisc(ipr, index)
    if root is None or root["handle"] == 0:  # the kernel's default: nothing of ours
        return False
    return _delete_qdisc(ipr, index, handle=int(root["handle"]), parent=TC_H_ROOT, what="root")


def has_ingress_qdisc(ipr: IPR, index: int) -> bool:
    found = _qdisc_at(ipr, index, TC_H_INGRESS)
    return found is not None and found.get_attr("TCA_KIND") == "ingress"


def delete_ingress_qdisc(ipr: IPR, index: int) -> bool:
    """Remove the ingress qdisc and with it every filter on it; False if there was none."""
    if not has_ingress_qdisc(ipr, index):
        return False
    return _delete_qdisc(ipr, index, handle=INGRESS_HANDLE, parent=TC_H_INGRESS, what="ingress")


def setup_redirect(ipr: IPR, index: int, target_index: int) -> None:
    """All traffic arriving on link ``index`` goes out of link ``target_index`` instead:
    an ingress qdisc with a u32 match-all filter and a mirred egress redirect.

    A previous ingress qdisc on the link is replaced (with its filters): the link is the
    attachment's own veth, and a retried ADD must not stack a second redirect.
    """
    delete_ingress_qdisc(ipr, index)
    with translate_netlink_error(f"add ingress qdisc to link #{index}", link=f"#{index}"):
        ipr.tc("add", "ingress", index, handle=INGRESS_HANDLE)
    with translate_netlink_error(f"add redirect filter to link #{index}", link=f"#{index}"):
        ipr.tc(
            "add-filter",
            "u32",
            index,
            parent=INGRESS_HANDLE,
            prio=1,
            protocol=ETH_P_ALL,
            target=REDIRECT_CLASSID,
            keys=["0x0/0x0+0"],  # match everything
            action={
                "kind": "mirred",
                "direction": "egress",
                "action": "redirect",
                "ifindex": target_index,
            },
        )


def _mirred_parms(msg: Any) -> Iterator[Any]:
    """The TCA_MIRRED_PARMS of every mirred action of one u32 filter message."""
    options = msg.get_attr("TCA_OPTIONS")
    actions = options.get_attr("TCA_U32_ACT") if options is not None else None
    for _, action in actions["attrs"] if actions is not None else []:
        if action.get_attr("TCA_ACT_KIND") != "mirred":
            continue
        parms = _nested(action, "TCA_ACT_OPTIONS", "TCA_MIRRED_PARMS")
        if parms is not None:
            yield parms


def _nested(msg: Any, *path: str) -> Any:
    node = msg
    for attr in path:
        if node is None:
            return None
        node = node.get_attr(attr)
    return node


def get_redirect_targets(ipr: IPR, index: int) -> list[int]:
    """The ifindexes that ingress filters on link ``index`` mirred-redirect to (egress)."""
    if not has_ingress_qdisc(ipr, index):
        return []
    with translate_netlink_error(f"list filters of link #{index}", link=f"#{index}"):
        filters = list(ipr.get_filters(index=index, parent=INGRESS_HANDLE))
    targets = []
    for msg in filters:
        for parms in _mirred_parms(msg):
            if int(parms["eaction"]) == _MIRRED_EGRESS_REDIRECT:
                targets.append(int(parms["ifindex"]))
    return targets


# ---------------------------------------------------------------------------- ifb devices


@dataclass(frozen=True, slots=True, kw_only=True)
class IfbInfo:
    index: int
    name: str
    mac: str
    mtu: int
    alias: str
    up: bool


def _to_ifb(msg: Any) -> IfbInfo | None:
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "ifb":
        return None
    return IfbInfo(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        alias=str(msg.get_attr("IFLA_IFALIAS") or ""),
        up=bool(int(msg["flags"]) & 0x1),
    )


def get_ifb(ipr: IPR, name: str) -> IfbInfo | None:
    """The ifb called ``name``; None if there is no such link or it is not an ifb."""
    with translate_netlink_error(f"get link {name}"):
        try:
            msg = ipr.link("get", ifname=name)[0]
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return None
            raise
    return _to_ifb(msg)


def list_ifbs(ipr: IPR) -> list[IfbInfo]:
    with translate_netlink_error("list links"):
        msgs = list(ipr.get_links())
    return [ifb for ifb in map(_to_ifb, msgs) if ifb is not None]


# IFALIASZ is 256 with the NUL, but the kernel refuses an alias of 255 bytes (ERANGE).
IFALIAS_MAX: Final = 254


def _check_alias(name: str, alias: str) -> None:
    if len(alias.encode()) > IFALIAS_MAX:
        raise CNIError(ErrorCode.INTERNAL, f"alias for {name} is longer than {IFALIAS_MAX} bytes")


def add_ifb(ipr: IPR, name: str, *, mtu: int) -> int:
    """Create ifb ``name`` with ``mtu``, down and without an alias; its index. EEXIST is an
    error: the caller owns the name and removes its own leftovers first. The alias comes in a
    second request (``configure_ifb``): the kernel ignores IFLA_IFALIAS in a RTM_NEWLINK
    that creates, so a caller deletes the ifb again if that one fails."""
    with translate_netlink_error(f"create ifb {name}"):
        ipr.link("add", ifname=name, kind="ifb", mtu=mtu)
    created = get_ifb(ipr, name)
    if created is None:
        raise CNIError(ErrorCode.INTERNAL, f"ifb {name} vanished right after creation")
    return created.index


def configure_ifb(ipr: IPR, name: str, index: int, *, alias: str) -> IfbInfo:
    """The second half of creating an ifb (after ``add_ifb``): its alias, txqlen 0 and up."""
    _check_alias(name, alias)
    with translate_netlink_error(f"set up ifb {name}", link=name):
        # txqlen 0 as in the reference: the tbf on it is the only queue that matters.
        ipr.link("set", index=index, ifalias=alias, txqlen=0, state="up")
    ifb = get_ifb(ipr, name)
    if ifb is None:
        raise CNIError(ErrorCode.INTERNAL, f"ifb {name} vanished right after creation")
    return ifb


def delete_ifb(ipr: IPR, name: str) -> bool:
    """Delete ifb ``name``; False if there is none. A link of that name that is not an ifb is
    left alone (and reported): it is not ours."""
    ifb = get_ifb(ipr, name)
    if ifb is None:
        with translate_netlink_error(f"get link {name}"):
            try:
                ipr.link("get", ifname=name)
            except NetlinkError as err:
                if err.code == errno.ENODEV:
                    return False
                raise
        raise CNIError(ErrorCode.INTERNAL, f"link {name} exists but is not an ifb; not deleting")
    with translate_netlink_error(f"delete ifb {name}"):
        try:
            ipr.link("del", index=ifb.index)
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return False
            raise
    return True
