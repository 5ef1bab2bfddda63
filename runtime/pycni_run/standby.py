"""A container init started ahead of time, already in a cgroup: the runtime daemon's spare.

Two costs of every start are paid while the daemon is idle instead (measured here, 2 vCPUs):
- on cgroup v1 the first task moved into a cgroup after a quiet spell waits for an RCU grace
  period (the write side of the kernel's ``cgroup_threadgroup_rwsem``): 10-18 ms, which runc
  pays on every start too;
- forking the init from a warm ~40 MB worker: 2-3 ms, then copy-on-write faults on both sides.

A spare (``daemon.handoff.fork_spare_with_standby``) calls ``park``: it forks the next
container's init, PID 1 of a new pid namespace as ``process.spawn`` would. That init moves
itself into a standby cgroup ``.standby-<spare pid>`` in the directory the next container's
cgroup will be made in (the spare's own cgroup and the daemon's ``cgroup_parent``), makes its
new ipc, uts and net namespaces, says "parked" and waits. A ``run`` in that worker
(``lifecycle.start``) then:
- ``take()``: gets it, if this process forked it and it parked;
- ``Standby.adopt``: renames its directories to the container's name when they are in the very
  directory the container's would be made in (a rename keeps the task: no move, no wait); else
  the container's cgroup is made as usual and the init moved into it, as without a standby;
- ``Standby.launch``: hands it the plan (pickled in a memfd: a fork of this very program reads
  it), the command's stdio and the worker's mount and net namespaces (the caller's); it joins
  them and carries on with ``process.init_main`` exactly as a forked init would.

Anything else (``ps``, ``exec``, or ``run -d``, whose init must be its monitor's child) leaves
the standby to ``discard`` once the worker has reported its status. Container names never start
with ".", so a standby directory is never a container's; the daemon ``sweep``s the directories
of a spare or worker that ended without removing its own, and any empty one when it starts.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, NoReturn

from pycni.linux import nscalls
from pycni_run import cgroups, process
from pycni_run.errors import RunError
from pycni_run.process import Channel, Child, InitPlan, Stdio
from pycni_run.spec import Limits

__all__ = ["MADE", "PREFIX", "Standby", "discard", "park", "sweep", "take"]

PREFIX: Final = ".standby-"
PARK_TIMEOUT: Final = 5.0  # parking waits for one grace period: milliseconds, never this long
# Made while parked: a container always gets new ipc and uts namespaces, and a new net one
# unless it joins the caller's (host) or another container's (that setns replaces this one).
MADE: Final = nscalls.CLONE_NEWIPC | nscalls.CLONE_NEWUTS | nscalls.CLONE_NEWNET


@dataclass(slots=True, eq=False)
class Standby:
    pid: int
    pidfd: int  # opened right after its fork, as ``process.spawn`` does
    channel: Channel
    cgroup: cgroups.Cgroup  # its standby cgroup, or the container's once adopted
    owner: int  # the process that forked it: the only one that can wait for it
    parked: bool = False

    def adopt(self, name: str, limits: Limits, *, parent: str) -> cgroups.Cgroup | None:
        """The container's cgroup made from the standby's by a rename, or None (not here)."""
        cg = cgroups.adopt(self.cgroup, name, limits, parent=parent)
        if cg is not None:
            self.cgroup = cg
        return cg

    def launch(self, plan: InitPlan) -> Child:
        """Hand it ``plan``: from here on it is the container's init, undone as any other.
        Not adopted (the container's cgroup is elsewhere: a caller in another cgroup), it
        moves itself into the container's cgroup before its "ready" (``_standby_main``), and
        its standby cgroup, empty then, goes."""
        _held.clear()
        adopted = self.cgroup == plan.cgroup
        try:
            self._send(plan, move=not adopted)
        except OSError:  # it died while parked: start the container the usual way
            self.end(remove_cgroup=not adopted)
            return process.spawn(plan)
        try:
            return process.await_ready(self.pid, self.pidfd, self.channel, None)
        finally:
            if not adopted:
                with contextlib.suppress(RunError, OSError):
                    cgroups.remove(self.cgroup)  # empty, or the run failed: kill what is left

    def _send(self, plan: InitPlan, *, move: bool) -> None:
        stdio = plan.stdio
        fds = [] if stdio.tty else [fd for fd in (stdio.stdin, stdio.stdout, stdio.stderr)
                                    if fd is not None]
        umask = os.umask(0o022)
        os.umask(umask)
        memfd = os.memfd_create("pycni-run-plan", os.MFD_CLOEXEC)
        namespaces: list[int] = []
        try:
            with open(memfd, "wb", closefd=False) as f:
                pickle.dump((plan, umask), f)
            # The net namespace it joins unless it keeps its own: the caller's (host) or the
            # peer's (container:NAME, already open: ``plan.peer_netns``).
            namespaces = [os.open(f"/proc/self/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                          for ns in ("mnt", "net")]
            net = plan.peer_netns if plan.peer_netns >= 0 else namespaces[1]
            self.channel.send(fds=[memfd, namespaces[0], net, *fds], plan=True, move=move)
        finally:
            for fd in (memfd, *namespaces):
                os.close(fd)

    def end(self, *, remove_cgroup: bool) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self.pidfd)
        self.channel.close()
        if remove_cgroup:
            with contextlib.suppress(RunError, OSError):
                cgroups.remove(self.cgroup)


_held: list[Standby] = []  # this process's standby, until launched or discarded


def _stdio(planned: Stdio, fds: list[int]) -> Stdio:
    """The plan's stdio with the descriptors as received here."""
    if planned.tty:
        return planned
    received = iter(fds)
    stdin = next(received) if planned.stdin is not None else None
    return replace(planned, stdin=stdin, stdout=next(received), stderr=next(received))


def _standby_main(cg: cgroups.Cgroup, channel: Channel) -> NoReturn:
    """The parked init: into its cgroup, its namespaces made; then the plan, or EOF."""
    nscalls.set_parent_death_signal(signal.SIGKILL)  # its worker is gone: so is it
    cgroups.enter(cg)
    nscalls.unshare(MADE)
    channel.send(parked=True)
    received = channel.recv()  # close-on-exec: the command gets only what lands on 0-2
    if received is None or not received[0].get("plan") or len(received[1]) < 3:
        os._exit(0)  # discarded (EOF) or nonsense
    move = bool(received[0].get("move"))
    memfd, mnt, net, *stdio = received[1]
    with open(memfd, "rb") as f:
        f.seek(0)  # the sender's write moved the shared offset to the end
        plan, umask = pickle.load(f)  # noqa: S301 - written by the process that forked this one
    # Its peer_netns is a number of the sender's: the peer's netns came as ``net``.
    plan = replace(plan, stdio=_stdio(plan.stdio, stdio), peer_netns=-1)
    if not plan.net.new_netns:
        nscalls.setns(net, nscalls.CLONE_NEWNET)  # host: the caller's; container: the peer's
    nscalls.setns(mnt, nscalls.CLONE_NEWNS)  # its paths are the caller's from here on
    os.close(net)
    os.close(mnt)
    os.umask(umask)
    if move:
        # By itself, as it came into its standby cgroup: a thread moving itself takes no
        # global lock, while the runtime moving it by pid waited for an RCU grace period
        # (``cgroupfs.enter``; 12-16 ms here, on the critical path of a --net=none run).
        cgroups.enter(plan.cgroup)
    process.init_main(plan, channel, made=MADE)
    os._exit(0)  # init_main execs or raises: never here


def park(parent: str, close_inherited: Callable[[], None]) -> None:
    """In a spare, before its call: start the standby (best effort: without one, a run forks
    its init and moves it as usual)."""
    if _held:
        return
    try:
        cg = cgroups.create(PREFIX + str(os.getpid()), Limits(), parent=parent)
    except (RunError, OSError):
        return
    ours, theirs = Channel.pair()

    def body() -> None:
        ours.close()
        close_inherited()
        _standby_main(cg, theirs)

    try:
        pid = process.fork_pid1(theirs, body)
    except OSError:
        ours.close()
        with contextlib.suppress(RunError, OSError):
            cgroups.remove(cg)
        return
    finally:
        theirs.close()
    pidfd = os.pidfd_open(pid)  # our child, not reaped: the pid is still its own
    _held.append(Standby(pid=pid, pidfd=pidfd, channel=ours, cgroup=cg, owner=os.getpid()))


def take() -> Standby | None:
    """This process's standby once it parked; None without one (or in another process: only
    the process that forked it can wait for it, so not in a ``run -d`` monitor)."""
    if not _held or _held[0].owner != os.getpid():
        return None
    held = _held[0]
    if not held.parked:
        held.channel.sock.settimeout(PARK_TIMEOUT)
        try:
            msg = held.channel.recv()
        except OSError:
            msg = None
        held.channel.sock.settimeout(None)
        if msg is None or not msg[0].get("parked"):
            discard()
            return None
        held.parked = True
    return held


def discard() -> None:
    """End this process's standby if it was not launched, and remove its cgroup."""
    if _held and _held[0].owner == os.getpid():
        _held.pop().end(remove_cgroup=True)


def sweep(parent: str, owner: int | None = None) -> None:
    """In the daemon: remove the standby cgroup of ``owner`` (a spare or worker that ended),
    killing what is left in it; with no owner, every empty standby cgroup under ``parent``
    (left by a daemon that was killed; one still in use is not empty and stays)."""
    if owner is not None:
        with contextlib.suppress(RunError, OSError):
            cgroups.remove(cgroups.place(PREFIX + str(owner), parent=parent))
        return
    for path in cgroups.place(PREFIX, parent=parent).paths.values():
        directory = os.path.dirname(path)
        with contextlib.suppress(OSError):
            for entry in os.listdir(directory):
                if entry.startswith(PREFIX):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(directory, entry))
