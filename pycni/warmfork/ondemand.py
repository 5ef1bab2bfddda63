"""Start a daemon on demand: the first caller that finds it down starts it, exactly once.

A service is a unix socket that answers while its daemon runs. ``ensure`` connects; if nobody
answers it takes the service's start lock, checks again (a racing caller may have started it
meanwhile), and starts the daemon detached from the caller:

- double fork with ``setsid`` in between: the daemon is nobody's child, leads no session and
  has no controlling terminal, so neither the caller's exit nor its terminal's hang-up reach it;
- cwd ``/``; stdin from /dev/null, stdout and stderr appended to the service's log; every other
  descriptor closed before exec (a CNI runtime reads the plugin's stdout to EOF: a daemon
  holding it would wedge the runtime); signal mask and handlers reset;
- moved to the root cgroup of every hierarchy it can see (the caller may be a unit or a
  container scope that is killed as a whole when it stops);
- exec'd with a minimal environment: ``PATH`` and what the service names, nothing inherited.

The socket lives in a root-owned 0700 directory (checked before anything is started there:
a directory others can write to could hold a socket that is not ours). The caller then waits
until the socket answers, or until the daemon dies (its log's last lines are the error).

Two ways in. ``ensure`` (the DNS resolver's plugin) waits for the daemon, holding the start
lock meanwhile. A plugin executable or ``pycni-run`` that finds its server missing does not
wait: ``pycni.autostart`` decides, takes the start lock and forks the detached process
(builtins only, on the caller's in-process path), which comes here (``exec_started``) and
execs the server with ``--on-demand``, the start lock inherited: the server releases it once
it listens (``started.OnDemand.listening``), so racing callers start one between them, and it
exits after an idle time. ``started.retire`` makes such a server give way to a supervised one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import stat
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, NoReturn

from pycni import autostart
from pycni.autostart import fork_detached
from pycni.lockfile import hold
from pycni.warmfork.child import reset_for_exec

__all__ = [
    "MINIMAL_PATH",
    "PASSED_ENV",
    "Service",
    "StartError",
    "connect",
    "ensure",
    "exec_daemon",
    "exec_started",
    "python_argv",
]

MINIMAL_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a daemon started for a caller keeps of its environment: the config file it was told.
PASSED_ENV: Final = ("PYCNI_RUN_CONFIG",)
_POLL: Final = 0.005
_LOG_TAIL: Final = 2000
_LOG_LIMIT: Final = 1 << 20


class StartError(Exception):
    """The service is not running and could not be started (the message says why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """What it takes to reach a daemon, and to start it when it is down."""

    name: str
    socket_path: str
    argv: tuple[str, ...]
    log_path: str
    env: Mapping[str, str] = field(default_factory=dict)
    socket_type: int = socket.SOCK_SEQPACKET
    start_timeout: float = 20.0

    @property
    def directory(self) -> str:
        return os.path.dirname(self.socket_path) or "."

    @property
    def lock_path(self) -> str:
        return os.path.join(self.directory, f"{self.name}.start.lock")


def python_argv(module: str, *args: str) -> tuple[str, ...]:
    """argv that runs ``python -m module args...`` with this interpreter and import path.

    ``-I`` (no environment, no user site): the daemon's imports come from the path given here,
    the one the calling plugin executable was pinned to, never from the caller's environment.
    """
    paths = [os.path.abspath(p) for p in sys.path if p]  # the daemon's cwd is /
    bootstrap = (
        f"import sys, runpy; sys.path[:0] = {paths!r}; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return (sys.executable, "-I", "-c", bootstrap, *args)


def connect(service: Service, timeout: float = 5.0) -> socket.socket | None:
    """A connection to the running service, or None if nobody answers at its socket."""
    sock = socket.socket(socket.AF_UNIX, service.socket_type | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(service.socket_path)
    except OSError:
        sock.close()
        return None
    return sock


def ensure(service: Service) -> socket.socket:
    """A connection to the service, started first (once, whoever races) if it is down."""
    sock = connect(service)
    if sock is not None:
        return sock
    prepare_directory(service.directory)
    try:
        with hold(service.lock_path, timeout=service.start_timeout):
            sock = connect(service)
            if sock is not None:
                return sock  # a racing caller started it while we waited for the lock
            pid = _spawn(service)
            return _wait_ready(service, pid)
    except OSError as err:
        raise StartError(f"cannot start {service.name}: {err}") from err


def prepare_directory(path: str) -> None:
    """Create the service's directory (0700) and refuse one that others could write to."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as err:
        raise StartError(f"cannot create {path}: {err}") from err
    if not stat.S_ISDIR(st.st_mode):
        raise StartError(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise StartError(f"{path} is owned by uid {st.st_uid}, not {os.geteuid()}")
    if st.st_mode & 0o077:
        raise StartError(f"{path} is accessible to others (mode {st.st_mode & 0o777:o}); "
                         "it must be 0700")


# ----------------------------------------------------------------------------- starting


def _spawn(service: Service) -> int:
    """Fork a detached process that execs the daemon; the daemon's pid (not our child)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        if fork_detached(keep=(write_end,)):
            exec_daemon(service, report=write_end)  # pragma: no cover - never returns
    finally:
        os.close(write_end)
    try:
        return _read_pid(read_end, service)
    finally:
        os.close(read_end)


def exec_daemon(service: Service, *, report: int = -1, keep: tuple[int, ...] = ()) -> NoReturn:
    """In a detached process (``fork_detached``): let go of everything of the caller's, then
    exec the daemon, keeping only ``keep`` open; ``report`` (close-on-exec) gets its pid."""
    try:
        os.chdir("/")
        os.umask(0o022)
        _leave_cgroups()
        null_fd = os.open(os.devnull, os.O_RDONLY)
        log_fd = _open_log(service.log_path)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        reset_for_exec()
        if report >= 0:
            os.write(report, str(os.getpid()).encode())
        _close_all_but(3, {report, *keep})  # the report pipe closes itself at exec
        env = {"PATH": MINIMAL_PATH, **service.env}
        os.execve(service.argv[0], list(service.argv), env)  # noqa: S606 - the daemon
    finally:
        os._exit(127)


def exec_started(daemon: autostart.Daemon, socket_path: str, start_lock: int,
                 idle_timeout: float) -> NoReturn:
    """In the process ``pycni.autostart`` forked for a caller that found no server: exec
    ``daemon`` on ``socket_path`` as one started on demand. It inherits ``start_lock`` (held)
    and releases it once it listens (``listening``); it exits after ``idle_timeout`` seconds
    without a call."""
    directory = os.path.dirname(socket_path) or "."
    os.set_inheritable(start_lock, True)
    args = (*daemon.args, "--socket", socket_path, "--on-demand", "--idle-timeout",
            f"{idle_timeout:g}", "--start-lock", str(start_lock))
    env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
    service = Service(name=daemon.name, socket_path=socket_path, env=env,
                      log_path=os.path.join(directory, f"{daemon.name}.log"),
                      argv=python_argv(daemon.module, *args))
    exec_daemon(service, keep=(start_lock,))


def _open_log(path: str) -> int:
    """The log, appended to; started anew once it has grown past ``_LOG_LIMIT``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if os.fstat(fd).st_size > _LOG_LIMIT:
        os.ftruncate(fd, 0)
    return fd


def _close_all_but(lowest: int, kept: set[int]) -> None:
    start = lowest
    for fd in sorted(k for k in kept if k >= lowest):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))


def _leave_cgroups() -> None:
    """Move this process to the root of each cgroup hierarchy it can see (best effort: not
    permitted for a non-root caller, and nothing to do where no cgroupfs is mounted)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            mounts = f.read().splitlines()
    except OSError:
        return
    for line in mounts:
        fields = line.split()
        fstype = fields[fields.index("-") + 1] if "-" in fields else ""
        if fstype not in ("cgroup", "cgroup2") or fields[3] != "/":
            continue
        with contextlib.suppress(OSError), open(os.path.join(fields[4], "cgroup.procs"),
                                                "w", encoding="ascii") as procs:
            procs.write("0")  # "0" moves the writer itself


def _read_pid(read_end: int, service: Service) -> int:
    data = b""
    while chunk := os.read(read_end, 64):  # EOF when the daemon execs (or dies)
        data += chunk
    if not data.isdigit():
        raise StartError(f"{service.name} did not start: {_log_tail(service)}")
    return int(data)


def _wait_ready(service: Service, pid: int) -> socket.socket:
    """Poll the socket until it answers; StartError if the daemon dies or times out."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as err:
        if err.errno != errno.ESRCH:
            raise
        raise StartError(f"{service.name} exited at once: {_log_tail(service)}") from err
    try:
        deadline = time.monotonic() + service.start_timeout
        while time.monotonic() < deadline:
            sock = connect(service)
            if sock is not None:
                return sock
            if select.select([pidfd], [], [], _POLL)[0]:
                raise StartError(f"{service.name} exited while starting: {_log_tail(service)}")
        raise StartError(f"{service.name} (pid {pid}) did not answer at {service.socket_path} "
                         f"within {service.start_timeout:.0f}s")
    finally:
        os.close(pidfd)


def _log_tail(service: Service) -> str:
    try:
        with open(service.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL))
            text = f.read().decode(errors="replace").strip()
    except OSError:
        return f"(no log at {service.log_path})"
    return text.splitlines()[-1] if text else f"(empty log at {service.log_path})"
