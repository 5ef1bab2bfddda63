"""Typed reads from decoded JSON that name the bad field in their error (code 7), and the
keys of a JSON object matched as the reference plugins match them.

The reference plugins decode every config, capability argument and result into Go structs,
and Go's ``encoding/json`` matches a key to a field by its exact name first, then case
insensitively: containerd's go-cni serialises its ``PortMapping`` and ``BandWidth`` structs
without json tags, so ``HostPort`` and ``IngressRate`` arrive capitalised and the reference
plugins read them as ``hostPort`` and ``ingressRate``. ``GoKeys`` + ``decode_keys`` do the same
once, where a document enters a plugin, and hand on a copy spelt as the code expects; a key
that matches nothing is refused with code 2 naming it, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, TypeVar

from pycni.cni.errors import CNIError, ErrorCode

__all__ = [
    "PROTOCOL_KEYS",
    "GoKeys",
    "bad",
    "check_plugin_keys",
    "check_runtime_keys",
    "decode_keys",
    "go_fold",
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


def go_fold(key: str) -> str:
    """``key`` as Go's ``encoding/json`` compares it with a field name: simple case folding,
    one character for one (the Kelvin sign is a ``k``, the long s an ``s``; "ß" is not "ss")."""
    if key.isascii():
        return key.lower()
    return "".join(_fold_char(c) for c in key)


def _fold_char(c: str) -> str:
    upper = c.upper()
    if len(upper) != 1:
        upper = c
    lower = upper.lower()
    return lower if len(lower) == 1 else upper


class GoKeys:
    """The JSON names of one Go struct's fields, matched to a document's keys as Go's
    ``encoding/json`` matches them: the exact name first, else the one equal under folding."""

    __slots__ = ("_exact", "_folded")

    def __init__(self, names: Iterable[str]) -> None:
        self._exact = frozenset(names)
        self._folded: dict[str, str] = {}
        for name in sorted(self._exact):
            self._folded.setdefault(go_fold(name), name)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.match(key) is not None

    def match(self, key: str) -> str | None:
        """The name ``key`` stands for, or None."""
        if key in self._exact:
            return key
        return self._folded.get(go_fold(key))


def decode_keys(
    doc: Mapping[str, Any],
    keys: GoKeys,
    *,
    where: str = "",
    refuse: str | None = None,
    not_implemented: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of ``doc`` with every key spelt as the name in ``keys`` it matches.

    A key that matches none is refused with code 2, "<where><key>=<value> is not <refuse>",
    or, with ``refuse`` None, kept as it is (for objects that carry other plugins' keys too:
    ``args``, an IPAM plugin's view of its parent's config). ``not_implemented`` names keys
    (matched the same way) refused with code 2 and their reason. Two keys that match one name
    are refused with code 7: Go would let the last one win, silently.
    """
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in doc.items():
        name = keys.match(key)
        if name is None:
            _refuse_unknown(key, value, where=where, refuse=refuse, not_implemented=not_implemented)
            out[key] = value
            continue
        if name in seen:
            raise bad(f"{where}{key}", f"names the same field as {where}{seen[name]}")
        seen[name] = key
        out[name] = value
    return out


def _refuse_unknown(
    key: str,
    value: Any,
    *,
    where: str,
    refuse: str | None,
    not_implemented: Mapping[str, str] | None,
) -> None:
    named = GoKeys(not_implemented).match(key) if not_implemented else None
    if named is not None and not_implemented is not None:
        raise CNIError(
            ErrorCode.UNSUPPORTED_FIELD, f"unsupported field {where}{key}", not_implemented[named]
        )
    if refuse is not None and not key.startswith("cni.dev/"):
        raise CNIError(
            ErrorCode.UNSUPPORTED_FIELD,
            f"unsupported field {where}{key}",
            f"{where}{key}={value!r} is not {refuse}",
        )


def check_plugin_keys(
    raw: Mapping[str, Any],
    *,
    plugin: str,
    known: Collection[str],
    not_implemented: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``raw`` spelt as ``known`` and the protocol's keys are, for the plugin to read. A key
    the plugin does not implement or does not know is refused (code 2, naming it): a misspelt
    key silently ignored is how networks end up not doing what their file says. Anything
    under the runtime-reserved "cni.dev/" prefix (GC's valid attachments) passes."""
    return decode_keys(
        raw,
        GoKeys((*known, *PROTOCOL_KEYS)),
        refuse=f"a {plugin} plugin key",
        not_implemented=not_implemented,
    )


def check_runtime_keys(
    runtime_config: Mapping[str, Any], *, plugin: str, known: Collection[str]
) -> dict[str, Any]:
    """``runtimeConfig`` spelt as the capabilities ``known`` are; any other is refused (code
    2): a runtime sends only what the conflist declares for the plugin, so a capability the
    plugin cannot honour is a configuration error, not something to drop on the floor."""
    return decode_keys(
        runtime_config,
        GoKeys(known),
        where="runtimeConfig.",
        refuse=f"a capability the {plugin} plugin reads",
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
