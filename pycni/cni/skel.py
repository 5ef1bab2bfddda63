"""The plugin skeleton: env + stdin -> one verb of a plugin -> one JSON document + exit code.

It owns all protocol I/O (the shape of containernetworking's ``skel``): plugin modules only
define ``cmd_add``/``cmd_del``/``cmd_check``/``cmd_status``/``cmd_gc``. Env, stdin, stdout and
stderr are injected so the whole protocol is unit-tested without a process, and the fork
server runs the very same ``run`` in its workers.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, Protocol, TextIO

from pycni.cni import jsonio
from pycni.cni import version as versions
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.types import PluginRequest, Result

__all__ = [
    "VERBS",
    "CmdArgs",
    "PluginInfo",
    "PluginModule",
    "main",
    "parse_cni_args",
    "run",
    "validate_container_id",
    "validate_ifname",
    "validate_network_name",
]

VERBS: Final = ("ADD", "DEL", "CHECK", "STATUS", "VERSION", "GC")

# Which CNI_* variables each verb needs (spec §2, as the reference skel enforces them).
_REQUIRED_ENV: Final[Mapping[str, tuple[str, ...]]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": ("CNI_PATH",),
    "GC": ("CNI_PATH",),
    "VERSION": (),
}
# Verb -> the oldest config version that may carry it.
_MIN_VERSION: Final = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}

_CONTAINER_ID_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_MAX_NAME_BYTES: Final = 255  # a network name becomes a path component
_MAX_IFNAME: Final = 15  # IFNAMSIZ - 1


def _byte_len(value: str) -> int:
    """Length in bytes as the kernel sees it (env strings carry undecodable bytes as surrogates)."""
    try:
        return len(os.fsencode(value))
    except UnicodeEncodeError:  # a lone surrogate from JSON: count it, never crash on it
        return len(value.encode(errors="surrogatepass"))


def validate_container_id(value: str) -> None:
    if not value:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "CNI_CONTAINERID is empty")
    # fullmatch, not match: "$" also matches before a trailing newline ("abc\n" would pass).
    if not _CONTAINER_ID_RE.fullmatch(value) or _byte_len(value) > _MAX_NAME_BYTES:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT,
            "invalid CNI_CONTAINERID",
            f"{value!r} must match {_CONTAINER_ID_RE.pattern} and be at most 255 bytes",
        )


def validate_ifname(value: str) -> None:
    problem = ""
    if not value:
        problem = "is empty"
    elif _byte_len(value) > _MAX_IFNAME:  # IFNAMSIZ counts bytes, not characters
        problem = f"is longer than {_MAX_IFNAME} characters"
    elif value in (".", ".."):
        problem = "may not be . or .."
    elif any(c in value for c in "/:%\0") or any(c.isspace() for c in value):
        # '%': the kernel takes "eth%d" as a template and names the link eth0, eth1...
        problem = "may not contain '/', ':', '%', NUL or whitespace"
    if problem:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "invalid CNI_IFNAME", f"{value!r} {problem}")


def validate_network_name(value: str) -> None:
    """The network name becomes a directory and file name: keep it one safe path component."""
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\0" in value
        or _byte_len(value) > _MAX_NAME_BYTES
        or not _CONTAINER_ID_RE.fullmatch(value)  # not match: "$" passes a trailing newline
    ):
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "invalid network name",
            f"{value!r} must match {_CONTAINER_ID_RE.pattern} and be at most 255 bytes",
        )


def parse_cni_args(text: str, known: frozenset[str] | None = None) -> dict[str, str]:
    """``K=V;K2=V2`` -> dict. Unknown keys are refused unless ``IgnoreUnknown`` is true."""
    pairs: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CNIError(
                ErrorCode.INVALID_ENVIRONMENT, "invalid CNI_ARGS", f"{item!r} is not K=V"
            )
        pairs[key] = value
    ignore = pairs.get("IgnoreUnknown", "").lower() in ("1", "true")
    if known is not None and not ignore:
        unknown = sorted(set(pairs) - known - {"IgnoreUnknown"})
        if unknown:
            raise CNIError(
                ErrorCode.INVALID_ENVIRONMENT,
                "unknown keys in CNI_ARGS",
                f"{unknown} (set IgnoreUnknown=1 to ignore them)",
            )
    return pairs


@dataclass(frozen=True, slots=True, kw_only=True)
class CmdArgs:
    """Everything a plugin verb receives, validated."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    cni_args: Mapping[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()
    stdin: bytes = b""
    config: PluginRequest
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def cni_version(self) -> str:
        return self.config.cni_version

    @property
    def network(self) -> str:
        return self.config.name

    def valid_attachments(self) -> frozenset[tuple[str, str]]:
        """GC's ``cni.dev/valid-attachments`` (or the old ``cni.dev/attachments`` spelling)."""
        raw = self.config.raw
        items = raw.get("cni.dev/valid-attachments", raw.get("cni.dev/attachments")) or []
        if not isinstance(items, list):
            raise CNIError(ErrorCode.DECODING_FAILURE, "cni.dev/valid-attachments must be a list")
        valid: set[tuple[str, str]] = set()
        for item in items:
            if not isinstance(item, dict):
                raise CNIError(ErrorCode.DECODING_FAILURE, "bad entry in cni.dev/valid-attachments")
            valid.add((str(item.get("containerID", "")), str(item.get("ifname", ""))))
        return frozenset(valid)


