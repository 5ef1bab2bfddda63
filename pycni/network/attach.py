"""Making and undoing one attachment: CNI ADD and DEL of a network's conflist through an
``Invoker``, exactly as any runtime runs them. `pycni-run --network`, `network connect` and
`disconnect` call these; `network rm --force` DELs through them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycni.cni.invoke import Invoker, RuntimeConf
from pycni.cni.types import Result
from pycni.network.attachments import POD_NAME_ARG, Attachment
from pycni.network.names import invalid
from pycni.network.store import StoredNetwork

__all__ = ["AttachRequest", "attach", "detach"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachRequest:
    """One container on one network: what `pycni-run --network` and `connect` ask for."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    name: str = ""  # passed as K8S_POD_NAME, as podman does, so `inspect` can name it
    ips: tuple[str, ...] = ()  # static addresses (the ``ips`` capability)
    mac: str = ""
    capability_args: Mapping[str, Any] = field(default_factory=dict)  # portMappings, ...


def _check_requested_ips(network: StoredNetwork, ips: Sequence[str]) -> None:
    subnets = network.view.networks()
    for text in ips:
        try:
            ip = ipaddress.ip_interface(text).ip
        except ValueError as err:
            raise invalid(f"invalid IP address {text!r}") from err
        if not any(ip in s for s in subnets):
            raise invalid(f"{ip} is outside network {network.name}",
                          f"subnets: {', '.join(map(str, subnets))}")


def attach(invoker: Invoker, network: StoredNetwork, req: AttachRequest) -> Result:
    """CNI ADD of the network's chain for one container (rolled back if any plugin fails)."""
    _check_requested_ips(network, req.ips)
    caps = dict(req.capability_args)
    if req.ips:
        caps["ips"] = list(req.ips)
    if req.mac:
        caps["mac"] = req.mac
    args = (("IgnoreUnknown", "1"), (POD_NAME_ARG, req.name)) if req.name else ()
    rt = RuntimeConf(container_id=req.container_id, netns=req.netns, ifname=req.ifname,
                     cni_args=args, capability_args=caps)
    return invoker.add(network.conflist, rt)


def detach(invoker: Invoker, network: StoredNetwork, attachment: Attachment) -> None:
    """CNI DEL with what the ADD was given (its cached arguments); best effort, as DEL is."""
    entry = attachment.entry
    rt = RuntimeConf(container_id=entry.container_id, netns=entry.netns, ifname=entry.ifname,
                     cni_args=entry.cni_args, capability_args=entry.capability_args)
    invoker.delete(network.conflist, rt)
