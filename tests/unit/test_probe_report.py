"""Rendering a report: a table read at a glance, JSON for scripts."""

from __future__ import annotations

import json

import pytest

from pycni.probe import Finding, Report, render_json, render_table
from pycni.probe.report import InterfaceView

REPORT = Report(
    target="web",
    kind="container",
    netns_path="/run/netns/web",
    netns_id="net:[4026532999]",
    network="pycni",
    gateway="10.99.0.1",
    interfaces=(
        InterfaceView(name="lo", index=1, mac="00:00:00:00:00:00", mtu=65536, up=True,
                      addresses=("127.0.0.1/8",)),
        InterfaceView(name="eth0", index=2, mac="0a:58:0a:63:00:05", mtu=1500, up=True,
                      addresses=("10.99.0.5/16",)),
    ),
    findings=(
        Finding(probe="arp", target="10.99.0.1", status="answered", origin="gateway",
                detail="10.99.0.1 is-at 02:aa:bb:cc:dd:ee (0.1 ms)", mac="02:aa:bb:cc:dd:ee"),
        Finding(probe="pmtu", target="10.99.0.1", status="passes", size=1500, origin="gateway"),
        Finding(probe="pmtu", target="10.99.0.1", status="refused", size=1501, origin="gateway"),
        Finding(probe="tcp", target="10.99.0.1:8080/tcp", status="open", rtt_ms=0.3,
                detail="SYN-ACK from 10.99.0.1 in 0.3 ms", origin="published 8080->80/tcp"),
    ),
)


def test_table_has_a_header_and_aligned_columns() -> None:
    lines = render_table(REPORT).splitlines()
    assert lines[0] == "web (container, network pycni)  netns /run/netns/web  net:[4026532999]"
    assert lines[1].split() == ["lo", "up", "00:00:00:00:00:00", "mtu", "65536", "127.0.0.1/8"]
    assert lines[3] == "  gateway 10.99.0.1"
    header = lines[5]
    assert header.split() == ["PROBE", "TARGET", "STATUS", "DETAIL", "WHY"]
    rows = lines[6:]
    assert len(rows) == 4
    status_col = header.index("STATUS")
    assert [r[status_col:].split()[0] for r in rows] == ["answered", "passes", "refused", "open"]
    assert rows[3].rstrip().endswith("published 8080->80/tcp")


def test_an_empty_plan_says_so() -> None:
    empty = Report(target="n", kind="netns", netns_path="/run/netns/n")
    assert render_table(empty).splitlines()[-1] == "(nothing to probe)"
    assert "gateway -" in render_table(empty)


def test_json_carries_every_field() -> None:
    doc = json.loads(render_json(REPORT))
    assert doc["gateway"] == "10.99.0.1"
    assert doc["interfaces"][1]["addresses"] == ["10.99.0.5/16"]
    assert doc["findings"][0]["mac"] == "02:aa:bb:cc:dd:ee"
    assert doc["findings"][3] == {
        "probe": "tcp", "target": "10.99.0.1:8080/tcp", "status": "open",
        "detail": "SYN-ACK from 10.99.0.1 in 0.3 ms", "origin": "published 8080->80/tcp",
        "rtt_ms": 0.3, "mac": "", "responder": "", "size": None, "mtu": None,
    }


def test_finding_lookup_tells_the_mtu_pair_apart() -> None:
    assert REPORT.finding("pmtu", "10.99.0.1").size == 1500
    assert REPORT.finding("pmtu", "10.99.0.1", over=True).size == 1501
    with pytest.raises(KeyError):
        REPORT.finding("udp", "10.99.0.1:53/udp")
