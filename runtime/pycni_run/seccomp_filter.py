"""A seccomp profile compiled to a classic BPF program by libseccomp.

libseccomp's Python API comes from ``pyseccomp`` (PyPI), a ctypes binding written to be
API-compatible with libseccomp's own Cython binding (Debian's ``python3-seccomp``). That one
lives in Debian's dist-packages, which the project's venv does not see; making it visible means
``--system-site-packages`` (every Debian Python package, pyroute2 and scapy among them, would
then mix with the pinned ones) or a hand-made ``.pth`` or symlink into the venv. ``pyseccomp``
installs like every other dependency and loads the system's ``libseccomp.so.2`` (Debian's
``libseccomp2``, listed in the Makefile's ``APT_PACKAGES``).

Importing it costs ~17 ms (``ctypes.util.find_library`` runs ``ldconfig``), so only what starts
a container's init imports this module: ``security.resolve`` in ``lifecycle.start``, and the
runtime daemon once at start-up, which also keeps compiled programs (``compile_program`` is
cached). The client, the plugins and ``exec`` never import it: ``exec`` loads the very program
the container's init got, saved in its state directory.

The program is exported (``seccomp_export_bpf``) and loaded in the container's process by one
``seccomp(2)`` call (``pycni.linux.seccompcalls``): what ``seccomp_load`` itself does for a
filter without flags, in a process that is single-threaded and sets no_new_privs itself.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Final

import pyseccomp

from pycni_run.errors import RunError
from pycni_run.seccomp_profile import EPERM, Profile, Rule, applicable

__all__ = ["compile_program", "host_arch", "kernel_version"]

_UNKNOWN_SYSCALL: Final = -1  # libseccomp's __NR_SCMP_ERROR
_OPERATORS: Final = {
    "ne": pyseccomp.NE,
    "lt": pyseccomp.LT,
    "le": pyseccomp.LE,
    "eq": pyseccomp.EQ,
    "ge": pyseccomp.GE,
    "gt": pyseccomp.GT,
    "masked_eq": pyseccomp.MASKED_EQ,
}
# The kernel's machine name -> Go's, the names Docker's includes/excludes use.
_GO_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}


def host_arch() -> str:
    machine = platform.machine()
    return _GO_ARCH.get(machine, machine)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    major, minor, *_ = (release or os.uname().release).split(".")
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _action(action: str, errno: int | None) -> int:
    code = EPERM if errno is None else errno
    simple = {
        "allow": pyseccomp.ALLOW,
        "kill_thread": pyseccomp.KILL,
        "kill_process": pyseccomp.KILL_PROCESS,
        "trap": pyseccomp.TRAP,
        "log": pyseccomp.LOG,
    }
    if action == "errno":
        return int(pyseccomp.ERRNO(code))
    if action == "trace":
        return int(pyseccomp.TRACE(code))
    return int(simple[action])


@functools.lru_cache(maxsize=32)
def compile_program(profile: Profile, caps: frozenset[str]) -> bytes:
    """The BPF program (``struct sock_filter`` array) of ``profile`` for a container whose
    bounding set is ``caps``; RunError if libseccomp refuses the profile."""
    default = _action(profile.default_action, profile.default_errno)
    rules = applicable(profile, caps=caps, arch=host_arch(), kernel=kernel_version())
    try:
        seccomp = pyseccomp.SyscallFilter(default)
        _add_arches(seccomp, profile)
        for rule in rules:
            _add_rule(seccomp, rule, default)
        return _export(seccomp)
    except OSError as err:
        raise RunError(f"seccomp profile {profile.name}: libseccomp refused it: {err}") from err


def _add_arches(seccomp: pyseccomp.SyscallFilter, profile: Profile) -> None:
    """The native architecture is always there; add the others its ``arch_map`` entry lists."""
    native = platform.machine()
    for arch, others in profile.arch_map:
        if arch == native:
            for other in others:
                seccomp.add_arch(getattr(pyseccomp.Arch, other.upper()))


def _add_rule(seccomp: pyseccomp.SyscallFilter, rule: Rule, default: int) -> None:
    action = _action(rule.action, rule.errno)
    if action == default:
        return  # libseccomp refuses a rule that repeats the default action; runc skips it too
    conditions = [
        pyseccomp.Arg(c.index, _OPERATORS[c.op], c.value, c.value_two) for c in rule.conditions
    ]
    indexes = [c.index for c in rule.conditions]
    # Two conditions on one argument cannot share a libseccomp rule: runc makes each its own
    # rule (either may match), and so does this.
    groups = [[c] for c in conditions] if len(set(indexes)) < len(indexes) else [conditions]
    for name in rule.names:
        number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
        if number == _UNKNOWN_SYSCALL:
            continue  # not a syscall libseccomp knows: skipped, as runc skips it
        for group in groups:
            seccomp.add_rule(action, number, *group)


def _export(seccomp: pyseccomp.SyscallFilter) -> bytes:
    fd = os.memfd_create("pycni-run-seccomp", os.MFD_CLOEXEC)
    with open(fd, "w+b") as program:
        seccomp.export_bpf(program)
        program.seek(0)
        return program.read()
