"""What confines a container: Docker's defaults as the floor, and the flags that change them.

``SecurityOptions`` is what the command line asked for (``--privileged``, ``--cap-add``,
``--cap-drop``, ``--security-opt no-new-privileges|seccomp=unconfined|seccomp=FILE``), parsed
and validated with the rest of the spec (a FILE is read and checked then). ``resolve`` turns it
into a ``Confinement`` in the runtime, before anything is made: the capability set (bounded by
the runtime's own), the seccomp program (compiled by libseccomp), the masked and read-only
paths, the device rules. The container's init applies it (``rootfs.mask_paths`` after the
pivot, then ``confine`` last before exec), and so does ``exec`` for each process it starts.

The order of ``confine`` is runc's: with no_new_privs, drop capabilities, set no_new_privs,
then load the filter; without it, loading a filter needs CAP_SYS_ADMIN, so the filter goes on
first and the capability calls after it (Docker's profile allows capset and prctl). Either way
nothing of the runtime's own set-up (mounts, pivot, hostname) runs under the filter. With a
``--user`` (resolved in the container's own /etc/passwd first, before the filter), the ids
change between the bounding set and the other sets, and a non-root uid keeps none of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

from pycni.linux import capcalls, seccompcalls
from pycni_run import capabilities, devices, users
from pycni_run.devices import DeviceRule
from pycni_run.errors import RunError
from pycni_run.seccomp_profile import DOCKER_DEFAULT, Profile

__all__ = [
    "MASKED_PATHS",
    "READONLY_PATHS",
    "Confinement",
    "SecurityOptions",
    "confine",
    "for_exec",
    "parse_options",
    "resolve",
    "save_program",
    "to_doc",
]

# moby's oci defaults (Docker 28): masked under /dev/null (files) or an empty read-only tmpfs
# (directories); a path missing on this kernel is skipped. A "*" is expanded in the container.
MASKED_PATHS: Final = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/devices/system/cpu/cpu*/thermal_throttle",
)
READONLY_PATHS: Final = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
UNCONFINED: Final = "unconfined"
PROGRAM_FILE: Final = "seccomp.bpf"  # in the container's state directory, for `exec`


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityOptions:
    privileged: bool = False
    cap_add: tuple[str, ...] = ()  # normalized names, or "ALL"
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False
    seccomp: str = "default"  # "default", "unconfined" or the FILE as given
    profile: Profile | None = None  # the FILE's, read and validated while parsing


@dataclass(frozen=True, slots=True, kw_only=True)
class Confinement:
    """What each process of one container gets (picklable: a standby init receives it)."""

    privileged: bool = False
    capabilities: frozenset[str] = capabilities.DOCKER_DEFAULT
    no_new_privs: bool = False
    seccomp: str = "default"
    program: bytes = b""  # the BPF program; empty = unconfined
    masked_paths: tuple[str, ...] = MASKED_PATHS
    readonly_paths: tuple[str, ...] = READONLY_PATHS
    devices: tuple[DeviceRule, ...] = devices.DOCKER_DEFAULT
    cap_add: tuple[str, ...] = ()  # as asked, for inspect
    cap_drop: tuple[str, ...] = ()
    user: str = ""  # NAME|UID[:GROUP|GID], resolved in the container; "" = root


def _security_opt(item: str, found: dict[str, Any]) -> None:
    """One ``--security-opt``: Docker's ``key=value`` (and its old ``key:value``) forms."""
    key, sep, value = item.partition("=")
    if not sep:
        key, sep, value = item.partition(":")
    if key == "no-new-privileges" and value in ("", "true", "false"):
        found["no_new_privileges"] = value != "false"
    elif key == "seccomp" and value:
        if value == UNCONFINED:
            found.update(seccomp=UNCONFINED, profile=None)
        else:
            from pycni_run.seccomp_json import load_file

            found.update(seccomp=value, profile=load_file(value))
    else:
        raise RunError(
            f"invalid --security-opt {item!r}: supported are no-new-privileges[=true|false], "
            "seccomp=unconfined and seccomp=FILE"
        )


