"""The resolver inside one container netns: 127.0.0.11:53 over UDP and TCP.

The sockets are opened by stepping this (single-threaded) process into the container's netns
with setns, and stepping back: a socket stays in the namespace it was made in, so the resolver
answers there while living, and forwarding, in the host's. 127.0.0.0/8 is local on the
container's lo, so no address is added and no route is needed; ``IP_FREEBIND`` lets the bind
succeed before lo is up (the `loopback` plugin or the runtime brings it up; until then nothing
in the container can send to it anyway). Nothing is bound in the host's namespace, so a host
dnsmasq or systemd-resolved keeps port 53.

The hot path (a name asked again) is one dictionary lookup of the query's bytes after its id
in the view's cache and one sendto; everything else goes through ``answer.respond``.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.dns.answer import MAX_QUERY, Forward, respond
from pycni.dns.loop import Loop
from pycni.dns.names import RESOLVER_ADDRESS, RESOLVER_PORT
from pycni.dns.upstream import Forwarder
from pycni.dns.zone import View
from pycni.net.netns import enter

__all__ = ["Sandbox", "open_listeners"]

log = logging.getLogger("pycni.dns")

_IP_FREEBIND: Final = 15
_BATCH: Final = 64  # datagrams read per wake-up before the loop looks at other sockets
_TCP_IDLE: Final = 10.0
_TCP_CLIENTS: Final = 32
_BACKLOG: Final = 32


def _bound(kind: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((RESOLVER_ADDRESS, RESOLVER_PORT))
        if kind == socket.SOCK_STREAM:
            sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def open_listeners(netns_fd: int, what: str) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on 127.0.0.11:53 inside the namespace behind ``netns_fd``."""
    with enter(netns_fd, what=what):
        try:
            udp = _bound(socket.SOCK_DGRAM)
        except OSError as err:
            raise _bind_error(what, err) from err
        try:
            tcp = _bound(socket.SOCK_STREAM)
        except OSError as err:
            udp.close()
            raise _bind_error(what, err) from err
    return udp, tcp


def _bind_error(what: str, err: OSError) -> CNIError:
    if err.errno == errno.EADDRINUSE:
        return CNIError(ErrorCode.INVALID_NETWORK_CONFIG,
                        f"{RESOLVER_ADDRESS}:{RESOLVER_PORT} is already in use in {what}",
                        "something in the container listens on the resolver's address")
    return CNIError(ErrorCode.INTERNAL, f"cannot listen on {RESOLVER_ADDRESS}:{RESOLVER_PORT} "
                    f"in {what}", str(err))


@dataclass(eq=False, kw_only=True)
class Sandbox:
    """One container netns served: its sockets, the attachments in it, what it resolves."""

    netns_id: str
    netns_path: str
    loop: Loop
    forwarder: Forwarder
    view: View
    udp: socket.socket | None = None
    tcp: socket.socket | None = None
    labels: set[str] = field(default_factory=set)
    clients: set[_TcpClient] = field(default_factory=set)

    def serve(self, udp: socket.socket, tcp: socket.socket) -> None:
        self.udp, self.tcp = udp, tcp
        self.loop.register(udp, self._on_datagrams)
        self.loop.register(tcp, self._on_accept)

    @property
    def serving(self) -> bool:
        return self.udp is not None

    def close(self) -> None:
        """Close every socket in the netns (a socket keeps its namespace alive)."""
        for client in list(self.clients):
            client.close()
        for sock in (self.udp, self.tcp):
            if sock is not None:
                self.loop.unregister(sock)
        self.udp = self.tcp = None

    # ------------------------------------------------------------------------------ UDP

    def _on_datagrams(self, sock: socket.socket) -> None:
        for _ in range(_BATCH):
            try:
                data, peer = sock.recvfrom(MAX_QUERY + 1)  # one more: an oversized query shows
            except BlockingIOError:
                return
            except OSError as err:  # an ICMP error of an earlier reply: nothing to answer
                log.debug("udp receive: %s", err)
                continue
            hit = self.view.cache.get(data[2:])
            if hit is not None:
                _send_to(sock, data[:2] + hit, peer)
            else:
                self._answer_datagram(sock, data, peer)

    def _answer_datagram(self, sock: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        outcome = respond(data, self.view, tcp=False, cache=self.view.cache)
        if isinstance(outcome, Forward):
            self.forwarder.forward(data, outcome.query,
                                   lambda wire: _send_to(sock, wire, peer), tcp=False)
        elif outcome is not None:
            _send_to(sock, outcome, peer)

    # ------------------------------------------------------------------------------ TCP

    def _on_accept(self, sock: socket.socket) -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        if len(self.clients) >= _TCP_CLIENTS:
            conn.close()  # the client retries; a flood of idle connections cannot pile up
            return
        conn.setblocking(False)
        self.clients.add(_TcpClient(self, conn))


def _send_to(sock: socket.socket, wire: bytes, peer: tuple[str, int]) -> None:
    try:
        sock.sendto(wire, peer)
    except OSError as err:  # the socket closed meanwhile, or the client's buffer is full
        log.debug("udp send: %s", err)


class _TcpClient:
    """One TCP client: length-prefixed queries in, answers out, closed when idle."""

    def __init__(self, sandbox: Sandbox, conn: socket.socket) -> None:
        self.sandbox, self.loop, self.conn = sandbox, sandbox.loop, conn
        self.inbox = b""
        self.outbox = b""
        self.closed = False
        self.deadline = time.monotonic() + _TCP_IDLE
        self.loop.register(conn, self._readable)
        self.loop.watch(self)

    def expire(self) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.unwatch(self)
            self.loop.unregister(self.conn)
            self.sandbox.clients.discard(self)

    def _readable(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(65537)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        self.inbox += chunk
        self.deadline = time.monotonic() + _TCP_IDLE
        while len(self.inbox) >= 2 and not self.closed:
            size = int.from_bytes(self.inbox[:2], "big")
            if not 12 <= size <= MAX_QUERY:
                self.close()  # undecodable or oversized: drop the connection
                return
            if len(self.inbox) < 2 + size:
                return
            data, self.inbox = self.inbox[2:2 + size], self.inbox[2 + size:]
            self._query(data)

    def _query(self, data: bytes) -> None:
        view = self.sandbox.view
        outcome = respond(data, view, tcp=True, cache=view.tcp_cache)
        if isinstance(outcome, Forward):
            self.sandbox.forwarder.forward(data, outcome.query, self.send, tcp=True)
        elif outcome is not None:
            self.send(outcome)

    def send(self, wire: bytes) -> None:
        if self.closed:
            return
        self.outbox += len(wire).to_bytes(2, "big") + wire
        self._flush(self.conn)

    def _flush(self, conn: socket.socket) -> None:
        try:
            sent = conn.send(self.outbox)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        self.outbox = self.outbox[sent:]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbox else 0)
        self.loop.modify(conn, self._ready, events)

    def _ready(self, conn: socket.socket) -> None:
        if self.outbox:
            self._flush(conn)
        if not self.closed:
            self._readable(conn)
