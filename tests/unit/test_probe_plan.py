"""The probe plan: what is sent, in which order, and to nothing but the given addresses."""

from __future__ import annotations

from typing import Any

from pycni.probe import Destination, parse_destination, plan_probes


def _rows(**kw: Any) -> list[tuple[str, str, bool, str]]:
    return [(t.kind, t.label(), t.over, t.origin) for t in plan_probes(**kw)]


def test_the_gateway_gets_arp_icmp_and_the_mtu_pair_then_ports_then_each_to() -> None:
    published = [Destination(address="10.99.0.1", port=8080, origin="published 8080->80/tcp")]
    to = [parse_destination("10.99.0.3:53/udp"), parse_destination("10.99.0.3:80")]
    assert _rows(gateway="10.99.0.1", published=published, destinations=to) == [
        ("arp", "10.99.0.1", False, "gateway"),
        ("icmp", "10.99.0.1", False, "gateway"),
        ("pmtu", "10.99.0.1", False, "gateway"),
        ("pmtu", "10.99.0.1", True, "gateway"),
        ("tcp", "10.99.0.1:8080/tcp", False, "published 8080->80/tcp"),
        ("icmp", "10.99.0.3", False, "--to"),
        ("pmtu", "10.99.0.3", False, "--to"),
        ("pmtu", "10.99.0.3", True, "--to"),
        ("udp", "10.99.0.3:53/udp", False, "--to"),
        ("tcp", "10.99.0.3:80/tcp", False, "--to"),
    ]


def test_no_gateway_no_arp_and_only_given_addresses() -> None:
    rows = _rows(gateway=None, destinations=[parse_destination("10.0.0.9")])
    assert rows == [
        ("icmp", "10.0.0.9", False, "--to"),
        ("pmtu", "10.0.0.9", False, "--to"),
        ("pmtu", "10.0.0.9", True, "--to"),
    ]
    assert plan_probes(gateway=None) == []
