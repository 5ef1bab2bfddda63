"""Which probes to send, in which order: pure, so it is tested without a namespace.

The gateway gets ARP, ICMP echo and the path-MTU pair; every other address gets ICMP echo
and the path-MTU pair once; every destination with a port gets a TCP SYN or a UDP probe.
Nothing is planned for an address that was not given or found in the container's own state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pycni.probe.spec import Destination

__all__ = ["KINDS", "Task", "plan_probes"]

KINDS = ("arp", "icmp", "pmtu", "tcp", "udp")


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    kind: str
    address: str
    port: int | None = None
    over: bool = False  # pmtu: one byte over the interface MTU instead of exactly at it
    origin: str = ""

    def label(self) -> str:
        if self.port is None:
            return self.address
        return Destination(address=self.address, port=self.port, proto=self.kind).label()


def _address_tasks(address: str, origin: str, *, arp: bool) -> list[Task]:
    tasks = [Task(kind="arp", address=address, origin=origin)] if arp else []
    tasks.append(Task(kind="icmp", address=address, origin=origin))
    tasks.append(Task(kind="pmtu", address=address, origin=origin))
    tasks.append(Task(kind="pmtu", address=address, over=True, origin=origin))
    return tasks


def plan_probes(
    *,
    gateway: str | None,
    published: Sequence[Destination] = (),
    destinations: Sequence[Destination] = (),
) -> list[Task]:
    """Gateway first, then published ports, then each ``--to`` in the order given."""
    tasks: list[Task] = []
    seen: set[str] = set()
    if gateway is not None:
        tasks += _address_tasks(gateway, "gateway", arp=True)
        seen.add(gateway)
    for dest in (*published, *destinations):
        if dest.address not in seen:
            seen.add(dest.address)
            tasks += _address_tasks(dest.address, dest.origin, arp=False)
        if dest.port is not None:
            tasks.append(
                Task(kind=dest.proto, address=dest.address, port=dest.port, origin=dest.origin)
            )
    return tasks
