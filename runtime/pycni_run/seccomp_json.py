"""Docker's seccomp profile format (``--security-opt seccomp=FILE``) read into a ``Profile``.

Validated completely while the command line is parsed, before anything is made: each key's
type and range, with one error that names the place (``syscalls[3].args[0].op``). What this
runtime cannot honour is refused rather than ignored: ``SCMP_ACT_NOTIFY`` and ``listenerPath``
(there is no listener) and ``flags`` (the filter is loaded without any). Syscall names are
checked against libseccomp only when the filter is built, and unknown ones are skipped there,
as runc skips them (a profile may list calls newer than the kernel or libseccomp).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pycni_run.capabilities import ALL, normalize
from pycni_run.errors import RunError
from pycni_run.seccomp_profile import (
    ACTIONS,
    ARCHES,
    EPERM,
    OPERATORS,
    Condition,
    Profile,
    Rule,
    Scope,
)

__all__ = ["from_docker", "load_file"]

_MAX_BYTES: Final = 4 << 20  # Docker's own default profile is 20 KB
_MAX_ERRNO: Final = 4095
_MAX_ARGS: Final = 6
_KERNEL_RE: Final = re.compile(r"(\d+)\.(\d+)")


class _Invalid(Exception):
    """Where in the profile, and what is wrong there."""


def load_file(path: str) -> Profile:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except OSError as err:
        raise RunError(f"invalid --security-opt seccomp={path}: {err.strerror}") from None
    if len(data) > _MAX_BYTES:
        raise RunError(f"invalid --security-opt seccomp={path}: larger than {_MAX_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise RunError(f"invalid seccomp profile {path}: not JSON: {err}") from None
    return from_docker(doc, name=path)


def from_docker(doc: object, *, name: str) -> Profile:
    """A profile in Docker's JSON form (already decoded); RunError naming what is wrong."""
    try:
        return _profile(doc, name)
    except _Invalid as err:
        raise RunError(f"invalid seccomp profile {name}: {err}") from None


def _profile(doc: object, name: str) -> Profile:
    top = _object(doc, "the profile")
    if top.get("listenerPath"):
        raise _Invalid("listenerPath: SCMP_ACT_NOTIFY listeners are not supported")
    if top.get("flags"):
        raise _Invalid("flags: seccomp filter flags are not supported")
    if "defaultAction" not in top:
        raise _Invalid("defaultAction is required")
    action, errno = _action(top, "defaultAction", "defaultErrnoRet", "")
    syscalls = _optional_list(top, "syscalls", "syscalls")
    return Profile(
        name=name,
        default_action=action,
        default_errno=EPERM if errno is None else errno,
        arch_map=_arch_map(top),
        rules=tuple(_rule(entry, f"syscalls[{i}]") for i, entry in enumerate(syscalls)),
    )


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{where}: expected an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(f"{where}: expected a list")
    return value


def _optional_list(entry: Mapping[str, Any], key: str, where: str) -> list[Any]:
    """``entry[key]`` as a list; absent or null is empty, anything else must be a list."""
    value = entry.get(key)
    return [] if value is None else _list(value, where)


def _int(value: object, where: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise _Invalid(f"{where}: expected an integer from 0 to {high}, got {value!r}")
    return value


def _strings(value: object, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(item, str) and item for item in items):
        raise _Invalid(f"{where}: expected a list of non-empty strings")
    return items


def _action(entry: Mapping[str, Any], key: str, errno_key: str, at: str) -> tuple[str, int | None]:
    text = entry.get(key)
    if text == "SCMP_ACT_NOTIFY":
        raise _Invalid(f"{at}{key}: SCMP_ACT_NOTIFY is not supported (no listener)")
    if text not in ACTIONS:
        raise _Invalid(f"{at}{key}: unknown action {text!r} (use one of {', '.join(ACTIONS)})")
    errno = entry.get(errno_key)
    return ACTIONS[text], None if errno is None else _int(errno, at + errno_key, _MAX_ERRNO)


def _arch(text: object, where: str) -> str:
    if text not in ARCHES:
        raise _Invalid(f"{where}: unknown architecture {text!r}")
    return ARCHES[text]


def _arch_map(top: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``archMap`` entries as they are; an ``architectures`` list: each with all the others."""
    if top.get("architectures") and top.get("archMap"):
        raise _Invalid("use either 'architectures' or 'archMap', not both")
    if top.get("architectures"):
        listed = [_arch(a, "architectures") for a in _list(top["architectures"], "architectures")]
        return tuple((a, tuple(b for b in listed if b != a)) for a in listed)
    found = []
    for i, item in enumerate(_optional_list(top, "archMap", "archMap")):
        where = f"archMap[{i}]"
        entry = _object(item, where)
        subs = _optional_list(entry, "subArchitectures", f"{where}.subArchitectures")
        found.append((
            _arch(entry.get("architecture"), f"{where}.architecture"),
            tuple(_arch(s, f"{where}.subArchitectures") for s in subs),
        ))
    return tuple(found)


def _rule(item: object, where: str) -> Rule:
    entry = _object(item, where)
    if "name" in entry and "names" in entry:
        raise _Invalid(f"{where}: use either 'name' or 'names', not both")
    names = [entry["name"]] if "name" in entry else entry.get("names", [])
    action, errno = _action(entry, "action", "errnoRet", f"{where}.")
    args = _optional_list(entry, "args", f"{where}.args")
    return Rule(
        names=tuple(_strings(names, f"{where}.names") or _empty(f"{where}.names")),
        action=action,
        errno=errno,
        conditions=tuple(_condition(a, f"{where}.args[{i}]") for i, a in enumerate(args)),
        includes=_scope(entry.get("includes"), f"{where}.includes"),
        excludes=_scope(entry.get("excludes"), f"{where}.excludes"),
    )


def _empty(where: str) -> list[str]:
    raise _Invalid(f"{where}: at least one syscall name is required")


def _condition(item: object, where: str) -> Condition:
    arg = _object(item, where)
    op = arg.get("op")
    if op not in OPERATORS:
        raise _Invalid(f"{where}.op: unknown operator {op!r} (use one of {', '.join(OPERATORS)})")
    return Condition(
        index=_int(arg.get("index"), f"{where}.index", _MAX_ARGS - 1),
        op=OPERATORS[op],
        value=_int(arg.get("value", 0), f"{where}.value", (1 << 64) - 1),
        value_two=_int(arg.get("valueTwo", 0), f"{where}.valueTwo", (1 << 64) - 1),
    )


def _scope(item: object, where: str) -> Scope:
    if item is None:
        return Scope()
    entry = _object(item, where)
    caps = []
    for cap in _strings(_optional_list(entry, "caps", f"{where}.caps"), f"{where}.caps"):
        try:
            name = normalize(cap)
        except RunError:
            name = ""
        if name in ("", ALL):
            raise _Invalid(f"{where}.caps: unknown capability {cap!r}")
        caps.append(name)
    kernel = entry.get("minKernel")
    match = _KERNEL_RE.fullmatch(kernel) if isinstance(kernel, str) else None
    if kernel is not None and match is None:
        raise _Invalid(f"{where}.minKernel: expected \"MAJOR.MINOR\", got {kernel!r}")
    return Scope(
        caps=frozenset(caps),
        arches=frozenset(_strings(_optional_list(entry, "arches", f"{where}.arches"),
                                  f"{where}.arches")),
        min_kernel=(int(match.group(1)), int(match.group(2))) if match else None,
    )
