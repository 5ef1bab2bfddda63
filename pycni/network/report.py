"""What `network ls` and `network inspect` print (pure: data in, text and documents out).

``ls``: a table, ``-q`` names only, or ``--format json``: one JSON object per line, as
`docker network ls --format json` prints them. ``inspect``: a JSON array, one document per
network in the spirit of `docker network inspect` (capitalised keys, ``IPAM.Config``,
``Options``, ``Labels``), with every attachment (a list: one container may be attached twice;
``DNSNames``: the names the network's resolver holds for it) and the conflist itself under
``Config``. ``DNS``/``DNSEnabled``: whether names resolve on the network (podman's
``dns_enabled``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from pycni.network.attachments import Attachment
from pycni.network.manager import NetworkSummary
from pycni.network.store import StoredNetwork
from pycni.network.view import NetworkView
from pycni.tables import render_table

__all__ = ["inspect_document", "ls_json_lines", "ls_table", "network_id"]


def network_id(name: str) -> str:
    """podman's network id: the sha256 of the name."""
    from pycni.digest import sha256_hex

    return sha256_hex(name.encode())


def _joined(values: Sequence[str]) -> str:
    return ",".join(v for v in values if v) or "-"


def ls_table(rows: Sequence[NetworkSummary]) -> str:
    lines = [["NAME", "DRIVER", "SUBNETS", "GATEWAYS", "BRIDGE", "CONTAINERS", "INTERNAL",
              "DNS"]]
    for row in rows:
        view = row.network.view
        lines.append([
            view.name,
            view.driver,
            _joined([s.subnet for s in view.subnets]),
            _joined([s.gateway for s in view.subnets]),
            view.bridge or "-",
            str(row.attachments),
            "yes" if view.internal else "no",
            "yes" if view.dns is not None else "no",
        ])
    return render_table(lines)


def _ls_doc(row: NetworkSummary) -> dict[str, Any]:
    view = row.network.view
    return {
        "Name": view.name,
        "ID": network_id(view.name)[:12],
        "Driver": view.driver,
        "Subnets": [s.subnet for s in view.subnets],
        "Gateways": [s.gateway for s in view.subnets if s.gateway],
        "Bridge": view.bridge,
        "Containers": row.attachments,
        "Internal": view.internal,
        "IPv6": view.ipv6,
        "DNSEnabled": view.dns is not None,
        "Labels": dict(view.labels),
    }


def ls_json_lines(rows: Sequence[NetworkSummary]) -> str:
    return "\n".join(json.dumps(_ls_doc(row)) for row in rows)


def _first(ips: Sequence[str], version: int) -> str:
    return next((ip for ip in ips if ipaddress.ip_interface(ip).version == version), "")


def _attachment_doc(a: Attachment) -> dict[str, Any]:
    return {
        "ContainerID": a.container_id,
        "Name": a.name,
        "Interface": a.ifname,
        "IPv4Address": _first(a.ips, 4),
        "IPv6Address": _first(a.ips, 6),
        "IPs": list(a.ips),
        "MacAddress": a.mac,
        "Netns": a.entry.netns,
        "InProgress": a.in_progress,
        "DNSNames": list(a.dns_names),
    }


def _ipam_doc(view: NetworkView) -> dict[str, Any]:
    return {
        "Driver": view.ipam_driver,
        "DataDir": view.ipam_data_dir,
        "Config": [{"Subnet": s.subnet, "Gateway": s.gateway, "IPRange": s.ip_range}
                   for s in view.subnets],
    }


def inspect_document(network: StoredNetwork, attached: Sequence[Attachment]) -> dict[str, Any]:
    import datetime  # inspect only: ls does without

    view = network.view
    created = datetime.datetime.fromtimestamp(network.created, tz=datetime.UTC)
    return {
        "Name": view.name,
        "Id": network_id(view.name),
        "Created": created.isoformat(),
        "Driver": view.driver,
        "Bridge": view.bridge,
        "Internal": view.internal,
        "EnableIPv6": view.ipv6,
        "DNSEnabled": view.dns is not None,
        "DNSDomain": view.dns.domain if view.dns else "",
        "Managed": view.managed,
        "IPAM": _ipam_doc(view),
        "Options": dict(view.options),
        "Labels": dict(view.labels),
        "Containers": [_attachment_doc(a) for a in attached],
        "ConfigFile": network.path,
        "Config": json.loads(network.conflist.raw),
    }
