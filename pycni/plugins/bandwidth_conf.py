"""The `bandwidth` plugin's configuration: limits parsed and validated before any kernel call.

Keys follow the reference plugin (reference §2.5): ``ingressRate``/``ingressBurst`` (traffic
into the container) and ``egressRate``/``egressBurst`` (out of it), rates in bit/s and bursts
in bits, both of a pair or neither (0 means "no limit"). ``runtimeConfig.bandwidth`` (the
``bandwidth`` capability) carries the same four keys and is used only when the config has none
of them: static configuration wins, as in the reference. containerd's CRI (go-cni) sends them
capitalised (``IngressRate``, ``IngressBurst``, ...; a burst of 4294967295 when the pod sets
none): keys are matched as the reference's Go decoder matches them, and one that matches none
is refused, so a limit that was asked for is never silently left unapplied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni._fields import GoKeys, bad, check_plugin_keys, check_runtime_keys, decode_keys
from pycni.cni.skel import CmdArgs

__all__ = ["BandwidthConfig", "Limit", "parse_bandwidth_config", "parse_limits"]

_LIMIT_KEYS: Final = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
_LIMITS: Final = GoKeys(_LIMIT_KEYS)
# tc_tbf_qopt carries rate (bytes/s) and the queue limit in u32; the reference refuses a
# burst/8 of 4 GiB or more, and we cannot express a rate of 2**32 bytes/s (~34 Gbit/s) or more.
_MAX_BYTES: Final = 2**32 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """One direction's limit: rate in bit/s, burst in bits (as configured)."""

    rate: int
    burst: int

    @property
    def rate_bytes(self) -> int:
        return self.rate // 8

    @property
    def burst_bytes(self) -> int:
        return self.burst // 8


@dataclass(frozen=True, slots=True, kw_only=True)
class BandwidthConfig:
    ingress: Limit | None = None  # into the container: tbf on the host veth
    egress: Limit | None = None  # out of the container: tbf on an ifb fed by the host veth
    source: str = ""  # "config" or "runtimeConfig.bandwidth": where the limits came from

    @property
    def limited(self) -> bool:
        return self.ingress is not None or self.egress is not None


def _check_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    return check_plugin_keys(raw, plugin="bandwidth", known=_LIMIT_KEYS)


def _value(doc: Mapping[str, Any], key: str, where: str) -> int:
    value = doc.get(key, 0)
    if value is None:
        return 0
    # bool is an int in Python; JSON true is not a rate.
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(f"{where}{key}", f"must be an integer, got {value!r}")
    if value < 0:
        raise bad(f"{where}{key}", f"must not be negative, got {value}")
    return value


def _limit(doc: Mapping[str, Any], direction: str, where: str) -> Limit | None:
    rate_key, burst_key = f"{direction}Rate", f"{direction}Burst"
    rate, burst = _value(doc, rate_key, where), _value(doc, burst_key, where)
    if not rate and not burst:
        return None
    if not burst:
        raise bad(f"{where}{burst_key}", f"must be set with {rate_key} (both or neither)")
    if not rate:
        raise bad(f"{where}{rate_key}", f"must be set with {burst_key} (both or neither)")
    if rate < 8:
        raise bad(f"{where}{rate_key}", f"{rate} bit/s is less than one byte per second")
    if rate // 8 > _MAX_BYTES:
        raise bad(f"{where}{rate_key}", f"{rate} bit/s is {_MAX_BYTES * 8} bit/s or more")
    if burst < 8:
        raise bad(f"{where}{burst_key}", f"{burst} bits is less than one byte")
    if burst // 8 >= _MAX_BYTES:
        raise bad(f"{where}{burst_key}", f"{burst} bits is 4 GiB or more")
    return Limit(rate=rate, burst=burst)


def parse_limits(doc: Mapping[str, Any], where: str = "") -> tuple[Limit | None, Limit | None]:
    """``(ingress, egress)`` from an object holding the four keys; code 7 names a bad field,
    code 2 a key that is none of them."""
    doc = decode_keys(doc, _LIMITS, where=where, refuse="a bandwidth key")
    return _limit(doc, "ingress", where), _limit(doc, "egress", where)


def parse_bandwidth_config(args: CmdArgs) -> BandwidthConfig:
    raw = _check_keys(args.config.raw)
    capabilities = check_runtime_keys(
        args.config.runtime_config, plugin="bandwidth", known=("bandwidth",)
    )
    if any(key in raw for key in _LIMIT_KEYS):
        ingress, egress = parse_limits({k: raw[k] for k in _LIMIT_KEYS if k in raw})
        return BandwidthConfig(ingress=ingress, egress=egress, source="config")
    runtime = capabilities.get("bandwidth")
    if runtime is None:
        return BandwidthConfig()
    if not isinstance(runtime, dict):
        raise bad("runtimeConfig.bandwidth", f"must be an object, got {runtime!r}")
    ingress, egress = parse_limits(runtime, "runtimeConfig.bandwidth.")
    return BandwidthConfig(ingress=ingress, egress=egress, source="runtimeConfig.bandwidth")
