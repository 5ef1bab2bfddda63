"""The `tuning` plugin's configuration, parsed and validated before any kernel call.

Keys follow the reference plugin (reference §2.7): ``sysctl`` (``net.*`` only; the first
``IFNAME`` in a key becomes CNI_IFNAME), ``mac``, ``mtu``, ``promisc``, ``allmulti``,
``txQLen`` and ``dataDir``; per-attachment overrides in ``args.cni`` for all but ``dataDir``.
MAC sources, later wins: ``CNI_ARGS MAC`` < ``runtimeConfig.mac`` < ``args.cni.mac``.

A sysctl key is refused (code 7, naming it) unless it resolves to a file under
``/proc/sys/net/``; whether it exists (and is writable) *inside the container's network
namespace* is checked by the plugin there, before anything is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pycni.cni._fields import (
    GoKeys,
    bad,
    check_plugin_keys,
    check_runtime_keys,
    decode_keys,
    opt_bool,
    opt_int,
    opt_str,
    path_problem,
)
from pycni.cni.errors import CNIError
from pycni.cni.skel import CmdArgs
from pycni.net import sysctl

__all__ = [
    "DEFAULT_DATA_DIR",
    "LinkSettings",
    "Sysctl",
    "TuningConfig",
    "parse_data_dir",
    "parse_tuning_config",
    "sysctl_path",
]

DEFAULT_DATA_DIR: Final = "/run/pycni/tuning"
NET_PREFIX: Final = f"{sysctl.PROC_SYS}/net/"
_TUNING_KEYS: Final = frozenset(
    {"sysctl", "mac", "mtu", "promisc", "allmulti", "txQLen", "dataDir"}
)
# What args.cni may override (everything but dataDir); sysctl is a map of sysctl names, whose
# keys are data, not field names.
_ARGS_KEYS: Final = ("sysctl", "mac", "mtu", "promisc", "allmulti", "txQLen")
_DATA_DIR: Final = GoKeys(("dataDir",))
_NOT_IMPLEMENTED: Final = {
    "allowlist": "pycni has no sysctl allow-list file; only net.* keys inside the netns apply",
}
_MAC_RE: Final = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_MAX_U32: Final = 2**32 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Sysctl:
    key: str  # as configured
    path: str  # the file under /proc/sys/net it resolves to (IFNAME substituted)
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSettings:
    """Link attributes to set; None leaves one untouched."""

    mac: str | None = None
    mtu: int | None = None
    promisc: bool | None = None
    allmulti: bool | None = None
    txqlen: int | None = None

    def __bool__(self) -> bool:
        return any(
            v is not None for v in (self.mac, self.mtu, self.promisc, self.allmulti, self.txqlen)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TuningConfig:
    sysctls: tuple[Sysctl, ...] = ()
    link: LinkSettings = field(default_factory=LinkSettings)
    data_dir: str = DEFAULT_DATA_DIR

    @property
    def empty(self) -> bool:
        return not self.sysctls and not self.link


def _check_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    return check_plugin_keys(
        raw, plugin="tuning", known=_TUNING_KEYS, not_implemented=_NOT_IMPLEMENTED
    )


def _is_path_form(key: str) -> bool:
    """sysctl(8): a key whose first separator is "/" is a path; otherwise dots separate."""
    slash, dot = key.find("/"), key.find(".")
    return slash != -1 and (dot == -1 or slash < dot)


def sysctl_path(key: str, ifname: str) -> str:
    """The file under ``/proc/sys/net/`` that ``key`` names once its first ``IFNAME`` is
    replaced by ``ifname``; code 7 for anything else (other subsystems, ``..``, NUL...)."""
    where = f"sysctl.{key}"
    if not isinstance(key, str) or not key:
        raise bad("sysctl", f"key {key!r} is empty")
    # In the dotted form a "/" stands for a literal dot, so "eth0.100" must become "eth0/100".
    name = ifname if _is_path_form(key) else ifname.replace(".", "/")
    try:
        path = sysctl.path_for(key.replace("IFNAME", name, 1))
    except CNIError as err:
        raise bad(where, err.details or err.msg) from err
    if not path.startswith(NET_PREFIX):
        raise bad(where, f"only net.* keys may be set; {key!r} resolves to {path}")
    return path


def _sysctls(merged: Mapping[str, Any], ifname: str) -> tuple[Sysctl, ...]:
    out: list[Sysctl] = []
    seen: dict[str, str] = {}
    for key, value in merged.items():
        if not isinstance(value, str) or "\0" in value:
            raise bad(f"sysctl.{key}", f"value must be a string without NUL, got {value!r}")
        path = sysctl_path(key, ifname)
        if path in seen:
            raise bad(f"sysctl.{key}", f"names the same sysctl as {seen[path]!r}")
        seen[path] = key
        out.append(Sysctl(key=key, path=path, value=value))
    return tuple(out)


def _sysctl_map(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    value = doc.get("sysctl")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"{where}sysctl", f"must be an object, got {value!r}")
    return value


def _mac(value: Any, source: str) -> str:
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise bad(source, f"{value!r} is not a MAC address")
    if int(value[:2], 16) & 1:
        raise bad(source, f"{value} is a multicast MAC address")
    if value.replace(":", "").strip("0") == "":
        raise bad(source, f"{value} is the all-zero MAC address")
    return value.lower()


def _pick_mac(args: CmdArgs, raw: Mapping[str, Any], cni: Mapping[str, Any]) -> str | None:
    runtime = check_runtime_keys(args.config.runtime_config, plugin="tuning", known=("mac",))
    candidates = [
        ("mac", raw.get("mac")),
        ("CNI_ARGS MAC", args.cni_args.get("MAC")),
        ("runtimeConfig.mac", runtime.get("mac")),
        ("args.cni.mac", cni.get("mac")),
    ]
    chosen = None
    for source, value in candidates:
        if value is not None and value != "":
            chosen = _mac(value, source)
    return chosen


def _int_in(doc: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int | None:
    value = opt_int(doc, key, where)
    if value is not None and not low <= value <= high:
        raise bad(f"{where}{key}", f"{value} is outside {low}..{high}")
    return value


def _link_settings(args: CmdArgs, raw: Mapping[str, Any], cni: Mapping[str, Any]) -> LinkSettings:
    def pick(key: str, low: int, high: int) -> int | None:
        override = _int_in(cni, key, "args.cni.", low, high)
        return override if override is not None else _int_in(raw, key, "", low, high)

    def flag(key: str) -> bool | None:
        for doc, where in ((cni, "args.cni."), (raw, "")):
            if doc.get(key) is not None:
                return opt_bool(doc, key, where)
        return None

    return LinkSettings(
        mac=_pick_mac(args, raw, cni),
        mtu=pick("mtu", 68, 65535),
        promisc=flag("promisc"),
        allmulti=flag("allmulti"),
        txqlen=pick("txQLen", 0, _MAX_U32),
    )


def parse_data_dir(raw: Mapping[str, Any]) -> str:
    """``dataDir``: an absolute directory for the backups of original link values (``raw``
    as the request has it: DEL reads this alone, whatever else the config says)."""
    data_dir = opt_str(decode_keys(raw, _DATA_DIR), "dataDir", default=DEFAULT_DATA_DIR)
    problem = path_problem(data_dir)  # NUL, relative, a '..' component, overlong
    if problem:
        raise bad("dataDir", problem)
    return os.path.normpath(data_dir)


def parse_tuning_config(args: CmdArgs) -> TuningConfig:
    raw = _check_keys(args.config.raw)
    cni = args.config.cni_args_section(_ARGS_KEYS)
    merged = {**_sysctl_map(raw, ""), **_sysctl_map(cni, "args.cni.")}
    return TuningConfig(
        sysctls=_sysctls(merged, args.ifname),
        link=_link_settings(args, raw, cni),
        data_dir=parse_data_dir(raw),
    )
