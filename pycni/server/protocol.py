"""The launcher <-> server wire format. Builtins only: the launcher imports this module.

One ``SOCK_SEQPACKET`` connection per plugin call; every message is one packet.

request   ``MAGIC name NUL cwd NUL (KEY=VALUE NUL)* NUL`` with SCM_RIGHTS carrying exactly
          ``FDS`` descriptors: stdin, stdout, stderr, the caller's netns and mntns.
ack       ``b"ACK <timeout ms>"``: the server accepted the call; from here on the call may
          have run and the launcher never re-runs it. SCM_RIGHTS carries a pidfd of the
          worker that runs it (none when the server answers the call itself, VERSION): the
          launcher kills it and waits for it before it reports a failure of its own.
status    ``b"EXIT <0..255>"``: the worker's exit status, the launcher's own (the warm-fork
          kit's status packet, ``pycni.warmfork.wire``, as the connection's checks are).

NUL separates fields because no name, path or environment entry can contain one; the empty
field at the end tells a complete request from one cut at a field boundary.
"""

from pycni.warmfork.wire import ProtocolError, decode_status, encode_status, packet_fields

__all__ = [
    "FDS",
    "MAGIC",
    "MAX_ENV_ENTRIES",
    "MAX_REQUEST",
    "ProtocolError",
    "Request",
    "decode_ack",
    "decode_request",
    "decode_status",
    "encode_ack",
    "encode_request",
    "encode_status",
]

MAGIC = b"pycni-call/1\0"
FDS = 5  # stdin, stdout, stderr, netns, mntns
MAX_REQUEST = 128 * 1024  # a larger packet is refused (the launcher runs in-process instead)
MAX_ENV_ENTRIES = 4096
_MAX_NAME = 64
_ACK = b"ACK "


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
    fields = packet_fields(data, magic=MAGIC, end=b"\0\0", max_size=MAX_REQUEST, least=2,
                           kind="pycni call", lacks="a plugin name or cwd")
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
