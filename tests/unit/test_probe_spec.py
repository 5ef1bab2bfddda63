"""`--to ADDR[:PORT[/tcp|udp]]` parsing."""

from __future__ import annotations

import pytest

from pycni.probe import Destination, ProbeError, parse_destination


@pytest.mark.parametrize(
    ("text", "address", "port", "proto", "label"),
    [
        ("10.0.0.1", "10.0.0.1", None, "tcp", "10.0.0.1"),
        ("10.0.0.1:80", "10.0.0.1", 80, "tcp", "10.0.0.1:80/tcp"),
        ("10.0.0.1:53/udp", "10.0.0.1", 53, "udp", "10.0.0.1:53/udp"),
        ("10.0.0.1:443/TCP", "10.0.0.1", 443, "tcp", "10.0.0.1:443/tcp"),
        ("fd00::1", "fd00::1", None, "tcp", "fd00::1"),
        ("[fd00::0001]:8080/udp", "fd00::1", 8080, "udp", "[fd00::1]:8080/udp"),
        ("[fd00::1]", "fd00::1", None, "tcp", "fd00::1"),
    ],
)
def test_destinations_parse(
    text: str, address: str, port: int | None, proto: str, label: str
) -> None:
    dest = parse_destination(text)
    assert (dest.address, dest.port, dest.proto, dest.origin) == (address, port, proto, "--to")
    assert dest.label() == label


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not an IP address"),
        ("web:80", "not an IP address"),
        ("10.0.0.1:0", "port must be"),
        ("10.0.0.1:65536", "port must be"),
        ("10.0.0.1:http", "port must be"),
        ("10.0.0.1:80/sctp", "tcp or udp"),
        ("10.0.0.1/udp", "needs a port"),
        ("[fd00::1]80", "expected [IPv6]:PORT"),
        ("10.0.0.256", "not an IP address"),
    ],
)
def test_bad_destinations_are_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ProbeError, match=why.replace("[", r"\[").replace("]", r"\]")):
        parse_destination(text)


def test_origin_is_kept() -> None:
    dest = parse_destination("10.0.0.1:80", origin="published 80->80/tcp")
    assert dest == Destination(address="10.0.0.1", port=80, origin="published 80->80/tcp")
    assert dest.version == 4
