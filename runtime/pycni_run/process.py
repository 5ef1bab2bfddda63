"""Processes: fork, namespaces, the container's init checklist, exec, and exit statuses.

Shape (crun's clone with namespace flags, see ``reference/runtime.md`` §1): the runtime
unshares only its pid namespace for children and forks once, so the init is PID 1 of a new
pid namespace; the init makes (or joins) the other namespaces, says "ready" and mounts its
rootfs, while the runtime moves it into its cgroup (a thread: on cgroup v1 the first move waits
~10 ms for an RCU grace period), pins the netns and runs CNI ADD; then the "go" message
(carrying what /etc needs) lets it make its cgroup namespace, pivot and exec.

All messages travel on one SOCK_SEQPACKET socketpair. The child end is close-on-exec, so the
runtime reads EOF exactly when the command was exec'd; a failure arrives as
``{"error", "code"}`` first (126/127 for exec, 125 for anything else).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from pycni.linux import nscalls
from pycni.warmfork.peer import received_fds
from pycni_run import cgroups, console, detached, namespaces, rootfs, security, volumes
from pycni_run.detached import HostTrees
from pycni_run.errors import EXIT_CANNOT_INVOKE, EXIT_NOT_FOUND, EXIT_RUNTIME, RunError
from pycni_run.rootfs import Layers
from pycni_run.security import Confinement
from pycni_run.spec import NetMode

__all__ = [
    "DEFAULT_PATH",
    "CgroupMove",
    "Channel",
    "Child",
    "InitPlan",
    "Stdio",
    "await_ready",
    "exit_code",
    "fork_pid1",
    "init_main",
    "release",
    "reset_signals",
    "spawn",
    "wait_exit",
]

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MAX_FDS: Final = 8  # a message carries at most a pty master, or a standby's plan and stdio
FORWARDED: Final = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


class Channel:
    """JSON messages (and passed fds) over one end of a SOCK_SEQPACKET socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def send(self, fds: Sequence[int] = (), **doc: Any) -> None:
        """One JSON message, with ``fds`` passed along (SCM_RIGHTS)."""
        data = json.dumps(doc).encode()
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.send(data)

    def recv(self) -> tuple[dict[str, Any], list[int]] | None:
        """The next message and any fds it carried, close-on-exec; None at EOF (every peer
        closed or exec'd). Not ``socket.recv_fds``: Python 3.11's ignores its flags."""
        data, ancdata, _flags, _addr = self.sock.recvmsg(
            65536, socket.CMSG_SPACE(_MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
        )
        fds = received_fds(ancdata)
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        return json.loads(data), list(fds)

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Stdio:
    """Fds the command gets as 0, 1, 2 (stdin None = /dev/null); ``tty`` = a pty instead."""

    stdin: int | None = None
    stdout: int = 1
    stderr: int = 2
    tty: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class InitPlan:
    command: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str
    hostname: str
    layers: Layers
    cgroup: cgroups.Cgroup
    net: NetMode
    confinement: Confinement  # capabilities, seccomp, masked paths: applied last (security)
    peer_netns: int = -1  # container:NAME -> a descriptor of NAME's netns, joined by the init
    stdio: Stdio = field(default_factory=Stdio)
    init: bool = False  # a reaping init as PID 1, the command as its child (docker --init)
    mounts: tuple[volumes.Mount, ...] = ()  # -v and --tmpfs
    read_only: bool = False  # --read-only


class CgroupMove:
    """The init's move into its cgroup, done from the runtime's side in a thread: it overlaps
    the init's mounts and the runtime's CNI ADD instead of preceding them. (A standby init
    moves itself: ``standby``.)"""

    def __init__(self, cg: cgroups.Cgroup, pid: int) -> None:
        self._failure: OSError | None = None
        self._thread = threading.Thread(target=self._run, args=(cg, pid), daemon=True,
                                        name="cgroup-move")
        self._thread.start()

    def _run(self, cg: cgroups.Cgroup, pid: int) -> None:
        try:
            cgroups.enter(cg, pid)
        except OSError as err:
            self._failure = err

    def wait(self) -> None:
        self._thread.join()
        if self._failure is not None:
            raise RunError(f"cannot move the container into its cgroup: {self._failure}")


@dataclass(slots=True)
class Child:
    pid: int  # the container's init, as this runtime's pid namespace sees it
    pidfd: int  # held for the monitor's life: signals and namespaces go through it
    channel: Channel
    cgroup_move: CgroupMove | None = None  # done before "go": nothing runs uncharged


def exit_code(status: int) -> int:
    """A wait status as a shell exit code: the code, or 128 + signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def wait_exit(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return exit_code(status)


def reset_signals() -> None:
    """What exec does not reset: Python ignores SIGPIPE and SIGXFSZ; our handlers too."""
    for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGWINCH):
        signal.signal(sig, signal.SIG_DFL)


def _fail(channel: Channel, err: BaseException) -> NoReturn:
    code = err.code if isinstance(err, RunError) else EXIT_RUNTIME
    msg = (
        str(err)
        if isinstance(err, RunError | OSError)
        else "".join(traceback.format_exception_only(err)).strip()
    )
    try:
        channel.send(error=msg, code=code)
    finally:
        os._exit(code)


def exec_command(command: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """execvpe; a failure raises RunError with Docker's 127 (not found) or 126 (not runnable)."""
    try:
        os.execvpe(command[0], list(command), dict(env))  # noqa: S606 - the container's command
    except OSError as err:
        if err.errno == errno.ENOENT:
            where = "" if "/" in command[0] else " in $PATH"
            raise RunError(
                f'exec: "{command[0]}": executable file not found{where}', EXIT_NOT_FOUND
            ) from err
        raise RunError(f'exec: "{command[0]}": {err.strerror}', EXIT_CANNOT_INVOKE) from err


def fork_child(channel: Channel, body: Callable[[], object]) -> int:
    """fork; the child runs ``body`` and must not return (any escape is reported and exits)."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        except BaseException as err:
            _fail(channel, err)
        os._exit(EXIT_RUNTIME)
    return pid


# ---------------------------------------------------------------------- run: the children

_LATE_FLAGS: Final = nscalls.CLONE_NEWPID | nscalls.CLONE_NEWCGROUP


def _enter_namespaces(plan: InitPlan, channel: Channel, made: int) -> None:
    """In the init (already PID 1 of its own pid namespace): join or make the others but the
    cgroup namespace, which must wait until the runtime has moved it into its cgroup (so its
    root is the container's own cgroup, crun's order): ``_enter_cgroup_namespace``. ``made``:
    the namespaces a standby init made ahead of time (``standby``)."""
    reset_signals()
    if plan.peer_netns >= 0:
        nscalls.setns(plan.peer_netns, nscalls.CLONE_NEWNET)
        os.close(plan.peer_netns)
    flags = namespaces.unshare_flags(plan.net) & ~_LATE_FLAGS & ~made
    if flags:
        nscalls.unshare(flags)
    channel.send(ready=True)


def _enter_cgroup_namespace(plan: InitPlan) -> None:
    if namespaces.unshare_flags(plan.net) & nscalls.CLONE_NEWCGROUP:
        nscalls.unshare(nscalls.CLONE_NEWCGROUP)


def _await_go(channel: Channel) -> dict[str, Any]:
    msg = channel.recv()
    if msg is None or "go" not in msg[0]:
        raise RunError("the runtime went away before the container started")
    return msg[0]


def _setup_stdio(stdio: Stdio, channel: Channel) -> None:
    if stdio.tty:
        console.open_console(channel.sock)
        return
    os.setsid()
    stdin = stdio.stdin if stdio.stdin is not None else os.open("/dev/null", os.O_RDONLY)
    for source, target in ((stdin, 0), (stdio.stdout, 1), (stdio.stderr, 2)):
        if source != target:
            os.dup2(source, target)


def init_main(
    plan: InitPlan, channel: Channel, *, made: int = 0, trees: HostTrees | None = None
) -> None:
    """PID 1's checklist (crun's container_init_setup): each step a short named call.
    ``trees``: in a user namespace of its own, the mounts the runtime made (``detached``)."""
    root = plan.layers.merged
    _enter_namespaces(plan, channel, made)
    rootfs.make_root_private()
    if trees is None:
        rootfs.mount_overlay(plan.layers)
    else:
        detached.attach(trees.rootfs, root)
    rootfs.mount_proc(root)
    rootfs.mount_sys(root, writable=plan.confinement.privileged)
    rootfs.mount_dev(root, None if trees is None else trees.devices)
    go = _await_go(channel)  # in its cgroup; the runtime has pinned the netns and run CNI ADD
    _enter_cgroup_namespace(plan)
    rootfs.write_etc(root, hostname=plan.hostname, hosts=go["hosts"], resolv=go["resolv"])
    socket.sethostname(plan.hostname)
    volumes.mount_all(root, plan.mounts, read_only=plan.read_only, workdir=plan.workdir,
                      trees=None if trees is None else trees.volumes)
    rootfs.pivot(root)
    rootfs.mask_paths(plan.confinement.masked_paths, plan.confinement.readonly_paths)
    _setup_stdio(plan.stdio, channel)
    _chdir(plan.workdir)
    security.confine(plan.confinement)  # last: capabilities, no_new_privs, seccomp
    if plan.init:
        _reaping_init(plan, channel)
    exec_command(plan.command, plan.env)


def _chdir(workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)  # runc creates a missing cwd too
    os.chdir(workdir)


def _reaping_init(plan: InitPlan, channel: Channel) -> NoReturn:
    """``--init``: stay PID 1, reap every orphan, forward signals, exit as the command did."""
    pid = fork_child(channel, lambda: exec_command(plan.command, plan.env))
    channel.close()

    def forward(sig: int, _frame: Any) -> None:
        os.kill(pid, sig)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    while True:
        try:
            reaped, status = os.wait()
        except ChildProcessError:
            os._exit(EXIT_RUNTIME)
        if reaped == pid:
            os._exit(exit_code(status))


# ---------------------------------------------------------------------- run: the runtime side


def fork_pid1(channel: Channel, body: Callable[[], object]) -> int:
    """``fork_child`` as PID 1 of a new pid namespace.

    One fork, not runc's two: ``unshare(CLONE_NEWPID)`` here changes only where this process's
    next child goes, so that child is PID 1 of a new pid namespace at once; this process then
    joins its own pid namespace back for its later children (CNI plugins run in forks). No
    intermediate process to fork, exit and reap on the way (~3 ms here for a warm runtime).
    """
    nscalls.set_child_subreaper()  # a detached monitor's orphans, exec'd helpers
    home = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        nscalls.unshare(nscalls.CLONE_NEWPID)
        try:
            return fork_child(channel, body)
        finally:
            nscalls.setns(home, nscalls.CLONE_NEWPID)
    finally:
        os.close(home)


def spawn(plan: InitPlan) -> Child:
    """Start the container's init; it waits for ``release`` before it execs."""
    ours, theirs = Channel.pair()

    def init_body() -> None:
        ours.close()
        init_main(plan, theirs)

    try:
        pid = fork_pid1(theirs, init_body)
    finally:
        theirs.close()
    # Right after the fork: the child cannot be reaped before we wait for it, so the pid is
    # still that child's. Its pid, written to cgroup.procs below, is safe for the same reason.
    pidfd = os.pidfd_open(pid)
    # Started before this thread blocks on "ready": the move's write then runs at once (and
    # waits in the kernel without the GIL) instead of after a 5 ms GIL switch interval.
    return await_ready(pid, pidfd, ours, CgroupMove(plan.cgroup, pid))


