"""pycni.net.encoded: which requests are kept, and a kept one's copies."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from pycni.net import encoded

REQUEST = (16, 5)  # RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK


@pytest.fixture(autouse=True)
def _nothing_kept() -> Iterator[None]:
    encoded._KEPT.clear()
    yield
    encoded._KEPT.clear()


def test_plain_arguments_are_kept_by_value_and_type() -> None:
    a = encoded.key("link", REQUEST, {"index": 2, "state": "up"}, None)
    assert a is not None
    assert a == encoded.key("link", REQUEST, {"state": "up", "index": 2}, {})  # order: same
    assert a != encoded.key("link", REQUEST, {"index": 3, "state": "up"}, None)
    assert a != encoded.key("link", (16, 0x605), {"index": 2, "state": "up"}, None)
    assert a != encoded.key("addr", REQUEST, {"index": 2, "state": "up"}, None)
    # True == 1 in Python, not to pyroute2's filters:
    assert encoded.key("link", REQUEST, {"x": True}, None) != encoded.key(
        "link", REQUEST, {"x": 1}, None)
    assert encoded.key("route", REQUEST, {"dst": "0.0.0.0/0"}, {"strict_check": False}) != (
        encoded.key("route", REQUEST, {"dst": "0.0.0.0/0"}, None))


@pytest.mark.parametrize("kwarg", [
    {"ifname": "v0", "peer": {"ifname": "eth0"}},  # nested: not a plain value
    {"index": 2, "net_ns_fd": 7},  # a descriptor that may be another namespace later
    {"index": 2, "net_ns_fd": "blue"},  # opened by pyroute2 while it encodes
    {"index": 2, "net_ns_pid": 1234},
    {"index": 2, "address": b"\x02\x00\x00\x00\x00\x01"},
])
def test_requests_not_kept(kwarg: dict[str, object]) -> None:
    assert encoded.key("link", REQUEST, kwarg, None) is None
    encoded.keep(None, b"x" * 32)
    assert encoded.lookup(None, 1, 1) is None
    assert not encoded._KEPT


def test_a_copy_carries_its_own_sequence_and_port() -> None:
    header = struct.Struct("=IHHII")
    data = header.pack(32, 16, 5, 7, 99) + bytes(16)
    k = encoded.key("link", REQUEST, {"index": 2}, None)
    assert encoded.lookup(k, 8, 100) is None
    encoded.keep(k, data)
    copy = encoded.lookup(k, 8, 100)
    assert copy is not None
    assert header.unpack_from(copy) == (32, 16, 5, 8, 100)
    assert copy[header.size:] == data[header.size:]
    assert encoded._KEPT[k] == data  # the kept bytes are never written to


def test_the_kept_requests_are_bounded() -> None:
    for i in range(encoded.MAX_KEPT + 5):
        encoded.keep(encoded.key("link", REQUEST, {"index": i}, None), b"x" * 20)
    assert 0 < len(encoded._KEPT) <= encoded.MAX_KEPT
