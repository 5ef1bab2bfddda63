"""The launcher <-> server wire format. Builtins only: the launcher imports this module.

One ``SOCK_SEQPACKET`` connection per plugin call; every message is one packet.

request   ``MAGIC name NUL cwd NUL (KEY=VALUE NUL)* NUL`` with SCM_RIGHTS carrying exactly
          ``FDS`` descriptors: stdin, stdout, stderr, the caller's netns and mntns.
ack       ``b"ACK <timeout ms>"``: the server accepted the call; from here on the call may
          have run and the launcher never re-runs it. SCM_RIGHTS carries a pidfd of the
          worker that runs it (none when the server answers the call itself, VERSION): the
          launcher kills it and waits for it before it reports a failure of its own.
status    ``b"EXIT <0..255>"``: the worker's exit status, the launcher's own.

NUL separates fields because no name, path or environment entry can contain one; the empty
field at the end tells a complete request from one cut at a field boundary.

Before a caller sends anything (its stdio, environment and namespaces) it checks who would
get it (``connect``): the socket's directory is root's and writable by nobody else, and the
process listening is root (SO_PEERCRED). Otherwise it runs the call itself.
"""

import _socket
import posix
import sys

__all__ = [
    "FDS",
    "MAGIC",
    "MAX_ENV_ENTRIES",
    "MAX_REQUEST",
    "ProtocolError",
    "Request",
    "UntrustedSocket",
    "connect",
    "decode_ack",
    "decode_request",
    "decode_status",
    "encode_ack",
    "encode_request",
    "encode_status",
    "note",
    "received_fds",
    "send_with_namespaces",
]

MAGIC = b"pycni-call/1\0"
FDS = 5  # stdin, stdout, stderr, netns, mntns
MAX_REQUEST = 128 * 1024  # a larger packet is refused (the launcher runs in-process instead)
MAX_ENV_ENTRIES = 4096
_MAX_NAME = 64
_ACK = b"ACK "
_EXIT = b"EXIT "
_NS_FLAGS = posix.O_RDONLY | posix.O_CLOEXEC


class ProtocolError(ValueError):
    """A packet that is not what the protocol says; the connection is dropped."""


class UntrustedSocket(Exception):
    """The socket's directory or the process listening there is not root's alone: nothing
    may be sent to it. The caller runs the call itself (and says why on stderr)."""


class Request:
    """A decoded request (fds travel separately, as ancillary data)."""

    __slots__ = ("cwd", "env", "name")

    def __init__(self, name: str, cwd: bytes, env: list[tuple[bytes, bytes]]) -> None:
        self.name = name
        self.cwd = cwd
        self.env = env


def encode_request(name: str, cwd: bytes, env: dict[bytes, bytes]) -> bytes:
    parts = [MAGIC + name.encode() + b"\0" + cwd + b"\0"]
    parts += [key + b"=" + value + b"\0" for key, value in env.items()]
    parts.append(b"\0")
    return b"".join(parts)


def decode_request(data: bytes) -> Request:
    if len(data) > MAX_REQUEST:
        raise ProtocolError(f"request of {len(data)} bytes exceeds {MAX_REQUEST}")
    if not data.startswith(MAGIC) or not data.endswith(b"\0\0"):
        raise ProtocolError("not a pycni call (bad magic, incomplete or unterminated)")
    fields = data[len(MAGIC) : -2].split(b"\0")
    if len(fields) < 2:
        raise ProtocolError("request lacks a plugin name or cwd")
    raw_name, cwd, entries = fields[0], fields[1], fields[2:]
    if not raw_name or len(raw_name) > _MAX_NAME or not raw_name.isascii():
        raise ProtocolError(f"bad plugin name {raw_name[:_MAX_NAME]!r}")
    if len(entries) > MAX_ENV_ENTRIES:
        raise ProtocolError(f"more than {MAX_ENV_ENTRIES} environment entries")
    env: list[tuple[bytes, bytes]] = []
    for entry in entries:
        key, sep, value = entry.partition(b"=")
        if not sep or not key:
            raise ProtocolError(f"bad environment entry {entry[:40]!r}")
        env.append((key, value))
    return Request(raw_name.decode(), cwd, env)


def encode_ack(timeout: float) -> bytes:
    return _ACK + str(max(1, round(timeout * 1000))).encode()


def decode_ack(data: bytes) -> float:
    """The server's call timeout in seconds."""
    digits = data[len(_ACK) :]
    if not data.startswith(_ACK) or not digits.isdigit() or len(digits) > 9:
        raise ProtocolError(f"bad ack {data[:40]!r}")
    return int(digits) / 1000


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