def await_ready(pid: int, pidfd: int, ours: Channel, move: CgroupMove | None) -> Child:
    """The init's "ready" (its namespaces exist); RunError, with the init reaped, if it failed."""
    try:
        msg = ours.recv()
        if msg is None or "error" in msg[0]:
            status = wait_exit(pid)
            doc = msg[0] if msg else {}
            raise RunError(
                str(doc.get("error", f"container setup failed (status {status})")),
                int(doc.get("code", EXIT_RUNTIME)),
            )
        return Child(pid=pid, pidfd=pidfd, channel=ours, cgroup_move=move)
    except BaseException:
        ours.close()
        os.close(pidfd)
        raise


def release(child: Child, *, hosts: str, resolv: str) -> int | None:
    """Let the init exec; the pty master fd if it made one. RunError if it could not exec."""
    if child.cgroup_move is not None:
        child.cgroup_move.wait()
    # A BrokenPipeError means the init already failed: its error is still queued below.
    with contextlib.suppress(BrokenPipeError):
        child.channel.send(go=True, hosts=hosts, resolv=resolv)
    master: int | None = None
    while (msg := child.channel.recv()) is not None:
        doc, fds = msg
        if fds:
            master = fds[0]
        if "error" in doc:
            if master is not None:
                os.close(master)
            raise RunError(str(doc["error"]), int(doc.get("code", EXIT_RUNTIME)))
    child.channel.close()
    return master
