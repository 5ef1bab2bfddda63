"""The resolver's event loop: one thread, one selector, handlers and deadlines.

Every socket is registered with a handler called with the socket when it is readable (or
writable, for the few that wait to send). Things that can time out (a forwarded query, an idle
TCP client) register an ``expire`` callback with a deadline, checked every ``TICK``.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import Final, Protocol

from pycni.warmfork.listener import dispatch

__all__ = ["TICK", "Expiring", "Handler", "Loop"]

TICK: Final = 0.25
log = logging.getLogger("pycni.dns")
Handler = Callable[[socket.socket], None]


class Expiring(Protocol):
    deadline: float

    def expire(self) -> None: ...


class Loop:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._expiring: set[Expiring] = set()
        self._periodic: list[tuple[float, Callable[[], None], list[float]]] = []
        self.stopping = False

    def register(self, sock: socket.socket, handler: Handler,
                 events: int = selectors.EVENT_READ) -> None:
        self.selector.register(sock, events, handler)

    def modify(self, sock: socket.socket, handler: Handler, events: int) -> None:
        self.selector.modify(sock, events, handler)

    def unregister(self, sock: socket.socket) -> None:
        """Forget a socket (a closed or unknown one is fine) and close it."""
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        sock.close()

    def watch(self, item: Expiring) -> None:
        self._expiring.add(item)

    def unwatch(self, item: Expiring) -> None:
        self._expiring.discard(item)

    def every(self, seconds: float, callback: Callable[[], None]) -> None:
        self._periodic.append((seconds, callback, [time.monotonic() + seconds]))

    def run(self) -> None:
        next_scan = time.monotonic() + TICK
        while not self.stopping:
            try:
                dispatch(self.selector, TICK)
            except Exception:  # one handler's bug must not stop the resolver of every container
                log.exception("handler failed")
            now = time.monotonic()
            if now >= next_scan:  # deadlines are checked each TICK, not after every packet
                next_scan = now + TICK
                self._scan(now)

    def _scan(self, now: float) -> None:
        for item in [i for i in self._expiring if i.deadline <= now]:
            self._expiring.discard(item)
            item.expire()
        for seconds, callback, due in self._periodic:
            if due[0] <= now:
                due[0] = now + seconds
                callback()
