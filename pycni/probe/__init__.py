"""`pycni probe`: reachability as seen from inside a container's network namespace.

The pure parts (destinations, target resolution, the probe plan, the report) import nothing
heavy; scapy is imported only by :mod:`pycni.probe.packets`, which :func:`pycni.probe.run.run`
imports when it is called (scapy takes most of a second to import).
"""

from __future__ import annotations

from pycni.probe.errors import ProbeError
from pycni.probe.plan import Task, plan_probes
from pycni.probe.report import Finding, Report, render_json, render_table
from pycni.probe.spec import Destination, parse_destination
from pycni.probe.target import Target, resolve_target

__all__ = [
    "Destination",
    "Finding",
    "ProbeError",
    "Report",
    "Target",
    "Task",
    "parse_destination",
    "plan_probes",
    "render_json",
    "render_table",
    "resolve_target",
]
