"""The host-local operations the plugin glue calls; each one runs under the network's lock.

Error codes (a ``CNIError`` is raised unless said otherwise):

- 7  invalid config or request: raised by ``config`` before anything is touched, for a
     requested address outside every range set, equal to a gateway, or two in one set, and
     for a second allocation to an attachment that holds one (an ADD without its DEL);
     retrying cannot help.
- 999 no address left in a range set, requested address taken: the reference returns these
     as plain errors, which its skel turns into 999; no spec code fits (11 "try again later"
     would invite pointless retries).
- 5  I/O failure on the data dir; 11 the network's lock was not obtained in time.

ADD is all or nothing: the whole plan (one address per range set) is chosen first, so an
exhausted set fails before anything is written, and the writes themselves are undone if
one of them fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import ParamSpec

from pycni.cni.errors import CNIError, ErrorCode
from pycni.failpoints import failpoint
from pycni.ipam.allocator import (
    Allocation,
    capacity,
    describe,
    iter_candidates,
    make_allocation,
    place_requested,
    range_for,
)
from pycni.ipam.config import HostLocalConfig, IPAddress, IPRange
from pycni.ipam.store import Store, attachment_key, network_dir, open_store, parse_owner

__all__ = ["allocate", "find", "gc", "release", "status"]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
Attachment = tuple[str, str]  # (containerID, ifname)


def _quietly(fn: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs) -> None:
    """Run an undo step; its failure is logged, never allowed to hide the original error."""
    try:
        fn(*args, **kwargs)
    except CNIError as err:
        log.warning("rollback step failed: %s", err)


def _pick(
    store: Store,
    *,
    index: int,
    range_set: Sequence[IPRange],
    wanted: tuple[IPAddress, IPRange] | None,
    held: Sequence[IPAddress],
    container_id: str,
) -> tuple[IPAddress, IPRange]:
    """The address range set ``index`` gives this attachment (nothing is written yet)."""
    dup = next((ip for ip in held if range_for(range_set, ip) is not None), None)
    if dup is not None:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{dup} has been allocated to {container_id}, duplicate allocation is not allowed",
        )
    if wanted is not None:
        if store.is_reserved(wanted[0]):
            raise CNIError(
                ErrorCode.INTERNAL,
                f"requested IP address {wanted[0]} is not available in range set "
                f"{describe(range_set)}",
            )
        return wanted
    for ip, rng in iter_candidates(range_set, store.last_reserved(index)):
        if not store.is_reserved(ip):
            return ip, rng
    raise CNIError(
        ErrorCode.INTERNAL, f"no IP addresses available in range set: {describe(range_set)}"
    )


def _commit(
    store: Store,
    picks: Sequence[tuple[IPAddress, IPRange]],
    *,
    held: Sequence[IPAddress],
    container_id: str,
    ifname: str,
) -> None:
    """Write the plan: index, then one exclusive file per address, then the hints."""
    ips = [ip for ip, _ in picks]
    with contextlib.ExitStack() as undo:
        # The index goes first: if we die after it, it lists files that are missing or not
        # ours (both ignored on release), never a reservation it does not know about.
        store.write_index(container_id, ifname, [*held, *ips])
        undo.callback(_quietly, store.write_index, container_id, ifname, held)
        failpoint("hostlocal.add.after_index")
        for ip in ips:
            if not store.reserve(ip, container_id=container_id, ifname=ifname):
                # Only a writer ignoring the lock can get here between our check and create.
                raise CNIError(ErrorCode.INTERNAL, f"{ip} was reserved concurrently")
            undo.callback(_quietly, store.remove_ip, ip)
            failpoint("hostlocal.add.after_reserve")
        for index, ip in enumerate(ips):
            store.set_last_reserved(index, ip)
        failpoint("hostlocal.add.after_hints")
        undo.pop_all()


def allocate(
    config: HostLocalConfig,
    *,
    network: str,
    container_id: str,
    ifname: str,
    requested: Sequence[IPAddress] = (),
) -> list[Allocation]:
    """Reserve one address per range set for the attachment, all of them or none.

    ``requested`` (see ``requested.requested_ips``) are placed into their range sets; the
    other sets get the next free address in round-robin order.
    """
    wanted = place_requested(config.range_sets, requested)
    with open_store(config.data_dir, network) as store:
        held = store.attachment_ips(container_id, ifname)
        picks = [
            _pick(
                store,
                index=i,
                range_set=rs,
                wanted=wanted.get(i),
                held=held,
                container_id=container_id,
            )
            for i, rs in enumerate(config.range_sets)
        ]
        _commit(store, picks, held=held, container_id=container_id, ifname=ifname)
    failpoint("hostlocal.add.after_unlock")
    return [make_allocation(ip, rng, i) for i, (ip, rng) in enumerate(picks)]


def release(config: HostLocalConfig, *, network: str, container_id: str, ifname: str) -> None:
    """Release every address of the attachment; already gone (or never there) is success."""
    if not os.path.isdir(network_dir(config.data_dir, network)):
        return  # the network was never used here: nothing to release, nothing to create
    failed: list[tuple[IPAddress, CNIError]] = []
    with open_store(config.data_dir, network, release_only=True) as store:
        for ip in store.attachment_ips(container_id, ifname):
            try:
                store.remove_ip(ip)
            except CNIError as err:
                failed.append((ip, err))
            failpoint("hostlocal.del.after_remove")
        # What could not be removed stays indexed, so that a repeated DEL still finds it.
        store.write_index(container_id, ifname, [ip for ip, _ in failed])
        failpoint("hostlocal.del.after_index")
    if failed:
        raise CNIError(
            ErrorCode.IO_FAILURE,
            f"cannot release {', '.join(str(ip) for ip, _ in failed)} of {container_id}",
            "; ".join(str(err) for _, err in failed),
        )


def find(config: HostLocalConfig, *, network: str, container_id: str, ifname: str) -> list[str]:
    """The addresses (no prefix) the attachment holds, for CHECK."""
    if not os.path.isdir(network_dir(config.data_dir, network)):
        return []
    with open_store(config.data_dir, network, release_only=True) as store:
        return [str(ip) for ip in store.attachment_ips(container_id, ifname)]


def _collect(
    errors: list[str], fn: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs
) -> None:
    """GC keeps going: a failed step is reported with the others, never stops the rest."""
    try:
        fn(*args, **kwargs)
    except CNIError as err:
        errors.append(str(err))


def _gc_reservations(
    store: Store, valid: Collection[Attachment], errors: list[str]
) -> tuple[dict[Attachment, list[IPAddress]], bool]:
    """Remove reservations of attachments not in ``valid``; return what is left, by owner.

    The flag says a legacy ``<id>`` file of a valid container survived: it has no ifname,
    so it cannot be indexed and the directory must keep being scanned.
    """
    valid_ids = {cid for cid, _ in valid}
    owned: dict[Attachment, list[IPAddress]] = {}
    unindexable = False
    for ip, content in store.scan():
        owner = parse_owner(content)
        cid, ifname = owner if owner is not None else ("", None)
        if ifname is None and cid in valid_ids:
            unindexable = True
        elif ifname is not None and (cid, ifname) in valid:
            owned.setdefault((cid, ifname), []).append(ip)
        else:
            _collect(errors, store.remove_ip, ip)
    return owned, unindexable


def _gc_index(store: Store, owned: Mapping[Attachment, list[IPAddress]], errors: list[str]) -> None:
    """Make the index say exactly what is on disk: drop stale entries, add missing ones."""
    current: dict[Attachment, frozenset[IPAddress]] = {}
    for key, entry in store.index_entries():
        if entry is not None and entry[:2] in owned and key == attachment_key(*entry[:2]):
            current[entry[:2]] = frozenset(entry[2])
        else:
            _collect(errors, store.remove_index_entry, key)
    for (cid, ifname), ips in owned.items():
        if current.get((cid, ifname)) != frozenset(ips):
            _collect(errors, store.write_index, cid, ifname, ips)


def gc(config: HostLocalConfig, *, network: str, valid: Collection[Attachment]) -> list[str]:
    """Remove every reservation whose (containerID, ifname) is not in ``valid``.

    Returns the errors met (empty on success) instead of stopping at the first. A GC that
    leaves every reservation indexed marks the directory so later lookups skip the scan;
    it is also how state written by the reference plugin gets indexed.
    """
    if not os.path.isdir(network_dir(config.data_dir, network)):
        return []
    keep = frozenset(valid)
    errors: list[str] = []
    try:
        with open_store(config.data_dir, network) as store:
            owned, unindexable = _gc_reservations(store, keep, errors)
            _gc_index(store, owned, errors)
            _collect(errors, store.remove_temp_files)
            if not errors and not unindexable:
                _collect(errors, store.mark_indexed)
    except CNIError as err:
        errors.append(str(err))
    return errors


def _space_problem(path: str) -> str | None:
    try:
        st = os.statvfs(path)
    except OSError as err:
        return f"cannot stat {path}: {err}"
    if st.f_flag & os.ST_RDONLY:
        return f"{path} is on a read-only file system"
    if st.f_bavail == 0:
        return f"no space left on the file system of {path}"
    if st.f_files and st.f_favail == 0:  # f_files 0: no inode limit (tmpfs may say so)
        return f"no inodes left on the file system of {path}"
    if not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None


def _exhausted(config: HostLocalConfig, store: Store) -> str | None:
    reserved = store.reserved_ips()
    for i, range_set in enumerate(config.range_sets):
        used = sum(1 for ip in reserved if range_for(range_set, ip) is not None)
        if used >= capacity(range_set):
            return f"no IP addresses available in range set {i}: {describe(range_set)}"
    return None


def status(config: HostLocalConfig, *, network: str) -> str | None:
    """Why an ADD would fail now (data dir unusable or full, a range set exhausted), or None.

    Informational, as STATUS is: the glue turns a message into error 50.
    """
    try:
        with open_store(config.data_dir, network) as store:
            return _space_problem(store.path) or _exhausted(config, store)
    except CNIError as err:
        return str(err)
