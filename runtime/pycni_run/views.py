"""What `ps` and `inspect` show, built from the state file and the live kernel."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from typing import Any

from pycni.tables import render_table
from pycni_run import cgroups, namespaces, network, pidfds
from pycni_run.errors import RunError
from pycni_run.idmaps import Mappings
from pycni_run.state import ContainerState

__all__ = ["format_template", "inspect_doc", "ps_rows", "render_table"]

_TEMPLATE_RE = re.compile(r"\{\{\s*((?:\.[A-Za-z0-9_]+)+)\s*\}\}")


def _ports(st: ContainerState) -> list[str]:
    out = []
    for p in st.ports:
        host = f"{p['hostIP']}:" if p.get("hostIP") else ""
        out.append(f"{host}{p['hostPort']}->{p['containerPort']}/{p.get('protocol', 'tcp')}")
    return out


def _status_text(st: ContainerState) -> str:
    status = st.live_status()
    if status == "exited":
        return f"exited ({st.exit_code if st.exit_code is not None else '?'})"
    return status


def ps_rows(states: list[ContainerState], *, all_: bool) -> list[list[str]]:
    rows = [["NAME", "ID", "PID", "STATUS", "NET", "IP", "PORTS", "COMMAND"]]
    for st in states:
        live = st.live_status()
        if not all_ and live != "running":
            continue
        rows.append(
            [
                st.name,
                st.id[:12],
                str(st.pid.pid) if live == "running" else "-",
                _status_text(st),
                st.net_mode,
                ",".join(network.result_ips(st.cni_result) if live == "running" else []) or "-",
                ",".join(_ports(st)) or "-",
                " ".join(st.command),
            ]
        )
    return rows


def _namespaces(st: ContainerState) -> dict[str, Any]:
    """The init's namespaces, read through a pidfd of that very process; their
    ``/proc/PID/ns`` paths only when this ``/proc`` is our pid namespace's (else they would
    name another process's)."""
    init = st.pid.open()
    if init is None:
        return {}
    me = os.pidfd_open(os.getpid())
    try:
        mine, theirs = namespaces.ns_links(me), namespaces.ns_links(init)
    finally:
        os.close(me)
        os.close(init)
    paths = pidfds.proc_is_own()
    doc: dict[str, Any] = {}
    for kind, link in theirs.items():
        entry: dict[str, Any] = {"link": link, "shared_with_host": mine.get(kind) == link}
        if paths:
            entry["path"] = f"/proc/{st.pid.pid}/ns/{kind}"
        doc[kind] = entry
    return doc


def _iso(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _cgroup_doc(st: ContainerState) -> dict[str, Any]:
    doc: dict[str, Any] = {"Limits": st.limits}
    if st.cgroup:
        cg = cgroups.Cgroup.from_dict(st.cgroup)
        doc.update(Version=cg.version, Paths=dict(cg.paths))
        with contextlib.suppress(OSError):
            doc["Files"] = cgroups.read_limits(cg)
    return doc


def _userns_doc(st: ContainerState) -> dict[str, Any]:
    """podman's names: ``UsernsMode`` and ``IDMappings`` (CONTAINER:HOST:SIZE strings)."""
    mappings = Mappings.from_doc(st.userns)
    if mappings is None:
        return {"UsernsMode": "host"}
    return {"UsernsMode": mappings.mode,
            "IDMappings": {"UidMap": [str(m) for m in mappings.uid_map],
                           "GidMap": [str(m) for m in mappings.gid_map]}}


def inspect_doc(st: ContainerState) -> dict[str, Any]:
    live = st.live_status()
    running = live == "running"
    ips = network.result_ips(st.cni_result)
    return {
        "Id": st.id,
        "Name": st.name,
        "Image": st.image,
        "Created": _iso(st.created),
        "State": {
            "Status": live,
            "Running": running,
            "Pid": st.pid.pid if running else 0,
            "ExitCode": st.exit_code,
            "StartedAt": _iso(st.started),
            "FinishedAt": _iso(st.finished),
            "Error": st.error,
        },
        "Config": {
            "Cmd": st.command,
            "Env": [f"{k}={v}" for k, v in st.env],
            "WorkingDir": st.workdir,
            "Hostname": st.hostname,
        },
        "Namespaces": _namespaces(st) if running else {},
        "NetworkSettings": {
            "Mode": st.net_mode,
            "Network": st.network,
            "SandboxKey": st.netns_path,
            "Links": st.links,
            "IPAddress": ips[0] if ips else "",
            "IPAddresses": ips,
            "Ports": st.ports,
            "CNIResult": st.cni_result,
        },
        # capabilities, seccomp, masked paths, device rules; the user namespace's maps
        "HostConfig": {**st.security, **_userns_doc(st)},
        "Cgroup": _cgroup_doc(st),
        "Rootfs": st.rootfs,
        "LogPath": st.log_path,
        "AutoRemove": st.auto_remove,
    }


def format_template(doc: dict[str, Any], template: str) -> str:
    """``{{.State.Pid}}``-style dotted paths (the handful people use with docker inspect -f)."""

    def lookup(match: re.Match[str]) -> str:
        node: Any = doc
        for key in match.group(1).strip(".").split("."):
            if not isinstance(node, dict) or key not in node:
                raise RunError(f"template: no field {match.group(1)}")
            node = node[key]
        if isinstance(node, dict | list):
            return json.dumps(node)
        return "" if node is None else str(node)

    return _TEMPLATE_RE.sub(lookup, template)