class PluginModule(Protocol):
    """What a plugin module provides; every verb but ADD is optional (missing = no-op)."""

    def cmd_add(self, args: CmdArgs) -> Result: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginInfo:
    """What skel must know before importing the plugin module (VERSION needs no import)."""

    name: str
    module: str
    versions: tuple[str, ...] = versions.SUPPORTED
    known_cni_args: frozenset[str] = frozenset()
    # Plugins that legitimately act on the runtime's own netns (host mode) opt in.
    allow_own_netns: bool = False
    load: Callable[[str], Any] = importlib.import_module


@dataclass(slots=True)
class _Session:
    env: Mapping[str, str]
    stdout: TextIO
    stderr: TextIO
    cni_version: str | None = None


def _read_stdin(stdin: BinaryIO) -> bytes:
    try:
        return stdin.read()
    except OSError as err:
        raise CNIError(ErrorCode.IO_FAILURE, "error reading stdin", str(err)) from err


def _decode_config(data: bytes) -> dict[str, Any]:
    try:
        doc = jsonio.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise CNIError(
            ErrorCode.DECODING_FAILURE, "error decoding network config", str(err)
        ) from err
    if not isinstance(doc, dict):
        raise CNIError(ErrorCode.DECODING_FAILURE, "network config must be a JSON object")
    return doc


def _sniff_version(data: bytes) -> str | None:
    """The request's cniVersion if stdin names one, so even an env error can carry it."""
    try:
        doc = jsonio.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    found = doc.get("cniVersion") if isinstance(doc, dict) else None
    return found if isinstance(found, str) and found else None


def _command(env: Mapping[str, str]) -> str:
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing"
        )
    if command not in VERBS:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT, "unknown CNI_COMMAND", f"{command!r}, expected {VERBS}"
        )
    return command


def _check_env(command: str, env: Mapping[str, str]) -> None:
    missing = [k for k in _REQUIRED_ENV[command] if not env.get(k)]
    if missing:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing"
        )
    if env.get("CNI_CONTAINERID") or "CNI_CONTAINERID" in _REQUIRED_ENV[command]:
        validate_container_id(env.get("CNI_CONTAINERID", ""))
    if env.get("CNI_IFNAME") or "CNI_IFNAME" in _REQUIRED_ENV[command]:
        validate_ifname(env.get("CNI_IFNAME", ""))


def _version_answer(info: PluginInfo, stdin: BinaryIO) -> dict[str, Any]:
    # The spec echoes the input's cniVersion; an empty or odd stdin still gets an answer.
    asked = versions.CURRENT
    try:
        doc = jsonio.loads(stdin.read() or b"{}")
        if isinstance(doc, dict) and isinstance(doc.get("cniVersion"), str) and doc["cniVersion"]:
            asked = doc["cniVersion"]
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    return {"cniVersion": asked, "supportedVersions": list(info.versions)}


