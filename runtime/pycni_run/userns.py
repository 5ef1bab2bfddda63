"""A container in a user namespace of its own: its ids reserved, its init started inside it.

The order runc and crun use (``reference/runtime.md`` §1.1-1.2): the user namespace is made
first and alone, its maps are written from outside, and only then are the other namespaces
made, by a process inside it, so that it owns them (the netns above all: CNI ADD then runs in a
netns owned by the container's user namespace, the plugins acting in it as the host's root
through its descriptor). Here, for a container with mappings (``idmaps``):

1. the runtime forks an intermediate process; still the host's root, it clones what the init
   will mount from the host (``detached.open_host_trees``), then ``unshare(CLONE_NEWUSER)``;
2. the runtime writes its ``uid_map``/``gid_map`` (through its pidfd, ``pidfds.write_proc``),
   makes the rootfs overlay with layers idmapped by that user namespace
   (``detached.idmapped_rootfs``) and hands it over;
3. the intermediate becomes root inside (the mapped root outside), makes the pid namespace
   (owned by the user namespace, so the init can mount its /proc) and forks the init as its
   PID 1, which carries on with ``process.init_main`` as any init would (its mount, uts, ipc,
   net and later cgroup namespaces are made by it, inside the user namespace);
4. the runtime opens a pidfd of the init before the intermediate exits: the init is then
   re-parented to the runtime (a child subreaper) and held as ``process.spawn``'s would be.

A runtime daemon's standby init made its namespaces in the host's user namespace: it is not
used for such a container (left parked, discarded after the call as for ``exec``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace

from pycni.linux import nscalls
from pycni_run import detached, idmaps, pidfds, process, state, users
from pycni_run.config import RuntimeConfig
from pycni_run.errors import EXIT_RUNTIME, RunError
from pycni_run.idmaps import IdMap, Mappings, UsernsOptions
from pycni_run.process import Channel, Child, InitPlan
from pycni_run.state import ContainerState

__all__ = ["Request", "check", "reserve", "spawn"]

LOCK_FILE = "userns.lock"  # in the state dir: one allocation at a time
_ROOT = users.UserIds(uid=0, gid=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A user namespace asked for, with the subordinate ranges it may draw from."""

    options: UsernsOptions
    uid_ranges: tuple[tuple[int, int], ...]
    gid_ranges: tuple[tuple[int, int], ...]


# ---------------------------------------------------------------------- before anything is made


def _ranges(cfg: RuntimeConfig, path: str) -> tuple[tuple[int, int], ...]:
    ranges = idmaps.read_subids(path, cfg.userns_user)
    if not ranges:
        raise RunError(f"a user namespace needs subordinate ids: {path} gives {cfg.userns_user} "
                       "none (add a line such as "
                       f"'{cfg.userns_user}:100000:6553600', or set userns_user)")
    return tuple(ranges)


def check(cfg: RuntimeConfig, options: UsernsOptions) -> Request | None:
    """None for the host's user namespace; RunError for maps this runtime may not write."""
    if options.mode == "host":
        return None
    request = Request(options=options, uid_ranges=_ranges(cfg, cfg.subuid_file),
                      gid_ranges=_ranges(cfg, cfg.subgid_file))
    for maps, ranges, flag, path in (
        (options.uid_map, request.uid_ranges, "--uidmap", cfg.subuid_file),
        (options.gid_map, request.gid_ranges, "--gidmap", cfg.subgid_file),
    ):
        outside = idmaps.within(maps, ranges)
        if outside is not None:
            raise RunError(f"invalid {flag} {outside}: host ids {outside.host}-"
                           f"{outside.host_end - 1} are not all subordinate ids of "
                           f"{cfg.userns_user} in {path}")
    return request


# ---------------------------------------------------------------------- reserving the ids


