"""The plugin skeleton: env + stdin -> one verb of a plugin -> one JSON document + exit code.

It owns all protocol I/O (the shape of containernetworking's ``skel``): plugin modules only
define ``cmd_add``/``cmd_del``/``cmd_check``/``cmd_status``/``cmd_gc``. Env, stdin, stdout and
stderr are injected so the whole protocol is unit-tested without a process, and the fork
server runs the very same ``run`` in its workers.

``CNI_NETNS`` is opened here, once, into a ``NetNS`` handle on ``CmdArgs`` (closed after the
verb): the plugin and every layer under it act on that descriptor, never on the path again.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, Protocol, TextIO

from pycni.cni import jsonio
from pycni.cni import version as versions
from pycni.cni.errors import CNIError, ErrorCode, NetNSNotFound
from pycni.cni.handle import NetNS, open_netns_handle
from pycni.cni.names import validate_container_id, validate_ifname, validate_network_name
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
    # CNI_NETNS opened once (skel closes it after the verb); None when CNI_NETNS is empty or
    # is not a network namespace (DEL: already gone). ``netns`` stays the path, for results.
    netns_handle: NetNS | None = None
    netns_problem: str = ""  # why CNI_NETNS could not be opened

    def container_netns(self) -> NetNS:
        """The container's netns handle; ``NetNSNotFound`` when there is none to act in."""
        if self.netns_handle is None:
            raise NetNSNotFound(self.netns, self.netns_problem or "CNI_NETNS is empty")
        return self.netns_handle

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
    # IPAM and the firewall never act inside the container: skel does not open CNI_NETNS.
    acts_in_netns: bool = True
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


def _check_own_netns(
    info: PluginInfo, command: str, env: Mapping[str, str], handle: NetNS | None
) -> None:
    """Refuse a CNI_NETNS that is our own netns (a recycled /proc/PID/ns/net, plugins#714).
    Only for plugins that act in it (``handle``): IPAM and the firewall never do."""
    if handle is None or info.allow_own_netns or command not in ("ADD", "DEL", "CHECK"):
        return  # none, or a missing netns: the plugin's to judge (DEL: already gone)
    if env.get("CNI_NETNS_OVERRIDE", "").lower() in ("1", "true"):
        return
    own = os.stat("/proc/thread-self/ns/net")
    target = os.fstat(handle.fd)
    if (own.st_dev, own.st_ino) == (target.st_dev, target.st_ino):
        raise CNIError(
            ErrorCode.INVALID_NETNS,
            "plugin's netns and netns from CNI_NETNS should not be the same",
            handle.path,
        )


def _open_netns(info: PluginInfo, command: str, path: str) -> tuple[NetNS | None, str]:
    """CNI_NETNS as a handle, or None and why not (the verb decides whether that matters)."""
    if not path or not info.acts_in_netns or command not in ("ADD", "DEL", "CHECK"):
        return None, ""
    try:
        return open_netns_handle(path), ""
    except NetNSNotFound as err:
        return None, err.details


def _check_version(info: PluginInfo, command: str, cni_version: str) -> None:
    versions.require_supported(cni_version, info.versions)
    minimum = _MIN_VERSION.get(command)
    if minimum and not versions.at_least(cni_version, minimum):
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
            f"config version does not allow {command}",
            f"{command} needs cniVersion >= {minimum}, config has {cni_version}",
        )


def _build_args(
    info: PluginInfo,
    command: str,
    env: Mapping[str, str],
    data: bytes,
    netns: tuple[NetNS | None, str],
) -> CmdArgs:
    handle, problem = netns
    doc = _decode_config(data)
    raw_version = doc.get("cniVersion")
    if isinstance(raw_version, str) and raw_version:
        # Version first (as skel does): a config of a version we do not speak is refused
        # with code 1, not with a code 7 about some field whose meaning we do not know.
        _check_version(info, command, raw_version)
    config = PluginRequest.from_dict(doc)  # refuses a missing or non-string cniVersion
    validate_network_name(config.name)
    _check_own_netns(info, command, env, handle)
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
        netns_handle=handle,
        netns_problem=problem,
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
    handle: NetNS | None = None
    try:
        if env.get("CNI_COMMAND") == "VERSION":
            _emit(session, _version_answer(info, stdin))
            return 0
        data = _read_stdin(stdin)
        # Errors from here on name the version, a missing or unknown CNI_COMMAND's too.
        session.cni_version = _sniff_version(data)
        command = _command(env)
        _check_env(command, env)
        handle, problem = _open_netns(info, command, env.get("CNI_NETNS", ""))
        args = _build_args(info, command, env, data, (handle, problem))
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
    finally:
        if handle is not None:
            handle.close()
    return 0


def main(info: PluginInfo) -> int:
    """A plugin executable's call run in-process, on this process's environment and stdio:
    its exit status (the launcher exits with it)."""
    return run(info, env=os.environ, stdin=sys.stdin.buffer, stdout=sys.stdout, stderr=sys.stderr)
