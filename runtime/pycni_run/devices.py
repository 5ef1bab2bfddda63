"""The device allowlist: which device nodes a container may create (``m``), read and write.

Docker's default is runc's: deny everything, then allow ``mknod`` of any character or block
device (so a container can make a node, and opening it is what fails) and the usual nodes
(null, zero, full, random, urandom, tty, console, ptmx, the pts, tun). ``--privileged`` allows
every device. ``cgroups`` writes the rules to the v1 ``devices`` controller; cgroup v2 has no
such files (it needs a BPF_CGROUP_DEVICE program attached to the cgroup, not implemented): a
v2 container keeps only the /dev tmpfs with the default nodes, and the capability and seccomp
limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["DOCKER_DEFAULT", "PRIVILEGED", "DeviceRule"]

Kind = Literal["a", "c", "b"]


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """One line of ``devices.allow``/``devices.deny`` (major/minor None = ``*``)."""

    allow: bool
    kind: Kind = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"

    def line(self) -> str:
        """The text the kernel reads: ``c 1:3 rwm``; ``a`` (every device) stands alone."""
        if self.kind == "a":
            return "a"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.kind} {major}:{minor} {self.access}"

    def __str__(self) -> str:
        return ("allow " if self.allow else "deny ") + (
            "a *:* rwm" if self.kind == "a" else self.line()
        )


DOCKER_DEFAULT: Final = (
    DeviceRule(allow=False),
    DeviceRule(allow=True, kind="c", access="m"),
    DeviceRule(allow=True, kind="b", access="m"),
    DeviceRule(allow=True, kind="c", major=1, minor=3),  # null
    DeviceRule(allow=True, kind="c", major=1, minor=5),  # zero
    DeviceRule(allow=True, kind="c", major=1, minor=7),  # full
    DeviceRule(allow=True, kind="c", major=1, minor=8),  # random
    DeviceRule(allow=True, kind="c", major=1, minor=9),  # urandom
    DeviceRule(allow=True, kind="c", major=5, minor=0),  # tty
    DeviceRule(allow=True, kind="c", major=5, minor=1),  # console
    DeviceRule(allow=True, kind="c", major=5, minor=2),  # ptmx
    DeviceRule(allow=True, kind="c", major=136),  # /dev/pts/*
    DeviceRule(allow=True, kind="c", major=10, minor=200),  # /dev/net/tun (runc >= 1.2.1)
)
PRIVILEGED: Final = (DeviceRule(allow=True),)
