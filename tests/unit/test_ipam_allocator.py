"""The pure allocator: round-robin order, wrap, gateway skip, requested-IP placement."""

from __future__ import annotations

from ipaddress import ip_address
from itertools import islice
from typing import Any

import pytest

from pycni.cni.errors import CNIError
from pycni.ipam.allocator import (
    Allocation,
    capacity,
    describe,
    iter_candidates,
    make_allocation,
    place_requested,
    range_for,
)
from pycni.ipam.config import IPRange, parse_ipam_config


def _sets(*range_sets: list[dict[str, Any]]) -> tuple[tuple[IPRange, ...], ...]:
    return parse_ipam_config({"ranges": list(range_sets)}).range_sets


def _order(range_set: tuple[IPRange, ...], last: str | None = None) -> list[str]:
    hint = None if last is None else ip_address(last)
    return [str(ip) for ip, _ in iter_candidates(range_set, hint)]


SMALL = _sets([{"subnet": "10.1.0.0/29"}])[0]  # .1 (gateway) .. .6
TWO = _sets([{"subnet": "10.1.0.0/29"}, {"subnet": "10.2.0.0/30"}])[0]  # .2-.6, then 10.2.0.2


def test_first_walk_starts_at_range_start_skipping_gateway() -> None:
    assert _order(SMALL) == ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]


def test_walk_resumes_after_last_reserved_and_wraps() -> None:
    assert _order(SMALL, "10.1.0.4") == ["10.1.0.5", "10.1.0.6", "10.1.0.2", "10.1.0.3", "10.1.0.4"]


def test_last_reserved_at_range_end_wraps_to_start() -> None:
    assert _order(SMALL, "10.1.0.6") == ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]


def test_hint_outside_the_set_is_ignored() -> None:
    assert _order(SMALL, "192.168.0.1") == _order(SMALL)
    assert _order(SMALL, "fd00::1") == _order(SMALL)


def test_walk_crosses_to_next_range_and_back() -> None:
    assert _order(TWO) == ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.2.0.2"]
    assert _order(TWO, "10.1.0.6") == [
        "10.2.0.2",
        "10.1.0.2",
        "10.1.0.3",
        "10.1.0.4",
        "10.1.0.5",
        "10.1.0.6",
    ]
    # The last range's end wraps cyclically to the first range's start.
    assert _order(TWO, "10.2.0.2") == [
        "10.1.0.2",
        "10.1.0.3",
        "10.1.0.4",
        "10.1.0.5",
        "10.1.0.6",
        "10.2.0.2",
    ]


def test_gateway_inside_the_range_is_skipped() -> None:
    (rs,) = _sets([{"subnet": "10.1.0.0/29", "gateway": "10.1.0.4", "rangeStart": "10.1.0.2"}])
    assert _order(rs) == ["10.1.0.2", "10.1.0.3", "10.1.0.5", "10.1.0.6"]
    assert _order(rs, "10.1.0.3") == ["10.1.0.5", "10.1.0.6", "10.1.0.2", "10.1.0.3"]


def test_every_address_exactly_once() -> None:
    (rs,) = _sets([{"subnet": "10.1.0.0/26"}, {"subnet": "10.1.1.0/28", "gateway": "10.1.1.14"}])
    for last in (None, "10.1.0.30", "10.1.1.13", "10.1.1.14"):
        got = _order(rs, last)
        assert len(got) == len(set(got)) == capacity(rs) == 61 + 13


def test_ipv6_is_lazy_and_skips_gateway() -> None:
    (rs,) = _sets([{"subnet": "2001:db8::/64"}])
    first = [str(ip) for ip, _ in islice(iter_candidates(rs), 3)]
    assert first == ["2001:db8::2", "2001:db8::3", "2001:db8::4"]
    (ip, _), = islice(iter_candidates(rs, ip_address("2001:db8::ffff:ffff:ffff:ffff")), 1)
    assert str(ip) == "2001:db8::2"
    assert capacity(rs) == 2**64 - 1 - 1  # no network address, gateway taken out


def test_range_for_and_describe() -> None:
    assert range_for(TWO, ip_address("10.2.0.2")) is TWO[1]
    assert range_for(TWO, ip_address("10.2.0.3")) is None  # in the /30, past rangeEnd
    assert range_for(TWO, ip_address("fd00::1")) is None
    assert describe(TWO) == "10.1.0.1-10.1.0.6,10.2.0.1-10.2.0.2"


def test_make_allocation_uses_subnet_prefix() -> None:
    alloc = make_allocation(ip_address("10.2.0.2"), TWO[1], 3)
    assert alloc == Allocation(address="10.2.0.2/30", gateway="10.2.0.1", range_set_index=3)
    assert alloc.ip == ip_address("10.2.0.2")
    assert alloc.version == 4


# -- requested addresses -----------------------------------------------------------------

DUAL = _sets([{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10"}], [{"subnet": "fd00::/64"}])


def test_place_requested_by_set() -> None:
    placed = place_requested(DUAL, [ip_address("fd00::9"), ip_address("10.1.0.20")])
    assert {i: str(ip) for i, (ip, _) in placed.items()} == {0: "10.1.0.20", 1: "fd00::9"}
    assert place_requested(DUAL, []) == {}


@pytest.mark.parametrize(
    ("requested", "reason"),
    [
        (["10.9.0.1"], "is not inside any range set"),
        (["10.1.0.5"], "is not inside any range set"),  # in the subnet, before rangeStart
        (["fd00::1"], "is the gateway of fd00::/64"),
        (["10.1.0.20", "10.1.0.21"], "and 10.1.0.20 both fall into range set 0"),
    ],
)
def test_place_requested_errors(requested: list[str], reason: str) -> None:
    with pytest.raises(CNIError) as info:
        place_requested(DUAL, [ip_address(ip) for ip in requested])
    assert info.value.code == 7
    assert reason in info.value.msg
