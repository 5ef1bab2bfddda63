"""`exec`: run a command inside a running container by setns, as ``docker exec`` does.

The container's init is opened as a pidfd checked to be that very process (``state.ProcRef``:
a reused pid is refused, "not running"); a forked, single-threaded child joins the cgroup
(while host paths still resolve), then every namespace of the init through that pidfd, then
forks once more so the command is really inside the pid namespace; that process takes the
container's capabilities, no_new_privs and seccomp program (saved at start) before exec. This
process is a child subreaper, so it inherits that grandchild and returns its exit code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence

from pycni.linux import nscalls
from pycni_run import cgroups, console, namespaces, process, security, state, users
from pycni_run.config import RuntimeConfig
from pycni_run.errors import EXIT_RUNTIME, RunError
from pycni_run.idmaps import Mappings
from pycni_run.process import Channel
from pycni_run.security import Confinement

__all__ = ["exec_in"]


def _command_side(
    channel: Channel,
    command: Sequence[str],
    env: Mapping[str, str],
    workdir: str,
    *,
    tty: bool,
    interactive: bool,
    confinement: Confinement | None,
) -> None:
    """In the container's pid namespace: stdio, cwd, the container's confinement, exec."""
    if tty:
        console.open_console(channel.sock)
    else:
        os.setsid()
        if not interactive:
            os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    os.chdir(workdir)
    if confinement is not None:
        security.confine(confinement)  # as Docker: the container's capabilities and seccomp
    process.exec_command(command, env)


def _joiner(
    channel: Channel,
    init: int,
    cg: cgroups.Cgroup | None,
    run: Channel,
    body: Callable[[], object],
    *,
    user: bool,
) -> None:
    """Join the cgroup, then every namespace of ``init`` (a pidfd; its user namespace if it
    has one of its own, whose root this process then becomes, as runc's exec does); fork the
    command; report its pid and exit."""
    process.reset_signals()
    run.close()
    if cg is not None:
        cgroups.enter(cg)
    try:
        namespaces.join(init, user=user)
    except ProcessLookupError:
        raise RunError("the container's init exited: nothing joined") from None
    if user:
        users.switch(users.UserIds(uid=0, gid=0))  # else the host's root, unmapped in there
    pid = process.fork_child(channel, body)
    channel.send(pid=pid)
    os._exit(0)


def exec_in(
    cfg: RuntimeConfig,
    name: str,
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    workdir: str | None,
    interactive: bool,
    tty: bool,
) -> int:
    st = state.load(cfg.containers_dir, name)
    if st.status != "running":
        raise RunError(f"container {name} is not running")
    if not command:
        raise RunError("no command given")
    full_env = {**dict(st.env), **env}
    confinement = security.for_exec(st.security, state.container_dir(cfg.containers_dir, name))
    cg = cgroups.Cgroup.from_dict(st.cgroup) if st.cgroup else None
    own_userns = Mappings.from_doc(st.userns) is not None
    nscalls.set_child_subreaper()
    ours, theirs = Channel.pair()

    def command_side() -> None:
        _command_side(
            theirs,
            command,
            full_env,
            workdir or st.workdir,
            tty=tty,
            interactive=interactive,
            confinement=confinement,
        )

    with st.pid.opened(f"container {name} (its init, pid {st.pid.pid})") as init:
        joiner = process.fork_child(
            theirs, lambda: _joiner(theirs, init, cg, ours, command_side, user=own_userns)
        )
    theirs.close()
    return _collect(ours, joiner, interactive=interactive)


def _collect(ours: Channel, joiner: int, *, interactive: bool) -> int:
    """Read the command's pid (and pty) until EOF = exec'd; relay; wait; its exit code."""
    pid = 0
    master: int | None = None
    try:
        while (msg := ours.recv()) is not None:
            doc, fds = msg
            if fds:
                master = fds[0]
            if "error" in doc:
                process.wait_exit(joiner)
                if pid:
                    with contextlib.suppress(ChildProcessError):
                        process.wait_exit(pid)
                raise RunError(str(doc["error"]), int(doc.get("code", EXIT_RUNTIME)))
            pid = int(doc.get("pid", pid))
    finally:
        ours.close()
    process.wait_exit(joiner)
    if not pid:
        raise RunError("exec failed before the command started")
    if master is not None:
        stdin = 0 if interactive else None
        with console.raw_terminal(0) if interactive else contextlib.nullcontext():
            console.relay(master, stdin_fd=stdin, stdout_fd=1)
        os.close(master)
    return process.wait_exit(pid)
