"""The resolver's control socket: what it answers, and what it refuses without acting."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.dns.control import encode
from pycni.dns.loop import Loop
from pycni.dns.records import RecordStore, Registration
from pycni.dns.registry import Registry
from pycni.dns.service import ControlServer
from pycni.dns.upstream import Forwarder, ResolvConf
from pycni.warmfork.listener import dispatch


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[ControlServer, Registry]]:
    run_dir = tmp_path / "dns"
    run_dir.mkdir(mode=0o700)
    loop = Loop()
    registry = Registry(RecordStore(str(run_dir)), loop, Forwarder(loop, ResolvConf("/dev/null")))
    server = ControlServer(str(run_dir / "control.sock"), loop, registry)
    yield server, registry
    server.close()


def _ask(server: ControlServer, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.connect(server.path)
        conn.send(data)
        dispatch(server.loop.selector, 1.0)  # accept (and, usually, the request with it)
        conn.settimeout(0.01)
        for _ in range(100):
            try:
                reply: dict[str, Any] = json.loads(conn.recv(65536))
            except TimeoutError:
                dispatch(server.loop.selector, 0.1)
                continue
            return reply
    raise AssertionError("no reply")


def test_status_of_the_resolver_and_of_an_unknown_attachment(
    control: tuple[ControlServer, Registry],
) -> None:
    server, _ = control
    assert _ask(server, encode({"op": "status"}))["attachments"] == 0
    label = Registration(network="n", container_id="c", ifname="eth0").label
    assert _ask(server, encode({"op": "status", "label": label})) == {
        "ok": True, "serving": False, "netnsID": ""}


@pytest.mark.parametrize("data", [
    b"not json", b"[1, 2]", encode({"op": "reboot"}),
    encode({"op": "detach", "label": "../../etc/passwd"}),
    encode({"op": "attach", "label": "0" * 16 + "-" + "0" * 16}),  # attach without a netns fd
    encode({"op": "sync", "network": 7}),
])
def test_bad_requests_are_refused_with_a_code_and_change_nothing(
    control: tuple[ControlServer, Registry], data: bytes,
) -> None:
    server, registry = control
    reply = _ask(server, data)
    assert reply["ok"] is False
    assert reply["code"] == 6  # DECODING_FAILURE
    assert registry.regs == {}
    assert _ask(server, encode({"op": "status"}))["ok"] is True  # and it keeps serving


def test_detach_of_an_unknown_attachment_is_already_done(
    control: tuple[ControlServer, Registry],
) -> None:
    server, _ = control
    label = Registration(network="n", container_id="c", ifname="eth0").label
    assert _ask(server, encode({"op": "detach", "label": label})) == {"ok": True}
