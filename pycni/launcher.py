"""What every plugin executable runs first: hand the call to `pycni serve`, or run it here.

Start-up is paid on every plugin call (podman makes 18 per container), so until it knows it
must run the plugin in-process this module imports builtins only: ``_socket`` (not
``socket``, which pulls in enum), ``_signal``, ``select``, ``posix`` (not even ``os``),
``sys``, ``pycni.server.protocol`` and ``pycni.warmfork.wire``. No ``json``, no ``re``, not
even ``contextlib`` (it pulls in ``os``, ``collections`` and ``functools``: ~2-3 ms).

The decision:
- ``PYCNI_NO_SERVER`` set (not "0"), or any error before the server's ACK: run in-process
  (``pycni.plugins.launch``), same behaviour, slower. So does a socket whose directory or
  listener is not root's alone (with a note on stderr): nothing of the call (stdio,
  environment, namespaces) is handed to it.
- Nobody listening (no socket, or a refused connection): start the server for the calls to
  come (``pycni.autostart``: only a root caller of the system itself, with autostart on; it
  forks the start off and returns), then run this call in-process all the same.
- After the ACK the call may have run: never re-run it. A lost connection or a missing
  status prints one error JSON (code 999) on stdout and exits 1. The wait for the status has
  its own deadline, a little above the server's call timeout, so the executable never hangs.
- No plugin work may happen after the caller was told the call failed (its runtime then
  rolls back with a DEL): the ACK carries a pidfd of the worker, and before reporting a
  failure the launcher kills that worker and waits until it is gone. (A server killed
  mid-call takes its workers along too: they have it as their parent-death signal.)
"""

import _signal  # type: ignore[import-not-found]  # signal.py imports enum: milliseconds
import _socket
import errno
import posix
import select
import sys

from pycni.server.protocol import (
    MAX_REQUEST,
    ProtocolError,
    decode_ack,
    decode_status,
    encode_request,
)
from pycni.warmfork.wire import UntrustedSocket, connect, note, received_fds, send_with_namespaces

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds on every call
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["DEFAULT_SOCKET", "launch"]

DEFAULT_SOCKET = b"/run/pycni/pycni.sock"
CONNECT_TIMEOUT = 2.0
ACK_TIMEOUT = 10.0  # the server ACKs as soon as it has read the request
DEADLINE_MARGIN = 2.0  # beyond the server's call timeout, which it sends in the ACK
WORKER_EXIT_TIMEOUT = 10.0  # a SIGKILLed worker is gone in milliseconds


class _Fallback(Exception):
    """Nothing has run yet: run in-process."""


class _NoServer(_Fallback):
    """Nobody listens at the socket: worth starting a server for the calls to come."""


def launch(name: str) -> "NoReturn":
    """Run plugin ``name``: through the server if one answers, else in-process. Never returns."""
    env = posix.environ
    if env.get(b"PYCNI_NO_SERVER", b"") in (b"", b"0"):
        path = env.get(b"PYCNI_SOCKET") or DEFAULT_SOCKET
        try:
            posix._exit(_call(path, name))
        except _NoServer:
            _start_server(path, name)
        except _Fallback:
            pass
    _in_process(name)


def _start_server(path: bytes, name: str) -> None:
    """Start a server at ``path`` for the calls to come; if a racing caller's answers there
    already, hand it this call (and exit), else return and run it here."""
    from pycni import autostart

    if autostart.start(autostart.PLUGIN_SERVER, path):
        try:  # noqa: SIM105 - contextlib costs milliseconds of start-up
            posix._exit(_call(path, name))
        except _Fallback:
            pass


def _in_process(name: str) -> "NoReturn":
    if posix.environ.get(b"CNI_COMMAND") == b"VERSION":
        _answer_version()
    from pycni import oneshot

    oneshot.prepare(one_call=True)  # before pycni.plugins: skel and the results are dataclasses
    from pycni import plugins

    oneshot.finish(plugins.launch(name))


def _answer_version() -> None:
    """VERSION at the cost of an interpreter's start: the plain input runtimes send is answered
    here (``pycni.cni.version_answer``, builtins only) and the process exits; any other input
    is left to skel, which then reads the same bytes."""
    from pycni.cni import version_answer

    chunks = []
    try:
        while chunk := posix.read(0, 65536):
            chunks.append(chunk)
    except OSError:
        chunks = []  # skel answers an unreadable stdin as an empty one
    data = b"".join(chunks)
    output = version_answer.answer(data)
    if output is None:
        import io

        sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        return
    try:
        posix.write(1, output)
    except OSError:
        posix._exit(1)
    posix._exit(0)


