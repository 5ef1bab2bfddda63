"""Hostile peers against `pycni serve`, beyond tests/netns/test_server.py (which covers a
non-root peer, garbage, missing/too few fds, an unknown plugin, oversized, truncated, empty,
hung-up and silent requests one at a time).

Here: a flood of silent connections cannot wedge the server (a good call is still answered
promptly); descriptors sent with bad requests are never leaked, however many; too many env
entries, bad names, bad field framing and descriptors that are not namespaces are refused;
a peer that sends more than one packet or the wrong socket type gets nowhere. After each,
the server is alive and answers VERSION. Every server here is private and stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.server import protocol
from tests.netns.test_server import ServerProc, _start_server, _version_works


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    directory = tmp_path_factory.mktemp("server-hostile")
    with _start_server(directory / "run" / "pycni.sock", directory / "server.log") as proc:
        yield proc


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled_fd_count(server: ServerProc) -> int:
    """The server's descriptors once pending connections are dropped (READ_TIMEOUT is 2s)."""
    deadline = time.monotonic() + 10
    last = -1
    while time.monotonic() < deadline:
        count = _fd_count(server.pid)
        if count == last:
            return count
        last = count
        time.sleep(0.5)
    return last


@contextlib.contextmanager
def _ns_fds() -> Iterator[list[int]]:
    fds = [
        0,
        1,
        2,
        os.open("/proc/self/ns/net", os.O_RDONLY),
        os.open("/proc/self/ns/mnt", os.O_RDONLY),
    ]
    try:
        yield fds
    finally:
        for fd in fds[3:]:
            os.close(fd)


def _send(
    server: ServerProc, data: bytes, fds: list[int] | None = None, extra: list[bytes] | None = None
) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.settimeout(15)
        conn.connect(str(server.socket))
        ancillary = []
        if fds:
            rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
        conn.sendmsg([data], ancillary)
        for packet in extra or []:
            with contextlib.suppress(OSError):
                conn.send(packet)
        try:
            return conn.recv(64)
        except ConnectionResetError:
            return b""


def test_a_flood_of_silent_connections_does_not_wedge_it(server: ServerProc, cni_bin: Path) -> None:
    conns = []
    try:
        for _ in range(200):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            conns.append(conn)
            conn.connect(str(server.socket))
        started = time.monotonic()
        _version_works(server, cni_bin)  # answered while 200 peers say nothing
        assert time.monotonic() - started < 5
    finally:
        for conn in conns:
            conn.close()
    _version_works(server, cni_bin)


@pytest.mark.parametrize("count", [5, 64, 250])
def test_descriptors_of_bad_requests_are_never_leaked(
    server: ServerProc, cni_bin: Path, count: int
) -> None:
    before = _settled_fd_count(server)
    with contextlib.ExitStack() as stack:
        fds = [stack.enter_context(open("/dev/null", "rb")).fileno() for _ in range(count)]
        for data in (
            b"garbage",
            protocol.encode_request("nope", b"/", {}),
            protocol.encode_request("none", b"/", {b"CNI_COMMAND": b"VERSION"})[:-1],
        ):
            assert _send(server, data, fds=fds) == b""
    assert _settled_fd_count(server) <= before
    _version_works(server, cni_bin)


@pytest.mark.parametrize(
    "kind",
    [
        "too-many-env",
        "slash-name",
        "long-name",
        "non-ascii-name",
        "no-equals",
        "empty-key",
        "no-cwd",
        "nul-flood",
    ],
)
def test_malformed_fields_are_refused(server: ServerProc, cni_bin: Path, kind: str) -> None:
    magic = protocol.MAGIC
    env = {b"CNI_COMMAND": b"VERSION"}
    data = {
        "too-many-env": protocol.encode_request(
            "none", b"/", {f"K{i}".encode(): b"" for i in range(protocol.MAX_ENV_ENTRIES + 1)}
        ),
        "slash-name": protocol.encode_request("../none", b"/", env),
        "long-name": protocol.encode_request("n" * 65, b"/", env),
        "non-ascii-name": magic + "nöne".encode() + b"\0/\0\0",
        "no-equals": magic + b"none\0/\0CNI_COMMAND\0\0",
        "empty-key": magic + b"none\0/\0=VERSION\0\0",
        "no-cwd": magic + b"none\0\0",
        "nul-flood": magic + b"\0" * 60000,
    }[kind]
    with _ns_fds() as fds:
        assert _send(server, data, fds=fds) == b""
    _version_works(server, cni_bin)


def test_descriptors_that_are_not_namespaces(server: ServerProc, cni_bin: Path) -> None:
    """The ACK may come (the request is well formed), but the worker cannot join: the call
    fails (status 1) and the server lives on."""
    request = protocol.encode_request(
        "none",
        b"/",
        {
            b"CNI_COMMAND": b"ADD",
            b"CNI_CONTAINERID": b"x",
            b"CNI_IFNAME": b"eth0",
            b"CNI_NETNS": b"/nonexistent",
            b"CNI_PATH": b"/nonexistent",
        },
    )
    with (
        open("/dev/null", "rb") as null,
        socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn,
    ):
        conn.settimeout(15)
        conn.connect(str(server.socket))
        rights = b"".join(
            fd.to_bytes(4, sys.byteorder)
            for fd in (null.fileno(), null.fileno(), null.fileno(), null.fileno(), null.fileno())
        )
        conn.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
        replies = []
        with contextlib.suppress(OSError):
            while chunk := conn.recv(64):
                replies.append(chunk)
    if len(replies) == 2:  # ACK, then the status
        assert protocol.decode_status(replies[1]) != 0
    else:
        assert replies in ([], [replies[0]]), replies
    _version_works(server, cni_bin)


def test_extra_packets_after_the_request(server: ServerProc, cni_bin: Path) -> None:
    request = protocol.encode_request("none", b"/", {b"CNI_COMMAND": b"VERSION"})
    with _ns_fds() as fds, socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.settimeout(15)
        conn.connect(str(server.socket))
        rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        conn.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
        for _ in range(50):
            with contextlib.suppress(OSError):
                conn.send(os.urandom(1024))
        with contextlib.suppress(OSError):
            while conn.recv(64):
                pass
    _version_works(server, cni_bin)


def test_a_stream_socket_cannot_connect(server: ServerProc, cni_bin: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn, pytest.raises(
        OSError, match="Protocol wrong type"
    ):
        conn.connect(str(server.socket))
    _version_works(server, cni_bin)


def test_many_bad_peers_at_once(server: ServerProc, cni_bin: Path) -> None:
    """Interleaved: silent, garbage and hung-up peers from many sockets at the same time."""
    conns = []
    try:
        for i in range(120):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            conn.setblocking(False)
            conn.connect(str(server.socket))
            if i % 3 == 1:
                with contextlib.suppress(OSError):
                    conn.send(os.urandom(200))
            elif i % 3 == 2:
                conn.close()
                continue
            conns.append(conn)
        _version_works(server, cni_bin)
    finally:
        for conn in conns:
            conn.close()
    _version_works(server, cni_bin)
