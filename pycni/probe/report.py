"""What the probe found: findings, the namespace's interfaces, a table and a JSON document."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from pycni.tables import table_lines

__all__ = ["Finding", "InterfaceView", "Report", "render_json", "render_table"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One probe's outcome. ``status`` is one word a script can branch on:
    arp: answered | no-reply;  icmp: reachable | unreachable | no-reply;
    tcp: open | closed | filtered;  udp: open | open|filtered | closed | filtered;
    pmtu: passes | frag-needed | refused | no-reply;  any: no-route | skipped | error."""

    probe: str
    target: str
    status: str
    detail: str = ""
    origin: str = ""
    rtt_ms: float | None = None
    mac: str = ""  # arp: the MAC that answered
    responder: str = ""  # the address an answer (or an ICMP error) came from
    size: int | None = None  # pmtu: IP packet size sent
    mtu: int | None = None  # pmtu: next-hop MTU reported by "fragmentation needed"


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceView:
    name: str
    index: int
    mac: str
    mtu: int
    up: bool
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    target: str
    kind: str
    netns_path: str
    netns_id: str = ""  # "net:[inode]", the same for every path to one namespace
    network: str = ""
    gateway: str | None = None
    interfaces: tuple[InterfaceView, ...] = ()
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def finding(self, probe: str, target: str, *, over: bool = False) -> Finding:
        """The finding for ``probe`` at ``target`` (for pmtu: the at-MTU one, or the one over)."""
        matches = [f for f in self.findings if f.probe == probe and f.target == target]
        if probe == "pmtu" and len(matches) == 2:
            return matches[1] if over else matches[0]
        if not matches:
            raise KeyError(f"{probe} {target}")
        return matches[0]


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)


def _header(report: Report) -> list[str]:
    network = f", network {report.network}" if report.network else ""
    where = f"{report.target} ({report.kind}{network})"
    lines = [f"{where}  netns {report.netns_path}  {report.netns_id}".rstrip()]
    rows = [
        [
            i.name,
            "up" if i.up else "down",
            i.mac or "-",
            f"mtu {i.mtu}",
            " ".join(i.addresses) or "-",
        ]
        for i in report.interfaces
    ]
    if rows:
        lines += table_lines(rows, indent="  ")
    lines.append(f"  gateway {report.gateway or '-'}")
    return lines


def render_table(report: Report) -> str:
    lines = _header(report)
    rows = [["PROBE", "TARGET", "STATUS", "DETAIL", "WHY"]]
    rows += [[f.probe, f.target, f.status, f.detail, f.origin] for f in report.findings]
    lines.append("")
    lines += table_lines(rows) if report.findings else ["(nothing to probe)"]
    return "\n".join(lines)