@contextlib.contextmanager
def _locked(cfg: RuntimeConfig) -> Iterator[None]:
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(cfg.state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _used(cfg: RuntimeConfig, name: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Host intervals every other container's state maps uids and gids onto."""
    uids: list[tuple[int, int]] = []
    gids: list[tuple[int, int]] = []
    for other in state.list_states(cfg.containers_dir):
        mappings = Mappings.from_doc(other.userns) if other.name != name else None
        if mappings is not None:
            uids += [(m.host, m.host_end) for m in mappings.uid_map]
            gids += [(m.host, m.host_end) for m in mappings.gid_map]
    return uids, gids


def _allocate(cfg: RuntimeConfig, request: Request, name: str) -> Mappings:
    size = request.options.size
    used_uids, used_gids = _used(cfg, name)
    uid = idmaps.first_free(request.uid_ranges, used_uids, size)
    gid = idmaps.first_free(request.gid_ranges, used_gids, size)
    if uid is None or gid is None:
        path = cfg.subuid_file if uid is None else cfg.subgid_file
        raise RunError(f"--userns=auto: no free range of {size} ids is left in {path} for "
                       f"{cfg.userns_user} (other containers hold the rest until removed)")
    return Mappings(mode="auto", uid_map=(IdMap(0, uid, size),), gid_map=(IdMap(0, gid, size),))


def reserve(cfg: RuntimeConfig, st: ContainerState, request: Request | None) -> Mappings | None:
    """The container's mappings, recorded in its state (saved) before anyone else allocates:
    ``auto`` takes the lowest range no other container's state maps onto, and it stays
    taken until that state is removed. None for the host's user namespace."""
    if request is None:
        return None
    options = request.options
    with _locked(cfg):
        if options.mode == "auto":
            mappings = _allocate(cfg, request, st.name)
        else:
            mappings = Mappings(mode="maps", uid_map=options.uid_map, gid_map=options.gid_map)
        st.userns = mappings.to_doc()
        state.save(cfg.containers_dir, st)
    return mappings


# ---------------------------------------------------------------------- the init


def _check_reachable(path: str, uid: int, gid: int) -> None:
    """The init, the mapped root, reaches its rootfs by path (runc's rule): every directory
    above it must be searchable by that uid (it has no privilege over the host's files)."""
    walked = "/"
    for part in os.path.normpath(path).strip("/").split("/")[:-1]:
        walked = os.path.join(walked, part)
        st = os.stat(walked)
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else (
            stat.S_IXOTH)
        if not st.st_mode & bit:
            raise RunError(f"the container's root (uid {uid} on the host) cannot reach its "
                           f"rootfs: {walked} is not searchable by it (chmod o+x, or another "
                           "storage_dir)")


def _prepare(plan: InitPlan, mappings: Mappings) -> None:
    """The container's own overlay directories owned by its mapped root, as Docker and podman
    make them: the root directory, and every file it creates, is then its own."""
    uid, gid = mappings.root
    _check_reachable(plan.layers.merged, uid, gid)
    for path in (plan.layers.upper, plan.layers.work):
        os.chown(path, uid, gid)


def _intermediate(plan: InitPlan, channel: Channel, control: Channel) -> None:
    """Between the runtime and the init: the user namespace, then the init inside it."""
    trees = detached.open_host_trees(plan.mounts)  # while this is still the host's root
    nscalls.unshare(nscalls.CLONE_NEWUSER)
    control.send(userns=True)
    msg = control.recv()
    if msg is None or not msg[0].get("mapped") or not msg[1]:
        os._exit(EXIT_RUNTIME)  # the runtime gave up: it reports why
    trees = replace(trees, rootfs=msg[1][0])
    users.switch(_ROOT)  # root inside; the mapped root's ids outside
    nscalls.unshare(nscalls.CLONE_NEWPID)

    def init_body() -> None:
        control.close()
        process.init_main(plan, channel, trees=trees)

    pid = process.fork_child(channel, init_body)
    control.send(init=pid)
    control.recv()  # the runtime holds a pidfd of the init: it may be re-parented now
    os._exit(0)


def _expect(control: Channel, key: str, parent: int) -> dict[str, object]:
    msg = control.recv()
    if msg is None or key not in msg[0]:
        status = process.wait_exit(parent)
        doc = msg[0] if msg else {}
        raise RunError(str(doc.get("error", f"container setup failed (status {status})")),
                       int(doc.get("code", EXIT_RUNTIME)))
    return msg[0]


def _map_and_start(plan: InitPlan, mappings: Mappings, parent: int, parent_fd: int,
                   control: Channel) -> tuple[int, int]:
    """The maps, the rootfs handed over; the init's pid and a pidfd of it."""
    _expect(control, "userns", parent)
    pidfds.write_proc(parent_fd, "uid_map", idmaps.kernel_text(mappings.uid_map))
    pidfds.write_proc(parent_fd, "gid_map", idmaps.kernel_text(mappings.gid_map))
    with pidfds.namespace(parent_fd, "user") as userns_fd:
        tree = detached.idmapped_rootfs(plan.layers, userns_fd)
    try:
        control.send(fds=[tree], mapped=True)
    finally:
        os.close(tree)
    pid = int(str(_expect(control, "init", parent)["init"]))
    pidfd = os.pidfd_open(pid)  # its parent waits for the word below: still the init's pid
    control.send(adopted=True)
    process.wait_exit(parent)
    return pid, pidfd


def spawn(plan: InitPlan, mappings: Mappings) -> Child:
    """``process.spawn`` for a container with a user namespace of its own."""
    _prepare(plan, mappings)
    ours, theirs = Channel.pair()
    control, their_control = Channel.pair()

    def body() -> None:
        ours.close()
        control.close()
        _intermediate(plan, theirs, their_control)

    nscalls.set_child_subreaper()  # the init comes here when the intermediate exits
    try:
        parent = process.fork_child(their_control, body)
    finally:
        theirs.close()
        their_control.close()
    parent_fd = os.pidfd_open(parent)  # our child, not reaped: the pid is still its own
    try:
        pid, pidfd = _map_and_start(plan, mappings, parent, parent_fd, control)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(parent_fd, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(parent, 0)
        ours.close()
        raise
    finally:
        control.close()
        os.close(parent_fd)
    return process.await_ready(pid, pidfd, ours, process.CgroupMove(plan.cgroup, pid))
