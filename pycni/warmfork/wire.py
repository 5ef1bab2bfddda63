"""The caller's side of a warm server's socket. Builtins only: the plugin launcher and the
``pycni-run`` client import it on their fast path.

Before a caller sends anything (its stdio, environment and namespaces) it checks who would
get it (``connect``): the socket's directory is root's and writable by nobody else, and the
process listening is root (SO_PEERCRED). Otherwise it runs the call itself. Each service's
request and ACK are its own (``pycni.server.protocol``, ``pycni_run.wire``); the status both
servers send last is this one: ``b"EXIT <0..255>"``.
"""

import _socket
import posix
import sys

__all__ = [
    "ProtocolError",
    "UntrustedSocket",
    "connect",
    "decode_status",
    "encode_status",
    "note",
    "packet_fields",
    "received_fds",
    "send_with_namespaces",
]

_EXIT = b"EXIT "
_NS_FLAGS = posix.O_RDONLY | posix.O_CLOEXEC


class ProtocolError(ValueError):
    """A packet that is not what the protocol says; the connection is dropped."""


class UntrustedSocket(Exception):
    """The socket's directory or the process listening there is not root's alone: nothing
    may be sent to it. The caller runs the call itself (and says why on stderr)."""


def encode_status(status: int) -> bytes:
    return _EXIT + str(status & 0xFF).encode()


def decode_status(data: bytes) -> int:
    digits = data[len(_EXIT) :]
    if not data.startswith(_EXIT) or not digits.isdigit() or len(digits) > 3:
        raise ProtocolError(f"bad status {data[:40]!r}")
    status = int(digits)
    if status > 255:
        raise ProtocolError(f"status {status} out of range")
    return status


def packet_fields(data: bytes, *, magic: bytes, end: bytes, max_size: int, least: int,
                  kind: str, lacks: str) -> list[bytes]:
    """The NUL-separated fields of a request packet ``magic`` + fields + ``end``; ProtocolError
    for one too large, of another ``kind``, cut short, or with fewer than ``least`` fields
    (the first ones being ``lacks``)."""
    if len(data) > max_size:
        raise ProtocolError(f"request of {len(data)} bytes exceeds {max_size}")
    if not data.startswith(magic) or not data.endswith(end):
        raise ProtocolError(f"not a {kind} (bad magic, incomplete or unterminated)")
    fields = data[len(magic) : -len(end)].split(b"\0")
    if len(fields) < least:
        raise ProtocolError(f"request lacks {lacks}")
    return fields


def connect(path: bytes, timeout: float) -> _socket.socket:
    """A SEQPACKET connection to root's listener at ``path``: OSError if there is none,
    ``UntrustedSocket`` if the directory or the listener is not root's alone (nothing left
    open either way, nothing sent)."""
    _check_directory(path)
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        conn.settimeout(timeout)
        conn.connect(path)
        uid = _peer_uid(conn)
    except OSError:
        conn.close()
        raise
    if uid != 0:
        conn.close()
        raise UntrustedSocket(f"the process listening on {_text(path)} is uid {uid}, not root")
    return conn


def _check_directory(path: bytes) -> None:
    """Only root may have put a socket (or a symlink to one) there: the directory is root's
    and not writable by group or others (a sticky /tmp is not enough: anyone may create)."""
    head, sep, _ = path.rpartition(b"/")
    directory = (head or b"/") if sep else b"."
    st = posix.stat(directory)  # OSError: no such directory, so no socket either
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise UntrustedSocket(
            f"{_text(directory)} is not root's alone (owner uid {st.st_uid}, mode "
            f"{st.st_mode & 0o7777:04o})"
        )


def _peer_uid(conn: _socket.socket) -> int:
    """The uid of the process at the other end (``struct ucred``: pid, uid, gid)."""
    raw = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(raw[4:8], sys.byteorder)


def _text(path: bytes) -> str:
    return path.decode(errors="backslashreplace")


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in ``recvmsg`` ancillary data (SCM_RIGHTS), in order."""
    return [
        int.from_bytes(raw[i : i + 4], sys.byteorder)
        for level, kind, raw in ancdata
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
        for i in range(0, len(raw) - 3, 4)
    ]


def note(text: str) -> None:
    """One line on stderr, best effort (the launcher's and the client's: no ``print``)."""
    try:  # noqa: SIM105 - contextlib costs milliseconds of start-up
        posix.write(2, (text + "\n").encode(errors="backslashreplace"))
    except OSError:
        pass


def send_with_namespaces(conn: _socket.socket, data: bytes, namespaces: tuple[str, ...]) -> None:
    """Send ``data`` as one packet with SCM_RIGHTS carrying fds 0-2 and this process's
    ``namespaces`` (``/proc/self/ns/<name>``, in that order). OSError if any step fails.
    (The plugin launcher's and the ``pycni-run`` client's request: both import only builtins.)"""
    fds = [0, 1, 2]
    try:
        for name in namespaces:
            fds.append(posix.open(b"/proc/self/ns/" + name.encode(), _NS_FLAGS))
        rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        conn.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    finally:
        for fd in fds[3:]:
            posix.close(fd)