def _connect(path: bytes) -> _socket.socket:
    try:
        return connect(path, CONNECT_TIMEOUT)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise _NoServer from None
        raise _Fallback from None
    except UntrustedSocket as err:
        note(f"pycni: not using the pycni server socket: {err}; running it here")
        raise _Fallback from None


def _call(path: bytes, name: str) -> int:
    conn = _connect(path)
    try:
        _send_request(conn, name)
        timeout, worker = _wait_ack(conn)
        return _wait_status(conn, timeout + DEADLINE_MARGIN, worker)
    finally:
        conn.close()


def _send_request(conn: _socket.socket, name: str) -> None:
    try:
        cwd = posix.getcwdb()
    except OSError:
        cwd = b"/"
    data = encode_request(name, cwd, posix.environ)
    if len(data) > MAX_REQUEST:
        raise _Fallback
    try:
        send_with_namespaces(conn, data, ("net", "mnt"))
    except OSError:
        raise _Fallback from None


def _wait_ack(conn: _socket.socket) -> tuple[float, int]:
    """The server's call timeout and a pidfd of the worker running the call (-1: none, the
    server answers it itself), once it has accepted; ``_Fallback`` if it has not."""
    conn.settimeout(ACK_TIMEOUT)
    try:
        data, worker = _receive_ack(conn)
    except TimeoutError:
        data, worker = _late_ack(conn)
    except OSError:
        raise _Fallback from None
    try:
        return decode_ack(data), worker
    except ProtocolError:
        _end_worker(worker)  # not an ACK after all: nothing may run
        raise _Fallback from None


def _receive_ack(conn: _socket.socket) -> tuple[bytes, int]:
    data, ancdata, _flags, _addr = conn.recvmsg(64, _socket.CMSG_SPACE(4))
    fds = received_fds(ancdata)
    for extra in fds[1:]:
        posix.close(extra)
    return data, fds[0] if fds else -1


def _late_ack(conn: _socket.socket) -> tuple[bytes, int]:
    """Give up on the ACK without a race: once we shut the socket down, the server's ACK
    fails and it runs nothing; an ACK that got in before the shutdown still counts."""
    try:
        conn.shutdown(_socket.SHUT_RDWR)
        conn.setblocking(False)
        data, worker = _receive_ack(conn)
    except OSError:
        raise _Fallback from None
    if not data:
        raise _Fallback
    _fail("pycni server accepted the call too late", f"no ACK within {ACK_TIMEOUT:.0f}s", worker)


def _wait_status(conn: _socket.socket, deadline: float, worker: int) -> int:
    conn.settimeout(deadline)
    try:
        data = conn.recv(64)
    except TimeoutError:
        _fail("pycni server call timed out", f"no exit status within {deadline:.1f}s", worker)
    except OSError as err:
        _fail("lost the connection to the pycni server", str(err), worker)
    if not data:
        _fail("lost the connection to the pycni server", "it closed before sending a status",
              worker)
    try:
        return decode_status(data)
    except ProtocolError as err:
        _fail("bad reply from the pycni server", str(err), worker)


def _end_worker(worker: int) -> None:
    """Kill the worker (``worker``: its pidfd, -1 for none) and wait until it is gone."""
    if worker < 0:
        return
    try:  # noqa: SIM105 - contextlib costs milliseconds of start-up
        _signal.pidfd_send_signal(worker, _signal.SIGKILL)
    except OSError:
        pass  # gone already
    poller = select.poll()
    poller.register(worker, select.POLLIN)  # readable once the process has exited
    poller.poll(int(WORKER_EXIT_TIMEOUT * 1000))


def _fail(msg: str, details: str, worker: int = -1) -> "NoReturn":
    """The call may have run: make sure nothing of it runs any more, then report code 999
    on stdout (one JSON document) and exit 1."""
    _end_worker(worker)
    doc = f'{{"code": 999, "msg": {_quote(msg)}, "details": {_quote(details)}}}\n'
    try:  # noqa: SIM105 - contextlib costs milliseconds of start-up
        posix.write(1, doc.encode())
    except OSError:
        pass  # stdout is gone: the exit status still says it failed
    posix._exit(1)


def _quote(text: str) -> str:
    """A JSON string literal without importing json."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " " or ch > "~":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else "?")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
