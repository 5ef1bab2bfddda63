"""Run a probe plan from inside the target's network namespace and build the report."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pycni.net import netns
from pycni.net.ipr import open_ipr
from pycni.probe.netview import Hop, default_gateway, netns_id, read_interfaces, route_to
from pycni.probe.plan import Task, plan_probes
from pycni.probe.report import Finding, Report
from pycni.probe.spec import Destination
from pycni.probe.target import Target, published_destinations, result_gateway

if TYPE_CHECKING:
    from pycni.probe.packets import Prober

__all__ = ["DEFAULT_TIMEOUT", "run"]

DEFAULT_TIMEOUT = 1.0


def _execute(prober: Prober, task: Task, hop: Hop | None) -> Finding:
    label, origin = task.label(), task.origin
    if ipaddress.ip_address(task.address).version == 6:
        return Finding(probe=task.kind, target=label, status="skipped", origin=origin,
                       detail="IPv6 probes are not implemented yet")
    if hop is None:
        return Finding(probe=task.kind, target=label, status="no-route", origin=origin,
                       detail="the namespace has no route to it")
    try:
        found = _send(prober, task, hop)
    except OSError as err:  # e.g. ENETDOWN: the interface the route names is down
        found = Finding(probe=task.kind, target=label, status="error",
                        detail=f"{hop.iface}: {err.strerror or err}")
    return dataclasses.replace(found, probe=task.kind, target=label, origin=origin)


def _send(prober: Prober, task: Task, hop: Hop) -> Finding:
    if task.kind == "arp":
        return prober.arp(hop)
    if task.kind == "icmp":
        return prober.icmp(hop)
    if task.kind == "pmtu":
        return prober.pmtu(hop, over=task.over)
    if task.kind == "tcp" and task.port is not None:
        return prober.tcp(hop, task.port)
    if task.kind == "udp" and task.port is not None:
        return prober.udp(hop, task.port)
    raise ValueError(f"unknown probe {task.kind}")


def run(
    target: Target,
    *,
    destinations: Sequence[Destination] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> Report:
    """Probe from inside ``target``'s netns: the gateway (from the CNI result, else the
    namespace's default route), its published ports, and each of ``destinations``."""
    from pycni.probe import packets  # scapy: only now

    with netns.enter(target.netns_path):
        with open_ipr() as ipr:
            interfaces = read_interfaces(ipr)
            gateway = result_gateway(target.result) or default_gateway(ipr)
            tasks = plan_probes(
                gateway=gateway,
                published=published_destinations(target.ports, gateway),
                destinations=destinations,
            )
            hops = {
                t.address: route_to(ipr, t.address)
                for t in tasks
                if ipaddress.ip_address(t.address).version == 4
            }
        with packets.open_prober(timeout=timeout) as prober:
            findings = tuple(_execute(prober, t, hops.get(t.address)) for t in tasks)
    return Report(
        target=target.name,
        kind=target.kind,
        netns_path=target.netns_path,
        netns_id=netns_id(target.netns_path),
        network=target.network,
        gateway=gateway,
        interfaces=interfaces,
        findings=findings,
    )
