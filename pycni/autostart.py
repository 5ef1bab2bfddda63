"""Start the warm server a caller found missing, then let the caller run its call itself.

A plugin executable that finds no `pycni serve` listening (and a ``pycni-run`` that finds no
runtime daemon) calls ``start``: when this caller may start one, a detached daemon is forked
off (``pycni.warmfork.ondemand`` makes it one) and the caller goes on to run its own call
in-process, without waiting for it; the calls after it find the server. Builtins only (``posix``,
``fcntl``, ``time``, ``_socket``): the decision is paid on the in-process path, in
microseconds, and the fork happens before that path imports anything.

Who starts one (every condition, cheapest first):
- root (the server serves root only), with autostart on: ``PYCNI_AUTOSTART`` (1/0) if set,
  else ``autostart: plugins|runtime`` in ``pycni.yaml`` (default on);
- a caller of the system itself: its mount, pid and user namespaces are those of PID 1 of the
  ``/proc`` it sees, and it holds at least PID 1's capabilities (effective and bounding),
  without ``no_new_privs`` or seccomp. A daemon inherits all of that from its starter. So it
  sees the ``/run`` every later caller of that system sees (a caller in a private mount
  namespace, such as ``ip netns exec``, ``unshare -m``, a unit with private mounts or
  rootless podman's namespace, would leave it in a namespace nobody else looks into, pinning
  that namespace's mounts), it lives and dies with that system (a container's init going
  takes its whole pid namespace along), and it can do every call any caller there could.
  Where PID 1 cannot be read, nobody starts one.
- the socket's directory is root's alone (made 0700 if missing), and no start is under way:
  the start lock (``<dir>/<name>.start.lock``) is free. The caller that takes it hands it to
  the daemon, which keeps it until it listens: racing callers start one daemon between them.
  A start that failed (the lock file still holds its mark) is not tried again for
  ``RETRY_AFTER`` seconds.

What the caller pays: these checks (a few hundred microseconds), one fork and the wait for
a middle process that lets go of its descriptors and forks again. The daemon-to-be waits for
the caller's call to end before it warms up, and warms up in the SCHED_IDLE class.
"""

import _socket
import errno
import fcntl
import posix
import select
import time

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "ENABLE_ENV",
    "IDLE_ENV",
    "PLUGIN_SERVER",
    "RUNTIME_DAEMON",
    "Daemon",
    "answers",
    "fork_detached",
    "idle_timeout",
    "read_section",
    "start",
]

ENABLE_ENV = b"PYCNI_AUTOSTART"  # 1: on, 0: off, whatever pycni.yaml says
IDLE_ENV = b"PYCNI_IDLE_TIMEOUT"  # seconds without a call before a started daemon exits
CONFIG_ENV = b"PYCNI_RUN_CONFIG"  # pycni.config_file's: the same file is read here
DEFAULT_IDLE_TIMEOUT = 300.0
RETRY_AFTER = 10.0
CALLER_WAIT = 5.0  # the longest the daemon-to-be waits for the call that started it to end
SECTION = "autostart"
_ETC_CONFIG = b"/etc/pycni/pycni.yaml"
_REPO_CONFIG = (__file__.rpartition("/")[0].rpartition("/")[0] + "/conf/pycni.yaml").encode()
_MAX_CONFIG = 1 << 20
_ON = ("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON")  # YAML 1.1's booleans
_OFF = ("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF")
_S_IFMT, _S_IFREG = 0o170000, 0o100000
_MAX_FD = 1 << 20


class Daemon:
    """One kind of server that can be started on demand."""

    __slots__ = ("args", "config_key", "module", "name")

    def __init__(self, name: str, config_key: str, module: str, args: tuple[str, ...]) -> None:
        self.name = name  # its lock and log in the socket's directory are named after it
        self.config_key = config_key  # its switch in pycni.yaml's autostart section
        self.module = module  # what ``python -m`` runs, with ``args``
        self.args = args


PLUGIN_SERVER = Daemon("pycni-server", "plugins", "pycni.cli", ("serve",))
RUNTIME_DAEMON = Daemon("pycni-run-daemon", "runtime", "pycni_run", ("daemon",))


