"""The ``pycni-run`` entry: hand the command to the runtime daemon, or run it here.

Docker's split, for start-up time: a warm daemon (``pycni-run daemon``) has every module
imported and warmed; this client only ships argv, cwd, umask, environment, its stdio and its
namespaces to it and waits for the exit status. Until it knows it must run in-process it
imports builtins only (``_socket``, ``_signal``, ``posix``, ``sys``), ``pycni_run.wire`` and
``pycni.warmfork.wire`` (both builtins-only too).

The decision, as the plugin launcher makes it:
- ``PYCNI_RUN_NO_DAEMON`` set (not "0"), a ``LOCAL`` answer (``-t``, which needs this
  terminal's process group, and ``daemon``) or any error before the daemon's ACK: run
  in-process (``pycni_run.entry``), same behaviour and exit codes. So does a socket whose
  directory or listener is not root's alone (with a note on stderr): nothing of the command
  (stdio, environment, namespaces) is handed to it.
- Nobody listening (no socket, or a refused connection): start the daemon for the commands to
  come (``pycni.autostart``, as the plugin launcher starts its server), then run this one
  in-process all the same.
- After the ACK the command may have run: never re-run it. SIGINT, SIGTERM, SIGHUP, SIGQUIT,
  SIGUSR1 and SIGUSR2 are forwarded to the process running it (a pidfd sent with the ACK), as
  a foreground ``pycni-run`` forwards them to its container. A lost connection before the
  status is Docker's 125 with a message on stderr.
"""

import _signal  # type: ignore[import-not-found]  # signal.py imports enum: milliseconds
import _socket
import errno
import posix
import sys

from pycni.warmfork.wire import (
    UntrustedSocket,
    connect,
    note,
    received_fds,
    send_with_namespaces,
)
from pycni_run import wire

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds on every call
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["DEFAULT_SOCKET", "DISABLE_ENV", "SOCKET_ENV", "main"]

DEFAULT_SOCKET = b"/run/pycni/run.sock"
SOCKET_ENV = b"PYCNI_RUN_SOCKET"
DISABLE_ENV = b"PYCNI_RUN_NO_DAEMON"
CONNECT_TIMEOUT = 2.0
ACK_TIMEOUT = 10.0  # the daemon ACKs as soon as it has read the request
EXIT_RUNTIME = 125
FORWARDED = (
    _signal.SIGINT,
    _signal.SIGTERM,
    _signal.SIGHUP,
    _signal.SIGQUIT,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
)


# Words of a command line that may stay in-process (``cli.stays_local``): no daemon is started
# for it. A false match (``run busybox echo daemon``) only delays the start to the next command.
_NEVER_SERVED = ("daemon", "install-client")


class _Fallback(Exception):
    """Nothing has run yet: run in-process."""


class _NoDaemon(_Fallback):
    """Nobody listens at the socket: worth starting the daemon for the commands to come."""


def main() -> "NoReturn":
    """``pycni-run``: through the daemon if one takes the command, else in-process."""
    env = posix.environ
    if env.get(DISABLE_ENV, b"") in (b"", b"0"):
        path = env.get(SOCKET_ENV) or DEFAULT_SOCKET
        try:
            posix._exit(_call(path))
        except _NoDaemon:
            _start_daemon(path)
        except _Fallback:
            pass
    _in_process()


def _start_daemon(path: bytes) -> None:
    """Start the daemon at ``path`` for the commands to come; if a racing caller's answers
    there already, hand it this command (and exit), else return and run it here. Not for
    the commands that never go to a daemon (``daemon`` itself above all)."""
    from pycni import autostart

    if any(arg in _NEVER_SERVED for arg in sys.argv[1:]):
        return
    if autostart.start(autostart.RUNTIME_DAEMON, path):
        try:  # noqa: SIM105 - contextlib costs milliseconds of start-up
            posix._exit(_call(path))
        except _Fallback:
            pass


def _in_process() -> "NoReturn":
    try:
        from pycni import oneshot

        oneshot.prepare()  # a one-shot process, as a plugin executable's in-process path
        from pycni_run import entry
    except ImportError:
        if not sys.flags.no_site:
            raise
        import site  # an `-IS` entry without site-packages on its path: add them now

        site.main()
        from pycni_run import entry
    sys.exit(entry.main())


def _connect(path: bytes) -> _socket.socket:
    try:
        return connect(path, CONNECT_TIMEOUT)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise _NoDaemon from None
        raise _Fallback from None
    except UntrustedSocket as err:
        note(f"pycni-run: not using the runtime daemon's socket: {err}; running here")
        raise _Fallback from None


def _call(path: bytes) -> int:
    conn = _connect(path)
    try:
        _send_request(conn)
        pidfd = _wait_ack(conn)
        try:
            return _wait_status(conn, pidfd)
        finally:
            posix.close(pidfd)
    finally:
        conn.close()


def _request() -> bytes:
    try:
        cwd = posix.getcwdb()
    except OSError:
        cwd = b"/"
    mask = posix.umask(0o022)
    posix.umask(mask)
    argv = [a.encode("utf-8", "surrogateescape") for a in sys.argv[1:]]
    env = [k + b"=" + v for k, v in posix.environ.items()]
    return wire.encode_request(cwd, mask, argv, env)


def _send_request(conn: _socket.socket) -> None:
    data = _request()
    if len(data) > wire.MAX_REQUEST:
        raise _Fallback
    try:
        send_with_namespaces(conn, data, wire.NAMESPACES)
    except OSError:
        raise _Fallback from None


def _wait_ack(conn: _socket.socket) -> int:
    """The pidfd of the process running the command, once the daemon accepted it."""
    conn.settimeout(ACK_TIMEOUT)
    try:
        data, ancdata, _flags, _addr = conn.recvmsg(64, _socket.CMSG_SPACE(4))
    except OSError:
        raise _Fallback from None
    fds = received_fds(ancdata)
    if data == wire.ACK and len(fds) == 1:
        return fds[0]
    for fd in fds:
        posix.close(fd)
    # LOCAL, a dropped connection, garbage: nothing ran.
    raise _Fallback


def _wait_status(conn: _socket.socket, pidfd: int) -> int:
    def forward(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 - contextlib costs milliseconds of start-up
            _signal.pidfd_send_signal(pidfd, signum)
        except OSError:
            pass  # it has exited: its status is on the way

    for signum in FORWARDED:
        _signal.signal(signum, forward)
    conn.settimeout(None)
    try:
        data = conn.recv(64)
    except OSError as err:
        _fail(f"lost the connection to the runtime daemon: {err}")
    if not data:
        _fail("the runtime daemon closed the connection before the exit status")
    try:
        return wire.decode_status(data)
    except wire.ProtocolError as err:
        _fail(f"bad reply from the runtime daemon: {err}")


def _fail(msg: str) -> "NoReturn":
    """The command may have run: Docker's 125 (runtime error), with the reason on stderr."""
    note(f"pycni-run: {msg}")
    posix._exit(EXIT_RUNTIME)


if __name__ == "__main__":
    main()
