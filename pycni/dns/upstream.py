"""Everything not ours goes to the host's resolvers, from the host's network namespace.

The upstream servers are the ``nameserver`` lines (at most three, as glibc reads them) of the
resolv.conf the resolver was started with (the host's /etc/resolv.conf by default), re-read
when that file changes. The resolver's own netns is the host's (it only steps into container
namespaces to open its listening sockets), so every socket here is a host socket: a loopback
upstream such as systemd-resolved's 127.0.0.53 or a dnsmasq on 127.0.0.1 works, which a
container could never reach itself.

A query is relayed byte for byte on a fresh socket per query (a new source port each time, its
id kept), to each server in turn until one answers with that id (UDP for UDP clients, TCP for
TCP clients, so a truncated answer's retry over TCP goes upstream over TCP too). When none
answers within the timeout (resolv.conf's ``options timeout:N``, default 2 s), or there is no
upstream at all, the client gets SERVFAIL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import dns.message

from pycni.dns.answer import servfail
from pycni.dns.loop import Loop

__all__ = ["MAX_PENDING", "Forwarder", "ResolvConf", "Upstreams", "parse_resolv_conf"]

log = logging.getLogger("pycni.dns")

MAX_PENDING: Final = 1024
_MAXNS: Final = 3
_DEFAULT_TIMEOUT: Final = 2.0
_RECHECK: Final = 1.0
Deliver = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class Upstreams:
    servers: tuple[str, ...] = ()
    timeout: float = _DEFAULT_TIMEOUT


def _server(text: str) -> str | None:
    """A numeric nameserver address (IPv6 may carry a %scope), else None."""
    try:
        socket.getaddrinfo(text, 53, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return None
    return text


def _timeout(option: str) -> float | None:
    value = option.removeprefix("timeout:")
    return float(min(30, max(1, int(value)))) if value.isdigit() else None


def parse_resolv_conf(text: str) -> Upstreams:
    servers: list[str] = []
    timeout = _DEFAULT_TIMEOUT
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            server = _server(fields[1])
            if server is not None and server not in servers:
                servers.append(server)
        elif fields and fields[0] == "options":
            for option in fields[1:]:
                if option.startswith("timeout:"):
                    timeout = _timeout(option) or timeout
    return Upstreams(tuple(servers[:_MAXNS]), timeout)


class ResolvConf:
    """The upstreams of one resolv.conf, re-read when the file changes (checked each second)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._upstreams = Upstreams()

    def current(self) -> Upstreams:
        now = time.monotonic()
        if now - self._checked >= _RECHECK:
            self._checked = now
            self._reload()
        return self._upstreams

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            if signature == self._signature:
                return
            with open(self.path, encoding="utf-8", errors="replace") as f:
                self._upstreams = parse_resolv_conf(f.read())
            self._signature = signature
        except OSError as err:
            self._upstreams, self._signature = Upstreams(), None
            log.warning("no upstream servers: cannot read %s: %s", self.path, err)
            return
        log.info("upstream servers from %s: %s", self.path,
                 ", ".join(self._upstreams.servers) or "none")


class Forwarder:
    """Relays queries upstream; never more than ``MAX_PENDING`` at once (SERVFAIL beyond)."""

    def __init__(self, loop: Loop, resolv_conf: ResolvConf) -> None:
        self.loop = loop
        self.resolv_conf = resolv_conf
        self.pending = 0

    def forward(self, data: bytes, query: dns.message.Message, deliver: Deliver, *,
                tcp: bool) -> None:
        upstreams = self.resolv_conf.current()
        if self.pending >= MAX_PENDING or not upstreams.servers:
            deliver(servfail(query))
            return
        kind = _TcpRelay if tcp else _UdpRelay
        kind(self, upstreams, data=data, query=query, deliver=deliver).next_server()


class _Relay:
    """One query, tried on each upstream in turn."""

    kind: int = socket.SOCK_DGRAM

    def __init__(self, owner: Forwarder, upstreams: Upstreams, *, data: bytes,
                 query: dns.message.Message, deliver: Deliver) -> None:
        self.owner, self.loop, self.upstreams = owner, owner.loop, upstreams
        self.data, self.query, self.deliver = data, query, deliver
        self.index = -1
        self.sock: socket.socket | None = None
        self.deadline = 0.0
        owner.pending += 1

    def next_server(self) -> None:
        self._close()
        self.index += 1
        while self.index < len(self.upstreams.servers):
            server = self.upstreams.servers[self.index]
            try:
                self.sock = self._open(server)
            except OSError as err:
                log.debug("upstream %s: %s", server, err)
                self.index += 1
                continue
            self.deadline = time.monotonic() + self.upstreams.timeout
            self.loop.watch(self)
            return
        self._finish(servfail(self.query))

    def expire(self) -> None:
        self.next_server()

    def _socket(self, server: str) -> tuple[socket.socket, Any]:
        family, _, _, _, address = socket.getaddrinfo(
            server, 53, type=self.kind, flags=socket.AI_NUMERICHOST)[0]
        sock = socket.socket(family, self.kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        return sock, address

    def _open(self, server: str) -> socket.socket:
        raise NotImplementedError

    def _reply_ok(self, reply: bytes) -> bool:
        """An answer to our question: a response (QR set) carrying the query's id."""
        return len(reply) >= 12 and reply[:2] == self.data[:2] and bool(reply[2] & 0x80)

    def _finish(self, wire: bytes) -> None:
        self._close()
        self.loop.unwatch(self)
        self.owner.pending -= 1
        self.deliver(wire)

    def _close(self) -> None:
        if self.sock is not None:
            self.loop.unregister(self.sock)
            self.sock = None


class _UdpRelay(_Relay):
    kind = socket.SOCK_DGRAM

    def _open(self, server: str) -> socket.socket:
        sock, address = self._socket(server)
        try:
            sock.connect(address)  # connected: the kernel drops datagrams from anyone else
            sock.send(self.data)
        except OSError:
            sock.close()
            raise
        self.loop.register(sock, self._readable)
        return sock

    def _readable(self, sock: socket.socket) -> None:
        try:
            reply = sock.recv(65535)
        except OSError:  # ICMP port unreachable: nobody listens there
            self.next_server()
            return
        if self._reply_ok(reply):
            self._finish(reply)


class _TcpRelay(_Relay):
    kind = socket.SOCK_STREAM

    def _open(self, server: str) -> socket.socket:
        sock, address = self._socket(server)
        self.buffer = b""
        with contextlib.suppress(BlockingIOError):
            sock.connect(address)
        self.loop.register(sock, self._connected, selectors.EVENT_WRITE)
        return sock

    def _connected(self, sock: socket.socket) -> None:
        try:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
            sock.sendall(len(self.data).to_bytes(2, "big") + self.data)
        except OSError as err:
            log.debug("upstream over TCP: %s", err)
            self.next_server()
            return
        self.loop.modify(sock, self._readable, selectors.EVENT_READ)

    def _readable(self, sock: socket.socket) -> None:
        try:
            chunk = sock.recv(65537)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.next_server()
            return
        self.buffer += chunk
        if len(self.buffer) >= 2:
            size = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) >= 2 + size:
                reply = self.buffer[2:2 + size]
                if self._reply_ok(reply):
                    self._finish(reply)
                else:
                    self.next_server()