def start(daemon: Daemon, socket_path: bytes) -> bool:
    """Start ``daemon`` on ``socket_path`` if this caller may (see the module's rules).

    True only if a server answers there now (a racing caller's, found under the lock): the
    caller may hand it its call. False otherwise: started or not, the caller runs its call
    itself."""
    directory = _may_start(daemon, socket_path)
    lock = -1 if directory is None else _take_start_lock(
        directory + b"/" + daemon.name.encode() + b".start.lock")
    if lock < 0:
        return False
    try:
        if answers(socket_path):
            return True
        if _failed_lately(lock):
            return False
        posix.ftruncate(lock, 0)
        posix.write(lock, b"starting %d\n" % posix.getpid())  # cleared once it listens
        caller = posix.pidfd_open(posix.getpid())
        try:
            if fork_detached(keep=(lock, caller)):
                _become_daemon(daemon, socket_path, lock, caller)  # never returns
        finally:
            posix.close(caller)
    except OSError:
        return False
    finally:
        posix.close(lock)
    return False


def _may_start(daemon: Daemon, socket_path: bytes) -> bytes | None:
    """The socket's directory if this caller may start ``daemon`` there, else None."""
    if posix.geteuid() != 0 or not enabled(daemon) or not _system_caller():
        return None
    head, sep, name = socket_path.rpartition(b"/")
    directory = (head or b"/") if sep else b"."
    return directory if name and _private_directory(directory) else None


def enabled(daemon: Daemon) -> bool:
    """``PYCNI_AUTOSTART`` if set, else pycni.yaml's switch for ``daemon`` (default on)."""
    value = posix.environ.get(ENABLE_ENV)
    if value:
        return value in (b"1", b"true", b"yes", b"on")
    section = read_section(_config_path())
    if section is None:
        return False  # a section this reader cannot take: start nothing rather than guess
    switch = section.get(daemon.config_key, "true")
    return switch in _ON


def idle_timeout() -> float:
    """Seconds a started daemon waits without a call before it exits."""
    for text in (posix.environ.get(IDLE_ENV, b"").decode(errors="replace"),
                 (read_section(_config_path()) or {}).get("idle_timeout", "")):
        try:
            value = float(text)
        except ValueError:
            continue
        if 0 < value < 1e9:
            return value
    return DEFAULT_IDLE_TIMEOUT


# ----------------------------------------------------------------------------- pycni.yaml


def _config_path() -> bytes | None:
    """The file ``pycni.config_file.find_config_file`` names, found the same way."""
    named = posix.environ.get(CONFIG_ENV)
    if named:
        return named
    for candidate in (_ETC_CONFIG, _REPO_CONFIG):
        try:
            if posix.stat(candidate).st_mode & _S_IFMT == _S_IFREG:
                return candidate
        except OSError:
            continue
    return None


def read_section(path: bytes | None) -> dict[str, str] | None:
    """The ``autostart:`` mapping's ``key: value`` texts ({} without a file or a section);
    None for a file that cannot be read or a section in any form but block style with plain
    scalars (the YAML loader reads more; this reader declines rather than misread it)."""
    if path is None:
        return {}
    try:
        text = _read(path).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    section: dict[str, str] | None = None
    for line in text.split("\n"):
        content = _uncommented(line)
        if not content.strip():
            continue
        if line[0] == "\t":
            return None  # YAML refuses tabs as indentation
        if line[0] != " ":  # a top-level key
            if section is not None and not content.startswith(SECTION):
                break  # the section ended
            if SECTION not in content:
                continue
            if section is not None or content != SECTION + ":":
                return None  # twice, quoted, flow style or a scalar
            section = {}
        elif section is not None:
            key, sep, value = content.strip().partition(":")
            value = value.strip()
            if not sep or key in section or not _valid(key, value):
                return None
            section[key] = value
    return section or {}


def _valid(key: str, value: str) -> bool:
    """A value as YAML reads it, plain: a boolean word, or a number for ``idle_timeout``
    (anything else, quoted, an anchor or an alias, is declined). Unknown keys pass (YAML
    reads them too, and nothing uses them)."""
    if key == "idle_timeout":
        try:
            return float(value) > 0
        except ValueError:
            return False
    if key in ("plugins", "runtime"):
        return value in _ON or value in _OFF
    return bool(value)


def _uncommented(line: str) -> str:
    """``line`` without a trailing comment (YAML's: ``#`` after whitespace) or blanks."""
    for start, char in enumerate(line):
        if char == "#" and (start == 0 or line[start - 1] in " \t"):
            return line[:start].rstrip()
    return line.rstrip()


def _read(path: bytes) -> bytes:
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        return posix.read(fd, _MAX_CONFIG)
    finally:
        posix.close(fd)


# ----------------------------------------------------------------------------- the caller


def _system_caller() -> bool:
    """The caller shares PID 1's mount, pid and user namespaces and privileges (see above)."""
    try:
        for kind in (b"mnt", b"pid", b"user"):
            if posix.readlink(b"/proc/self/ns/" + kind) != posix.readlink(b"/proc/1/ns/" + kind):
                return False
        mine, init = _privileges(b"/proc/self/status"), _privileges(b"/proc/1/status")
    except OSError:
        return False  # PID 1 is not ours to read: not this system's caller
    effective, bounding, unbounded = mine
    return unbounded and effective & init[0] == init[0] and bounding & init[1] == init[1]


