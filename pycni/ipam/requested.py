"""The addresses a call asks host-local for: ``CNI_ARGS`` ``IP=``, ``args.cni.ips`` and
``runtimeConfig.ips``, each checked (an error names the source), merged in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pycni.cni._fields import GoKeys, decode_keys
from pycni.ipam.config import IPAddress, parse_ip, parse_list

__all__ = ["requested_ips"]


def _cni_args_ips(cni_args: str | Mapping[str, str] | None) -> list[str]:
    """The ``IP=`` values of CNI_ARGS (``K=V;K=V``); a value may list addresses with commas."""
    if cni_args is None:
        return []
    if isinstance(cni_args, str):
        pairs = (item.partition("=") for item in cni_args.split(";"))
        values = [value for key, _, value in pairs if key.strip() == "IP"]
    else:
        values = [cni_args["IP"]] if "IP" in cni_args else []
    return [ip.strip() for value in values for ip in value.split(",") if ip.strip()]


def _list_at(
    root: Mapping[str, object] | None, keys: Sequence[str], field: str
) -> Sequence[object]:
    node: object = root
    for key in keys:
        if not isinstance(node, Mapping):
            return []
        node = decode_keys(node, GoKeys((key,))).get(key)
    return [] if node is None else parse_list(node, field)


def requested_ips(
    *,
    cni_args: str | Mapping[str, str] | None = None,
    args: Mapping[str, object] | None = None,
    runtime_config: Mapping[str, object] | None = None,
) -> tuple[IPAddress, ...]:
    """The union, in order and without duplicates, of every source of requested addresses.

    Sources: ``CNI_ARGS`` ``IP=`` (the raw string or already split pairs), ``args.cni.ips``
    and ``runtimeConfig.ips``; entries may carry a ``/prefix``, which is ignored (the range's
    subnet decides the prefix). Like the reference, all sources are merged.
    """
    found: dict[IPAddress, None] = {}
    for value in _cni_args_ips(cni_args):
        found[parse_ip(value, "CNI_ARGS IP", allow_prefix=True)] = None
    for source, keys in (("args.cni.ips", ("cni", "ips")), ("runtimeConfig.ips", ("ips",))):
        root = args if source.startswith("args") else runtime_config
        for i, item in enumerate(_list_at(root, keys, source)):
            found[parse_ip(item, f"{source}[{i}]", allow_prefix=True)] = None
    return tuple(found)
