"""pycni.server.loop.Server's dispatch, without root: a handler that unregisters another
descriptor ready in the same batch (a worker's exit closing its report channel) must not have
that descriptor's stale event dispatched."""

from __future__ import annotations

import selectors
import socket
from pathlib import Path

from pycni.server.loop import Server


def test_a_handler_unregistered_earlier_in_the_batch_is_not_called(tmp_path: Path) -> None:
    server = Server(str(tmp_path / "unused.sock"))
    a_ours, a_theirs = socket.socketpair()
    b_ours, b_theirs = socket.socketpair()
    calls: list[str] = []

    def first(_: object) -> None:
        calls.append("first")
        for sock in (a_ours, b_ours):  # whichever runs first drops the other
            if sock.fileno() in server._sel.get_map():
                server._sel.unregister(sock)

    server._sel.register(a_ours, selectors.EVENT_READ, first)
    server._sel.register(b_ours, selectors.EVENT_READ, first)
    a_theirs.send(b"x")
    b_theirs.send(b"x")
    try:
        server._step()
        assert calls == ["first"]
    finally:
        for sock in (a_ours, a_theirs, b_ours, b_theirs):
            sock.close()