def _privileges(status: bytes) -> tuple[int, int, bool]:
    """Effective and bounding capability masks, and "neither no_new_privs nor seccomp"."""
    fields = {}
    for line in _read(status).split(b"\n"):
        key, _, value = line.partition(b":")
        fields[key] = value.strip()
    try:
        effective, bounding = int(fields[b"CapEff"], 16), int(fields[b"CapBnd"], 16)
    except (KeyError, ValueError):
        raise OSError(errno.EINVAL, f"{status!r} lacks capability sets") from None
    unbounded = fields.get(b"NoNewPrivs") == b"0" and fields.get(b"Seccomp", b"0") == b"0"
    return effective, bounding, unbounded


def _private_directory(directory: bytes) -> bool:
    """The socket's directory exists (made 0700 if not) and is root's alone: only root can
    have put a socket, a lock or a log there."""
    try:
        posix.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = posix.lstat(directory)
    except OSError:
        return False
    return st.st_mode & _S_IFMT == 0o040000 and st.st_uid == 0 and not st.st_mode & 0o022


def _take_start_lock(path: bytes) -> int:
    """The start lock's descriptor, held (flock); -1 if a start is under way (or no lock)."""
    try:
        fd = posix.open(path, posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC | posix.O_NOFOLLOW,
                        0o600)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        posix.close(fd)
        return -1
    return fd


def answers(socket_path: bytes) -> bool:
    """Somebody listens on ``socket_path`` (a connection made and closed at once)."""
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        conn.connect(socket_path)
    except OSError:
        return False
    finally:
        conn.close()
    return True


def _failed_lately(lock: int) -> bool:
    """The last start left its mark (the daemon clears it once it listens) not long ago."""
    st = posix.fstat(lock)
    return st.st_size > 0 and time.time() - st.st_mtime < RETRY_AFTER


# ----------------------------------------------------------------------------- the start


def fork_detached(keep: tuple[int, ...] = ()) -> bool:
    """Fork a process that is nobody's child and holds nothing of the caller's but ``keep``:
    True in it, False in the caller.

    The middle process lets go of the caller's descriptors (stdio on /dev/null, the rest
    closed), starts a session of its own and forks again, then exits at once; the caller
    reaps it. So once this returns, no process of the start holds the caller's stdout (a CNI
    runtime reads a plugin's stdout until EOF: a start waiting for a CPU must not hold up
    the call's end), and the grandchild leads no session, so it can never acquire a
    controlling terminal."""
    middle = posix.fork()
    if middle:
        posix.waitpid(middle, 0)
        return False
    grandchild = -1
    try:
        _let_go(keep)
        posix.setsid()
        grandchild = posix.fork()
    finally:
        if grandchild != 0:  # the middle process, whatever happened: gone at once
            posix._exit(0)
    return True


def _let_go(keep: tuple[int, ...]) -> None:
    null = posix.open(b"/dev/null", posix.O_RDWR)
    for fd in (0, 1, 2):
        posix.dup2(null, fd)
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        posix.closerange(low, fd)
        low = fd + 1
    posix.closerange(low, _MAX_FD)


def _become_daemon(daemon: Daemon, socket_path: bytes, lock: int, caller: int) -> None:
    """In the detached grandchild (holding the start lock and a pidfd of its caller, nothing
    else of the caller's): become the daemon. Never returns.

    The call that started it runs in-process meanwhile, on the same CPUs (two hyperthreads
    of one core, often): the daemon-to-be waits for that call to end (at most
    ``CALLER_WAIT``), then warms up (imports, preloads) in the SCHED_IDLE class, with CPU
    time nothing else wants (as the fork server's spares warm up), so the calls that come
    meanwhile are not slowed either; the server takes the normal policy back once it listens
    (``pycni.warmfork.started.OnDemand.listening``)."""
    try:
        ended = select.poll()
        ended.register(caller, select.POLLIN)  # a pidfd is readable once its process exited
        ended.poll(int(CALLER_WAIT * 1000))
        posix.close(caller)
        try:  # noqa: SIM105 - builtins only
            posix.sched_setscheduler(0, posix.SCHED_IDLE, posix.sched_param(0))
        except OSError:
            pass  # not permitted: it starts at normal priority, which is slower, not wrong
        from pycni.warmfork import ondemand

        ondemand.exec_started(daemon, socket_path.decode(errors="surrogateescape"), lock,
                              idle_timeout())
    finally:
        posix._exit(127)

