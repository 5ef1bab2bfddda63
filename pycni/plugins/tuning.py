"""`tuning`: sysctls and link attributes of the container interface, as a chained plugin.

ADD, under an undo stack: find the interface in the container netns -> check every sysctl
exists and is writable *there* (a ``net.*`` key the container's netns does not have, or has
read-only, is a host-wide setting and is refused with code 7) -> back up the original link
values -> write the sysctls -> set promisc, mtu, mac, allmulti, txqlen -> the result with the
new MAC. Sysctls are only ever written inside the container's netns.

The backup (``<dataDir>/<network>/<containerID>_<ifname>.json``, the reference's layout one
directory down so GC can scope it to a network) is what DEL restores; as in the reference,
sysctls are not restored on DEL: they live and die with the container's netns. DEL never
fails on a restore error (it would stop the DEL chain before the IPAM release): it says so on
stderr and removes the backup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, Final

from pycni.cni._fields import bad
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.handle import NetNS
from pycni.cni.skel import (
    CmdArgs,
    validate_container_id,
    validate_ifname,
    validate_network_name,
)
from pycni.cni.types import Interface, Result
from pycni.net import links, netns, sysctl
from pycni.net.ipr import IPR, open_ipr
from pycni.plugins.tuning_conf import (
    LinkSettings,
    Sysctl,
    TuningConfig,
    parse_data_dir,
    parse_tuning_config,
)
from pycni.plugins.tuning_link import LinkState, read_link, set_allmulti, set_mtu, set_txqlen

__all__ = ["backup_path", "cmd_add", "cmd_check", "cmd_del", "cmd_gc"]

_NAME_MAX: Final = 255


def _backup_file(container_id: str, ifname: str) -> str:
    name = f"{container_id}_{ifname}.json"
    if len(name.encode()) > _NAME_MAX:  # a 255-byte container id: hash rather than fail
        name = hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest() + ".json"
    return name


def backup_path(data_dir: str, network: str, container_id: str, ifname: str) -> str:
    """Where the original link values of one attachment are kept. Every name is validated:
    none of them can climb out of ``data_dir``."""
    validate_network_name(network)
    validate_container_id(container_id)
    validate_ifname(ifname)
    return os.path.join(data_dir, network, _backup_file(container_id, ifname))


def _require_prev(args: CmdArgs) -> Result:
    prev = args.config.prev_result
    if prev is None:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "tuning must be called as a chained plugin",
            "the request has no prevResult",
        )
    return prev


def _read_target(cont: IPR, args: CmdArgs) -> LinkState:
    state = read_link(cont, args.ifname)
    if state is None:
        raise CNIError(ErrorCode.INTERNAL, f"{args.ifname} not found in {args.netns}")
    return state


# ---------------------------------------------------------------------------- backup file


def _load_backup(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        print(f"tuning: ignoring unreadable backup {path}: {err}", file=sys.stderr)
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_backup(path: str, doc: dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a crash leaves the old backup or the new one
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CNIError(
            ErrorCode.IO_FAILURE, f"cannot write tuning backup {path}", str(err)
        ) from err


def _remove_backup(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        print(f"tuning: cannot remove backup {path}: {err}", file=sys.stderr)


def _originals(state: LinkState, want: LinkSettings) -> dict[str, Any]:
    """The current values of exactly the attributes about to change (the reference's keys)."""
    doc: dict[str, Any] = {"ifName": state.name}
    if want.mac is not None:
        doc["mac"] = state.mac
    if want.mtu is not None:
        doc["mtu"] = state.mtu
    if want.promisc is not None:
        doc["promisc"] = state.promisc
    if want.allmulti is not None:
        doc["allmulti"] = state.allmulti
    if want.txqlen is not None:
        doc["txQLen"] = state.txqlen
    return doc


def _save_backup(path: str, originals: dict[str, Any], undo: contextlib.ExitStack) -> None:
    """Write the backup; one left by an earlier ADD of this attachment holds older originals,
    so its values win over ours."""
    previous = _load_backup(path)
    _write_backup(path, {**originals, **(previous or {})})
    if previous is None:
        undo.callback(_remove_backup, path)
    else:
        undo.callback(_write_backup, path, previous)


# ---------------------------------------------------------------------------- link attributes


def _apply_link(cont: IPR, index: int, want: LinkSettings) -> None:
    """In the reference's order: promisc, mtu, mac, allmulti, txqlen."""
    if want.promisc is not None:
        links.set_promisc(cont, index, want.promisc)
    if want.mtu is not None:
        set_mtu(cont, index, want.mtu)
    if want.mac is not None:
        links.set_mac(cont, index, want.mac)
    if want.allmulti is not None:
        set_allmulti(cont, index, want.allmulti)
    if want.txqlen is not None:
        set_txqlen(cont, index, want.txqlen)


def _restore_link(cont: IPR, index: int, doc: dict[str, Any]) -> list[str]:
    """Set back every attribute in a backup document; problems are returned, not raised."""
    problems: list[str] = []
    steps: tuple[tuple[str, type, Callable[[Any], None]], ...] = (
        ("txQLen", int, lambda v: set_txqlen(cont, index, v)),
        ("allmulti", bool, lambda v: set_allmulti(cont, index, v)),
        ("mac", str, lambda v: links.set_mac(cont, index, v)),
        ("mtu", int, lambda v: set_mtu(cont, index, v)),
        ("promisc", bool, lambda v: links.set_promisc(cont, index, v)),
    )
    for key, kind, step in steps:
        value = doc.get(key)
        if value is None:
            continue
        if not isinstance(value, kind):
            problems.append(f"backup {key}={value!r} is not a {kind.__name__}")
            continue
        try:
            step(value)
        except CNIError as err:
            problems.append(f"restore {key}: {err}")
    return problems


def _undo_restore(cont: IPR, index: int, doc: dict[str, Any]) -> None:
    for problem in _restore_link(cont, index, doc):
        print(f"tuning: rollback: {problem}", file=sys.stderr)


# ---------------------------------------------------------------------------- sysctls


def _check_sysctls(container: NetNS, sysctls: tuple[Sysctl, ...]) -> None:
    """Every key must name a writable file of the container's own netns (code 7 otherwise)."""
    with netns.enter(container):
        for item in sysctls:
            if not os.path.isfile(item.path):
                raise bad(
                    f"sysctl.{item.key}",
                    f"{item.path} does not exist in the container's network namespace",
                )
            if not os.access(item.path, os.W_OK):
                raise bad(
                    f"sysctl.{item.key}",
                    f"{item.path} is read-only in the container's network namespace "
                    "(a host-wide setting)",
                )


def _restore_sysctl(container: NetNS, path: str, value: str) -> None:
    try:
        with netns.enter(container):
            sysctl.write(path, value)
    except CNIError as err:
        print(f"tuning: rollback of {path} failed: {err}", file=sys.stderr)


def _write_sysctls(
    container: NetNS, sysctls: tuple[Sysctl, ...], undo: contextlib.ExitStack
) -> None:
    with netns.enter(container):
        for item in sysctls:
            old = sysctl.read(item.path)
            try:
                sysctl.write(item.path, item.value)
            except CNIError as err:  # exists and is writable (checked): the value was refused
                raise bad(f"sysctl.{item.key}", err.details or err.msg) from err
            undo.callback(_restore_sysctl, container, item.path, old)


# ---------------------------------------------------------------------------- ADD


@contextlib.contextmanager
def _undo_on_failure() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as undo:
        yield undo
        undo.pop_all()  # success: keep everything


def _updated_result(prev: Result, args: CmdArgs, state: LinkState, want: LinkSettings) -> Result:
    """prevResult with the container interface's new MAC (and MTU) in it."""

    def update(iface: Interface) -> Interface:
        if iface.name != args.ifname or not iface.sandbox:
            return iface
        return dataclasses.replace(
            iface,
            mac=state.mac if want.mac is not None else iface.mac,
            mtu=state.mtu if want.mtu is not None else iface.mtu,
        )

    interfaces = tuple(update(i) for i in prev.interfaces)
    return dataclasses.replace(prev, cni_version=args.cni_version, interfaces=interfaces)


def _apply(args: CmdArgs, conf: TuningConfig, cont: IPR, undo: contextlib.ExitStack) -> None:
    state = _read_target(cont, args)
    container = args.container_netns()
    _check_sysctls(container, conf.sysctls)  # all refused before anything is written
    originals = _originals(state, conf.link)
    if conf.link:
        path = backup_path(conf.data_dir, args.network, args.container_id, args.ifname)
        _save_backup(path, originals, undo)
    _write_sysctls(container, conf.sysctls, undo)  # sysctls first, as the reference does
    if conf.link:
        undo.callback(_undo_restore, cont, state.index, originals)
        _apply_link(cont, state.index, conf.link)


def cmd_add(args: CmdArgs) -> Result:
    conf = parse_tuning_config(args)
    prev = _require_prev(args)
    if conf.empty:
        return dataclasses.replace(prev, cni_version=args.cni_version)
    with open_ipr(args.container_netns()) as cont, _undo_on_failure() as undo:
        _apply(args, conf, cont, undo)
        state = _read_target(cont, args)
    return _updated_result(prev, args, state, conf.link)


# ---------------------------------------------------------------------------- DEL, GC


def _restore_in_container(args: CmdArgs, doc: dict[str, Any]) -> list[str]:
    if args.netns_handle is None:
        return []  # none given, or gone already: the interface went with it
    with open_ipr(args.netns_handle) as cont:
        state = read_link(cont, args.ifname)
        if state is None:
            return []  # the interface is gone, and its attributes with it
        return _restore_link(cont, state.index, doc)


def cmd_del(args: CmdArgs) -> None:
    """Restore the backed-up link values; "already gone" is success, and so is a failed
    restore (reported on stderr), so the DEL chain always reaches the IPAM release."""
    path = backup_path(
        parse_data_dir(args.config.raw), args.network, args.container_id, args.ifname
    )
    doc = _load_backup(path)
    if doc is None:
        return
    for problem in _restore_in_container(args, doc):
        print(f"tuning: DEL {args.container_id}/{args.ifname}: {problem}", file=sys.stderr)
    _remove_backup(path)


def _valid_files(args: CmdArgs) -> set[str]:
    keep = set()
    for container_id, ifname in args.valid_attachments():
        try:
            validate_container_id(container_id)
            validate_ifname(ifname)
        except CNIError:
            continue  # cannot name a backup of ours
        keep.add(_backup_file(container_id, ifname))
    return keep


def cmd_gc(args: CmdArgs) -> None:
    """Remove the backups of this network's attachments that are not in the valid list."""
    directory = os.path.join(parse_data_dir(args.config.raw), args.network)
    keep = _valid_files(args)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    except OSError as err:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot list {directory}", str(err)) from err
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and entry.name not in keep:
            _remove_backup(entry.path)


# ---------------------------------------------------------------------------- CHECK


def _link_problems(state: LinkState, want: LinkSettings) -> list[str]:
    expected = {
        "mac": want.mac,
        "mtu": want.mtu,
        "promisc": want.promisc,
        "allmulti": want.allmulti,
        "txqlen": want.txqlen,
    }
    return [
        f"{state.name} {name} is {getattr(state, name)!r}, expected {value!r}"
        for name, value in expected.items()
        if value is not None and getattr(state, name) != value
    ]


def _sysctl_problems(container: NetNS, sysctls: tuple[Sysctl, ...]) -> list[str]:
    problems = []
    with netns.enter(container):
        for item in sysctls:
            have = sysctl.read(item.path)
            if have.split() != item.value.split():
                problems.append(f"sysctl {item.key} is {have!r}, expected {item.value!r}")
    return problems


def cmd_check(args: CmdArgs) -> None:
    conf = parse_tuning_config(args)
    _require_prev(args)
    with open_ipr(args.container_netns()) as cont:
        problems = _link_problems(_read_target(cont, args), conf.link)
    problems += _sysctl_problems(args.container_netns(), conf.sysctls)
    if problems:
        raise CNIError(ErrorCode.INTERNAL, "tuning CHECK failed", "; ".join(problems))