def parse_options(
    *, privileged: bool, cap_add: list[str], cap_drop: list[str], security_opt: list[str]
) -> SecurityOptions:
    found: dict[str, Any] = {}
    for item in security_opt:
        _security_opt(item, found)
    return SecurityOptions(
        privileged=privileged,
        cap_add=tuple(capabilities.normalize(c, "--cap-add") for c in cap_add),
        cap_drop=tuple(capabilities.normalize(c, "--cap-drop") for c in cap_drop),
        **found,
    )


def resolve(opts: SecurityOptions, *, user: str = "") -> Confinement:
    """In the runtime, before anything is made; RunError if it cannot be honoured."""
    caps = capabilities.resolve(
        add=opts.cap_add,
        drop=opts.cap_drop,
        privileged=opts.privileged,
        runtime_holds=capabilities.held(),
    )
    profile = None if opts.privileged or opts.seccomp == UNCONFINED else opts.profile
    if profile is None and opts.seccomp == "default" and not opts.privileged:
        profile = DOCKER_DEFAULT
    program = b""
    if profile is not None:
        from pycni_run.seccomp_filter import compile_program

        program = compile_program(profile, caps)
    return Confinement(
        privileged=opts.privileged,
        capabilities=caps,
        no_new_privs=opts.no_new_privileges,
        seccomp=UNCONFINED if profile is None else opts.seccomp,
        program=program,
        masked_paths=() if opts.privileged else MASKED_PATHS,
        readonly_paths=() if opts.privileged else READONLY_PATHS,
        devices=devices.PRIVILEGED if opts.privileged else devices.DOCKER_DEFAULT,
        cap_add=opts.cap_add,
        cap_drop=opts.cap_drop,
        user=user,
    )


def confine(conf: Confinement) -> None:
    """The last steps before exec, in the container's process (init or exec'd)."""
    ids = users.lookup(conf.user) if conf.user else None  # reads files: before the filter
    if conf.no_new_privs:
        _drop_privileges(conf, ids)
        capcalls.set_no_new_privs()
        _load(conf)
    else:
        _load(conf)
        _drop_privileges(conf, ids)


def _drop_privileges(conf: Confinement, ids: users.UserIds | None) -> None:
    capabilities.limit_bounding(conf.capabilities)
    if ids is not None:
        users.switch(ids)
    keeps = ids is None or ids.uid == 0
    capabilities.set_process(conf.capabilities if keeps else frozenset())


def _load(conf: Confinement) -> None:
    if conf.program:
        seccompcalls.load_seccomp_filter(conf.program)


# ---------------------------------------------------------------------- state, inspect, exec


def to_doc(conf: Confinement) -> dict[str, Any]:
    """For the state file and ``inspect`` (Docker's HostConfig names where it has them)."""
    return {
        "Privileged": conf.privileged,
        "CapAdd": list(conf.cap_add),
        "CapDrop": list(conf.cap_drop),
        "Capabilities": sorted(conf.capabilities),
        "NoNewPrivileges": conf.no_new_privs,
        "Seccomp": conf.seccomp,
        "MaskedPaths": list(conf.masked_paths),
        "ReadonlyPaths": list(conf.readonly_paths),
        "DeviceCgroupRules": [str(rule) for rule in conf.devices],
        "User": conf.user,
    }


def save_program(directory: str, conf: Confinement) -> None:
    """The seccomp program next to the state, for ``exec`` (none when unconfined)."""
    if conf.program:
        fd = os.open(os.path.join(directory, PROGRAM_FILE), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, conf.program)
        finally:
            os.close(fd)


def for_exec(doc: dict[str, Any], directory: str) -> Confinement | None:
    """What an ``exec`` process of this container gets; None for a container started before
    this runtime confined containers (its state has no security record)."""
    if not doc:
        return None
    program = b""
    if doc.get("Seccomp", UNCONFINED) != UNCONFINED:
        try:
            with open(os.path.join(directory, PROGRAM_FILE), "rb") as f:
                program = f.read()
        except OSError as err:
            raise RunError(f"cannot read the container's seccomp program: {err}") from err
    names = frozenset(doc.get("Capabilities", ())) & frozenset(capabilities.NAMES)
    return Confinement(
        capabilities=names,
        no_new_privs=bool(doc.get("NoNewPrivileges")),
        program=program,
        user=str(doc.get("User", "")),
    )

