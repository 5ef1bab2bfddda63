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
from pycni_run.spec import DEFAULT_NETWORK
from pycni_run.state import ContainerState, NetAttachment

__all__ = ["format_template", "inspect_doc", "ps_rows", "render_table"]

_TEMPLATE_RE = re.compile(r"\{\{\s*((?:\.[A-Za-z0-9_-]+)+)\s*\}\}")


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


def _networks_text(st: ContainerState) -> str:
    """The mode, or for a container with networks of its own their names (``bridge``: the
    default network, as --net calls it)."""
    if st.net_mode != "bridge" or not st.networks:
        return st.net_mode
    return ",".join("bridge" if a.network == DEFAULT_NETWORK else a.network for a in st.networks)


def _all_ips(st: ContainerState) -> list[str]:
    return [ip for a in st.networks for ip in network.result_ips(a.result)]


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
                _networks_text(st),
                ",".join(_all_ips(st) if live == "running" else []) or "-",
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


def _sandbox_addresses(result: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(CIDR, gateway) of every address on the container's own interfaces in a result."""
    interfaces = (result or {}).get("interfaces") or []
    found = []
    for ip in (result or {}).get("ips") or []:
        index = ip.get("interface")
        if isinstance(index, int) and 0 <= index < len(interfaces) \
                and interfaces[index].get("sandbox"):
            found.append((str(ip["address"]), str(ip.get("gateway") or "")))
    return found


def _mac_of(att: NetAttachment) -> str:
    interfaces = (att.result or {}).get("interfaces") or []
    return next((str(i.get("mac") or "") for i in interfaces
                 if i.get("name") == att.ifname and i.get("sandbox")), "")


def _network_doc(att: NetAttachment) -> dict[str, Any]:
    """One entry of ``NetworkSettings.Networks``, in the spirit of Docker's."""
    doc: dict[str, Any] = {"Interface": att.ifname, "IPAddress": "", "IPPrefixLen": 0,
                           "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                           "IPv6Gateway": "", "MacAddress": _mac_of(att),
                           "Aliases": list(att.aliases), "DefaultRoute": att.default_route}
    for cidr, gateway in _sandbox_addresses(att.result):
        address, _, prefix = cidr.partition("/")
        keys = ("GlobalIPv6Address", "GlobalIPv6PrefixLen", "IPv6Gateway") if ":" in address \
            else ("IPAddress", "IPPrefixLen", "Gateway")
        if not doc[keys[0]]:
            doc.update(zip(keys, (address, int(prefix or 0), gateway), strict=True))
    doc["CNIResult"] = att.result
    return doc


def _network_settings(st: ContainerState) -> dict[str, Any]:
    primary = st.primary
    ips = _all_ips(st)
    return {
        "Mode": st.net_mode,
        "Network": primary.network if primary else "",
        "SandboxKey": st.netns_path,
        "Links": st.links,
        "IPAddress": ips[0] if ips else "",
        "IPAddresses": ips,
        "Gateway": network.result_gateway(primary.result) if primary else "",
        "Ports": st.ports,
        "Networks": {a.network: _network_doc(a) for a in st.networks},
        "CNIResult": primary.result if primary else None,
    }


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
    dns = st.dns
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
        "NetworkSettings": _network_settings(st),
        # capabilities, seccomp, masked paths, device rules; resolver settings and hosts;
        # the user namespace's maps
        "HostConfig": {**st.security, "Dns": dns.get("servers", []),
                       "DnsSearch": dns.get("search", []), "DnsOptions": dns.get("options", []),
                       "ExtraHosts": dns.get("extra_hosts", []), **_userns_doc(st)},
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