def _check_own_netns(info: PluginInfo, command: str, env: Mapping[str, str]) -> None:
    """Refuse a CNI_NETNS that is our own netns (a recycled /proc/PID/ns/net, plugins#714)."""
    path = env.get("CNI_NETNS", "")
    if not path or info.allow_own_netns or command not in ("ADD", "DEL", "CHECK"):
        return
    if env.get("CNI_NETNS_OVERRIDE", "").lower() in ("1", "true"):
        return
    try:
        own = os.stat("/proc/thread-self/ns/net")
        target = os.stat(path)
    except OSError:
        return  # a missing netns is the plugin's to judge (DEL: already gone)
    if (own.st_dev, own.st_ino) == (target.st_dev, target.st_ino):
        raise CNIError(
            ErrorCode.INVALID_NETNS,
            "plugin's netns and netns from CNI_NETNS should not be the same",
            path,
        )


def _check_version(info: PluginInfo, command: str, cni_version: str) -> None:
    versions.require_supported(cni_version, info.versions)
    minimum = _MIN_VERSION.get(command)
    if minimum and not versions.at_least(cni_version, minimum):
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
            f"config version does not allow {command}",
            f"{command} needs cniVersion >= {minimum}, config has {cni_version}",
        )


def _build_args(info: PluginInfo, command: str, env: Mapping[str, str], data: bytes) -> CmdArgs:
    doc = _decode_config(data)
    raw_version = doc.get("cniVersion")
    if isinstance(raw_version, str) and raw_version:
        # Version first (as skel does): a config of a version we do not speak is refused
        # with code 1, not with a code 7 about some field whose meaning we do not know.
        _check_version(info, command, raw_version)
    config = PluginRequest.from_dict(doc)  # refuses a missing or non-string cniVersion
    validate_network_name(config.name)
    _check_own_netns(info, command, env)
    return CmdArgs(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        cni_args=parse_cni_args(env.get("CNI_ARGS", ""), info.known_cni_args),
        path=tuple(p for p in env.get("CNI_PATH", "").split(os.pathsep) if p),
        stdin=data,
        config=config,
        env=env,
    )


def _dispatch(info: PluginInfo, args: CmdArgs) -> Result | None:
    module = info.load(info.module)
    verb = {
        "ADD": "cmd_add",
        "DEL": "cmd_del",
        "CHECK": "cmd_check",
        "STATUS": "cmd_status",
        "GC": "cmd_gc",
    }[args.command]
    handler = getattr(module, verb, None)
    if handler is None:
        if args.command == "ADD":
            raise CNIError(ErrorCode.INTERNAL, f"plugin {info.name} has no ADD")
        return None  # the reference skel: a verb a plugin does not implement succeeds
    result = handler(args)
    if args.command == "ADD" and not isinstance(result, Result):
        raise CNIError(ErrorCode.INTERNAL, f"plugin {info.name} returned no result from ADD")
    # Only ADD prints a result: DEL/CHECK/STATUS/GC have empty stdout on success (spec §2),
    # even if a plugin's handler happens to return one.
    return result if args.command == "ADD" else None


def _emit(session: _Session, doc: Mapping[str, Any]) -> None:
    session.stdout.write(json.dumps(doc) + "\n")
    session.stdout.flush()


def run(
    info: PluginInfo, *, env: Mapping[str, str], stdin: BinaryIO, stdout: TextIO, stderr: TextIO
) -> int:
    """One plugin call. Exactly one JSON document reaches stdout; returns the exit status."""
    session = _Session(env=env, stdout=stdout, stderr=stderr)
    try:
        command = _command(env)
        if command == "VERSION":
            _emit(session, _version_answer(info, stdin))
            return 0
        data = _read_stdin(stdin)
        session.cni_version = _sniff_version(data)  # errors from here on name the version
        _check_env(command, env)
        args = _build_args(info, command, env, data)
        result = _dispatch(info, args)
        if result is not None:
            _emit(session, result.to_dict(args.cni_version))
    except CNIError as err:
        _emit(session, err.to_dict(session.cni_version))
        return 1
    except Exception as err:
        traceback.print_exc(file=stderr)
        internal = CNIError(
            ErrorCode.INTERNAL, f"{info.name} failed", f"{type(err).__name__}: {err}"
        )
        _emit(session, internal.to_dict(session.cni_version))
        return 1
    return 0


def main(info: PluginInfo) -> None:
    """Entry point of a plugin executable run in-process."""
    sys.exit(
        run(info, env=os.environ, stdin=sys.stdin.buffer, stdout=sys.stdout, stderr=sys.stderr)
    )
