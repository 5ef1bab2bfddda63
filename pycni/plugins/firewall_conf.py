"""The `firewall` plugin's configuration, parsed and validated before any kernel call.

Keys (reference: containernetworking/plugins meta/firewall, reference §2.6):

- ``backend``: ``nftables`` | ``iptables`` | ``none``, or absent to detect, exactly as
  ``ipMasqBackend`` of `bridge` (one backend per host, never rules in both). The reference's
  ``firewalld`` is refused with code 2.
- ``ingressPolicy``: what may open connections into this network from the containers of
  *another* pycni network. ``same-bridge`` (the default; Docker's inter-network isolation):
  refused, though replies to connections this network opened still pass; ``open``: accepted.
  The reference's ``isolated`` (no traffic between containers of the same bridge, Docker's
  ``icc=false``) is refused with code 2: bridged frames never reach the IP forward hook
  without br_netfilter, so the rule would silently not apply; use `bridge`'s
  ``portIsolation: true``, which the kernel enforces on the bridge itself.
- ``internal`` (pycni's, default false): the network is internal (`network create
  --internal`): its containers reach each other and nothing is forwarded into or out of it.
- ``iptablesAdminChainName``, ``firewalldZone``: refused with code 2 (not implemented).

Unlike the reference default (``open``), pycni isolates networks unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni._fields import bad, check_plugin_keys, check_runtime_keys, opt_bool, opt_str
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.firewall import INGRESS_POLICIES, validate_backend_name

__all__ = ["FirewallConfig", "parse_firewall_config"]

_KEYS: Final = frozenset({"backend", "ingressPolicy", "internal"})
_NOT_IMPLEMENTED: Final = {
    "iptablesAdminChainName": "an admin chain is not implemented",
    "firewalldZone": "the firewalld backend is not implemented",
}
_REFUSED_VALUES: Final = {
    ("backend", "firewalld"): "the firewalld backend is not implemented (use nftables or "
    "iptables, or leave backend out to detect)",
    ("ingressPolicy", "isolated"): "isolated is not implemented: bridged traffic bypasses "
    "the forward hook; set portIsolation: true on the bridge plugin instead",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FirewallConfig:
    backend: str | None = None
    ingress_policy: str = "same-bridge"
    internal: bool = False


def _check_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    return check_plugin_keys(
        raw, plugin="firewall", known=_KEYS, not_implemented=_NOT_IMPLEMENTED
    )


def _refuse_unimplemented(key: str, value: str) -> None:
    reason = _REFUSED_VALUES.get((key, value))
    if reason:
        raise CNIError(ErrorCode.UNSUPPORTED_FIELD, f"unsupported {key} {value!r}", reason)


def parse_firewall_config(args: CmdArgs) -> FirewallConfig:
    raw = _check_keys(args.config.raw)
    check_runtime_keys(args.config.runtime_config, plugin="firewall", known=())
    backend = opt_str(raw, "backend") or None
    if backend is not None:
        _refuse_unimplemented("backend", backend)
        validate_backend_name(backend, field="backend")
    policy = opt_str(raw, "ingressPolicy", default="same-bridge")
    _refuse_unimplemented("ingressPolicy", policy)
    if policy not in INGRESS_POLICIES:
        raise bad("ingressPolicy", f"{policy!r} is not one of {', '.join(INGRESS_POLICIES)}")
    return FirewallConfig(backend=backend, ingress_policy=policy,
                          internal=opt_bool(raw, "internal"))
