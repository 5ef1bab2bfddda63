"""Typed reads from decoded JSON that name the bad field in their error (code 7)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from pycni.cni.errors import CNIError, ErrorCode

__all__ = [
    "PROTOCOL_KEYS",
    "bad",
    "check_plugin_keys",
    "opt_bool",
    "opt_int",
    "opt_map",
    "opt_str",
    "opt_str_list",
    "path_problem",
    "req_str",
]

T = TypeVar("T")

# Keys the protocol itself puts in a plugin's stdin (spec §3), accepted by every plugin, as is
# anything under the runtime-reserved "cni.dev/" prefix (GC's valid attachments).
PROTOCOL_KEYS = frozenset(
    {
        "cniVersion",
        "cniVersions",
        "name",
        "type",
        "capabilities",
        "runtimeConfig",
        "args",
        "prevResult",
    }
)


def check_plugin_keys(
    raw: Mapping[str, Any],
    *,
    plugin: str,
    known: Collection[str],
    not_implemented: Mapping[str, str] | None = None,
) -> None:
    """Refuse (code 2, naming it) a key the plugin does not implement or does not know:
    a misspelt key silently ignored is how networks end up not doing what their file says."""
    for key in raw:
        if not_implemented and key in not_implemented:
            raise CNIError(
                ErrorCode.UNSUPPORTED_FIELD, f"unsupported field {key}", not_implemented[key]
            )
        if key not in known and key not in PROTOCOL_KEYS and not key.startswith("cni.dev/"):
            raise CNIError(
                ErrorCode.UNSUPPORTED_FIELD,
                f"unsupported field {key}",
                f"{key}={raw[key]!r} is not a {plugin} plugin key",
            )


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    dict: "an object",
    list: "a list",
}


def bad(field: str, problem: str, code: ErrorCode = ErrorCode.INVALID_NETWORK_CONFIG) -> CNIError:
    return CNIError(code, f"invalid {field}", problem)


def _typed(doc: Mapping[str, Any], key: str, kind: type[T], where: str) -> T | None:
    value = doc.get(key)
    if value is None:
        return None
    # bool is an int in Python; JSON true must not pass as a port number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad(f"{where}{key}", f"must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")
    return value


def opt_str(doc: Mapping[str, Any], key: str, where: str = "", default: str = "") -> str:
    value = _typed(doc, key, str, where)
    return default if value is None else value


def req_str(doc: Mapping[str, Any], key: str, where: str = "") -> str:
    value = _typed(doc, key, str, where)
    if not value:
        raise bad(f"{where}{key}", "is required")
    return value


def opt_bool(doc: Mapping[str, Any], key: str, where: str = "", default: bool = False) -> bool:
    value = _typed(doc, key, bool, where)
    return default if value is None else value


def opt_int(doc: Mapping[str, Any], key: str, where: str = "") -> int | None:
    return _typed(doc, key, int, where)


def opt_map(doc: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = _typed(doc, key, dict, where)
    return {} if value is None else value


def opt_str_list(doc: Mapping[str, Any], key: str, where: str = "") -> tuple[str, ...]:
    value = _typed(doc, key, list, where)
    if value is None:
        return ()
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise bad(f"{where}{key}[{i}]", f"must be a string, got {item!r}")
    return tuple(value)


_PATH_MAX = 4095  # PATH_MAX - 1, in bytes
_NAME_MAX = 255


def path_problem(path: str) -> str | None:
    """Why ``path`` is unfit as a state directory (dataDir, cache dir), or None.

    Absolute, no NUL, no ``..`` component (nothing climbs out of where it says it is) and
    within the kernel's PATH_MAX/NAME_MAX: refused here, before anything touches the disk,
    instead of failing later as an OSError (or a ValueError for NUL) mid-operation.
    """
    if "\0" in path:
        return "contains a NUL byte"
    if not path.startswith("/"):
        return f"{path!r} is not an absolute path"
    if ".." in path.split("/"):
        return f"{path!r} has a '..' component"
    try:  # surrogateescape: bytes an environment carried; any other surrogate has no bytes
        encoded = path.encode(errors="surrogateescape")
    except UnicodeEncodeError:
        return f"{path!r} is not valid UTF-8 (a lone surrogate)"
    if len(encoded) > _PATH_MAX or any(len(c) > _NAME_MAX for c in encoded.split(b"/")):
        return f"is longer than PATH_MAX ({_PATH_MAX}) or has a component over {_NAME_MAX} bytes"
    return None
