"""The ``pycni-run`` client <-> runtime daemon wire format. Builtins only: the client imports it.

One ``SOCK_SEQPACKET`` connection per command; every message is one packet.

request  ``MAGIC`` then NUL-terminated fields: cwd, umask (octal), argc, argv..., envc, env...
         (``KEY=VALUE``), with SCM_RIGHTS carrying exactly ``FDS`` descriptors: stdin, stdout,
         stderr and the caller's namespaces in ``NAMESPACES`` order.
local    ``b"LOCAL"``: the daemon will not run this command (``-t`` and ``daemon`` itself);
         nothing has run, the client runs it in-process.
ack      ``b"ACK"`` with SCM_RIGHTS carrying a pidfd of the process that runs the command:
         from here on the command may have run, the client never re-runs it, and it forwards
         the signals it gets to that process (``pidfd_send_signal``).
status   ``b"EXIT <0..255>"``: the command's exit status, the client's own.

Counts make every field, empty ones included, unambiguous; the trailing count check tells a
complete request from one cut short.
"""

# The status packet and the error type are the warm-fork kit's (``EXIT <n>``).
from pycni.warmfork.wire import ProtocolError, decode_status, encode_status, packet_fields

__all__ = [
    "ACK",
    "FDS",
    "LOCAL",
    "MAGIC",
    "MAX_ENTRIES",
    "MAX_REQUEST",
    "NAMESPACES",
    "ProtocolError",
    "Request",
    "decode_request",
    "decode_status",
    "encode_request",
    "encode_status",
]

MAGIC = b"pycni-run/1\0"
# Joined by the worker in this order, mnt last but one: after it, /proc is the caller's. pid
# only sets where the worker's children go (pid_for_children).
NAMESPACES = ("net", "uts", "ipc", "cgroup", "mnt", "pid")
FDS = 3 + len(NAMESPACES)
MAX_REQUEST = 256 * 1024
MAX_ENTRIES = 8192  # argv and env entries, each
ACK = b"ACK"
LOCAL = b"LOCAL"


class Request:
    """A decoded request (fds travel separately, as ancillary data)."""

    __slots__ = ("argv", "cwd", "env", "umask")

    def __init__(self, cwd: bytes, umask: int, argv: list[bytes], env: list[bytes]) -> None:
        self.cwd = cwd
        self.umask = umask
        self.argv = argv
        self.env = env


def encode_request(cwd: bytes, umask: int, argv: list[bytes], env: list[bytes]) -> bytes:
    head = [cwd, b"%o" % umask, b"%d" % len(argv), *argv, b"%d" % len(env), *env]
    return MAGIC + b"\0".join(head) + b"\0"


def _count(field: bytes) -> int:
    if not field.isdigit() or len(field) > 5 or int(field) > MAX_ENTRIES:
        raise ProtocolError(f"bad count {field[:16]!r}")
    return int(field)


def decode_request(data: bytes) -> Request:
    fields = packet_fields(data, magic=MAGIC, end=b"\0", max_size=MAX_REQUEST, least=4,
                           kind="pycni-run request", lacks="cwd, umask or argv")
    cwd, umask = fields[0], fields[1]
    if not cwd.startswith(b"/"):
        raise ProtocolError(f"cwd {cwd[:40]!r} is not absolute")
    if not umask or len(umask) > 4 or any(c not in b"01234567" for c in umask):
        raise ProtocolError(f"bad umask {umask[:8]!r}")
    argc = _count(fields[2])
    argv = fields[3 : 3 + argc]
    if len(argv) != argc or len(fields) < 4 + argc:
        raise ProtocolError("request cut short in argv")
    envc = _count(fields[3 + argc])
    env = fields[4 + argc :]
    if len(env) != envc:
        raise ProtocolError(f"expected {envc} environment entries, got {len(env)}")
    for entry in env:
        if entry.find(b"=") <= 0:
            raise ProtocolError(f"bad environment entry {entry[:40]!r}")
    return Request(cwd, int(umask, 8), argv, env)
