"""The `pycni-dns` plugin's configuration (also installed as `dnsname`), parsed whole first.

Keys: ``domainName`` (containers/dnsname's: names resolve as ``NAME`` and ``NAME.DOMAIN``; the
`dnsname` type defaults to dnsname's ``dns.podman``), ``runDir`` (the resolver's socket, records
and log; default /run/pycni/dns) and ``resolvConf`` (where the resolver reads the host's
upstream servers when this call starts it; default /etc/resolv.conf). Any other key is refused
with code 2.

The container's names, in order, duplicates (case-insensitive) dropped:
- ``runtimeConfig.aliases`` (the ``aliases`` capability): podman's ``{"<network>": [names]}``
  (this network's entry) or the CNI conventions' plain list;
- ``K8S_POD_NAME`` from CNI_ARGS (podman passes the container name there, CRI the pod name).
A requested alias that is no DNS name is refused (code 7); a K8S_POD_NAME that is none is only
skipped (it was not asked for as a DNS name), with a line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni._fields import bad, check_plugin_keys, check_runtime_keys, opt_str, path_problem
from pycni.cni.errors import CNIError
from pycni.cni.skel import CmdArgs
from pycni.dns.control import DEFAULT_RESOLV_CONF, Resolver
from pycni.dns.names import name_problem, normalize
from pycni.dns.records import DEFAULT_RUN_DIR

__all__ = ["DNSNAME_DOMAIN", "DnsConfig", "container_names", "parse_dns_config",
           "parse_for_teardown"]

DNSNAME_DOMAIN: Final = "dns.podman"  # containers/dnsname's and podman's default
_KEYS: Final = frozenset({"domainName", "runDir", "resolvConf"})
POD_NAME_ARG: Final = "K8S_POD_NAME"


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsConfig:
    resolver: Resolver
    domain: str = ""
    names: tuple[str, ...] = ()


def _path(raw: Mapping[str, Any], key: str, default: str) -> str:
    value = opt_str(raw, key, default=default)
    problem = path_problem(value)
    if problem:
        raise bad(key, problem)
    return value


def _domain(args: CmdArgs, raw: Mapping[str, Any]) -> str:
    default = DNSNAME_DOMAIN if args.config.type == "dnsname" else ""
    domain = opt_str(raw, "domainName", default=default)
    if domain:
        problem = name_problem(domain)
        if problem:
            raise bad("domainName", f"{domain!r} {problem}")
    return normalize(domain)


def _aliases(args: CmdArgs) -> list[str]:
    # Go's decoder matches keys in any case (a CRI or libcni runtime may send "Aliases").
    runtime = check_runtime_keys(args.config.runtime_config, plugin=args.config.type,
                                 known=("aliases",))
    raw = runtime.get("aliases")
    if raw is None:
        return []
    if isinstance(raw, dict):  # podman: {"<network>": [...]}, other networks' are not ours
        raw = raw.get(args.network, [])
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise bad("runtimeConfig.aliases", "must be a list of names or an object mapping this "
                  f"network's name to one, got {raw!r}")
    for alias in raw:
        problem = name_problem(alias)
        if problem:
            raise bad("runtimeConfig.aliases", f"{alias!r} {problem}")
    return raw


def _pod_name(args: CmdArgs) -> list[str]:
    name = args.cni_args.get(POD_NAME_ARG, "")
    if not name:
        return []
    problem = name_problem(name)
    if problem:
        print(f"{args.config.type}: {POD_NAME_ARG}={name!r} {problem}: not registered",
              file=sys.stderr)
        return []
    return [name]


def container_names(candidates: Iterable[str]) -> tuple[str, ...]:
    """Normalized, first spelling wins."""
    return tuple(dict.fromkeys(normalize(n) for n in candidates))


def parse_dns_config(args: CmdArgs) -> DnsConfig:
    raw = check_plugin_keys(args.config.raw, plugin=args.config.type, known=_KEYS)
    resolver = Resolver(run_dir=_path(raw, "runDir", DEFAULT_RUN_DIR),
                        resolv_conf=_path(raw, "resolvConf", DEFAULT_RESOLV_CONF))
    return DnsConfig(resolver=resolver, domain=_domain(args, raw),
                     names=container_names([*_pod_name(args), *_aliases(args)]))


def parse_for_teardown(args: CmdArgs) -> DnsConfig:
    """DEL and GC go by the attachment's record: an invalid config must not stop them (it
    would abort the runtime's reverse DEL chain). Only where the records are is needed."""
    try:
        return parse_dns_config(args)
    except CNIError as err:
        print(f"{args.config.type}: DEL with an invalid config ({err}); removing by attachment",
              file=sys.stderr)
    run_dir = args.config.raw.get("runDir")
    if not isinstance(run_dir, str) or path_problem(run_dir) is not None:
        run_dir = DEFAULT_RUN_DIR
    return DnsConfig(resolver=Resolver(run_dir=run_dir))
