"""Linux capabilities: their names, Docker's default set, ``--cap-add``/``--cap-drop``, and
applying a set to the container's process just before it execs.

Names are accepted as Docker accepts them: any case, with or without ``CAP_``, and ``ALL``.
``resolve`` is moby's ``TweakCapabilities`` (``ALL`` in ``--cap-add`` starts from every
capability, ``ALL`` in ``--cap-drop`` from none, otherwise the default set minus the drops
plus the adds), then bounded by what the runtime itself holds: a container never gets a
capability its runtime lacks (this VM's bounding set has no ``CAP_SYS_RESOURCE``).

The chosen set goes into all five sets (bounding, permitted, effective, inheritable, ambient)
as issue #17 asks, for a process that stays uid 0. Docker since 20.10.14 (CVE-2022-24769)
leaves inheritable and ambient empty; for uid 0 the kernel already makes permitted = effective
= bounding at exec, so the two extra sets grant nothing beyond the others. A process of another
user (``--user``) keeps only the bounding set: its permitted, effective, inheritable and
ambient sets are empty, which is what Docker's non-root processes end with after exec.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from pycni.linux import capcalls
from pycni_run.errors import RunError

__all__ = [
    "ALL",
    "DOCKER_DEFAULT",
    "NAMES",
    "held",
    "limit_bounding",
    "mask_of",
    "names_of",
    "normalize",
    "resolve",
    "set_process",
]

# Index = capability number (linux/capability.h), up to CAP_CHECKPOINT_RESTORE (40, 5.9).
NAMES: Final = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
ALL: Final = "ALL"
# moby's oci.DefaultCapabilities: mask 0x00000000a80425fb.
DOCKER_DEFAULT: Final = frozenset(
    {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    }
)
_NUMBER: Final = {name: number for number, name in enumerate(NAMES)}


def normalize(text: str, flag: str = "--cap-add") -> str:
    """``net_admin``, ``NET_ADMIN``, ``cap_net_admin`` -> ``CAP_NET_ADMIN``; ``all`` -> ``ALL``."""
    name = text.strip().upper()
    if name == ALL:
        return ALL
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in _NUMBER:
        raise RunError(f"invalid {flag} {text!r}: unknown capability")
    return name


def mask_of(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << _NUMBER[name]
    return mask


def names_of(mask: int) -> tuple[str, ...]:
    return tuple(name for number, name in enumerate(NAMES) if mask >> number & 1)


def held() -> frozenset[str]:
    """What this runtime could give: its own permitted set."""
    _effective, permitted, _inheritable = capcalls.capget()
    return frozenset(names_of(permitted))


def resolve(
    *, add: Iterable[str], drop: Iterable[str], privileged: bool, runtime_holds: frozenset[str]
) -> frozenset[str]:
    """The container's set (names already normalized). RunError for an explicit ``--cap-add``
    of a capability the runtime does not hold: nothing through pycni-run exceeds its caller."""
    adds, drops = set(add), set(drop)
    every = frozenset(NAMES)
    if privileged or ALL in adds:
        wanted = every - (set() if privileged else drops)
    elif ALL in drops:
        wanted = frozenset(adds)
    else:
        wanted = (DOCKER_DEFAULT - drops) | adds
    missing = sorted(adds - {ALL} - runtime_holds)
    if missing:
        raise RunError(f"cannot add {', '.join(missing)}: pycni-run itself does not hold it")
    return wanted & runtime_holds


def limit_bounding(names: frozenset[str]) -> None:
    """The bounding set first: dropping needs CAP_SETPCAP, which capset may take away (and
    which a switch to another uid takes away)."""
    mask = mask_of(names)
    number = 0
    while (present := capcalls.has_bounding_capability(number)) is not None:
        if present and not mask >> number & 1:
            capcalls.drop_bounding_capability(number)
        number += 1


def set_process(names: frozenset[str]) -> None:
    """Permitted, effective and inheritable, then ambient (a raise needs the capability
    permitted and inheritable). Empty for a non-root user: what Docker's processes end with."""
    mask = mask_of(names)
    capcalls.capset(mask, mask, mask)
    capcalls.clear_ambient_capabilities()
    for name in names:
        capcalls.raise_ambient_capability(_NUMBER[name])
