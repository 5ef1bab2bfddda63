"""`pycni network ...` and `pycni-run network ...`: one implementation, two entry points.

    network create [--subnet CIDR]... [--gateway IP]... [--ip-range CIDR]... [--ipv6]
                   [--internal] [--disable-dns] [--mtu N] [--bridge NAME] [--label K=V]...
                   [--opt K=V]... NAME
    network ls [--format table|json] [-q]
    network inspect NAME...
    network rm [-f] NAME...
    network prune

Locations (``--conf-dir``, ``--cni-path``, ``--cache-dir``, ``--state-dir``) and the address
pools come from ``pycni.network.config``; `pycni-run` passes its own settings as defaults.
Data goes to stdout; errors to stderr, exit status 1 (2 for a command line that does not parse).
`ls` and `inspect` import nothing that touches the kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pycni.cni.errors import CNIError

__all__ = ["main"]

_LOCATIONS = {"conf_dir": "--conf-dir", "cache_dir": "--cache-dir", "state_dir": "--state-dir"}
# The settings each verb reads; `create` reads the config file's network section too. When
# flags (or the caller's defaults) give them all, or the file found is the repository's copy
# of the built-in defaults, the file is not read at all: `ls` then pays for no YAML parser
# (~12 ms of imports).
_READS = {"ls": tuple(_LOCATIONS), "list": tuple(_LOCATIONS), "inspect": tuple(_LOCATIONS),
          "rm": (*_LOCATIONS, "cni_path"), "remove": (*_LOCATIONS, "cni_path"),
          "prune": (*_LOCATIONS, "cni_path")}


class _UsageError(Exception):
    pass


class _Formatter(argparse.HelpFormatter):
    """argparse's, with the terminal width found as ``shutil.get_terminal_size`` finds it but
    without importing shutil (and with it zlib, bz2 and lzma, ~3 ms): argparse makes one of
    these for every ``add_argument``, help or not."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            try:
                columns = os.get_terminal_size(1).columns
            except (ValueError, OSError):
                columns = 80
        super().__init__(prog, width=max(columns - 2, 20))


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _add_locations(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--config", help="pycni.yaml to read (default: as pycni-run finds it)")
    for dest, flag in _LOCATIONS.items():
        sub.add_argument(flag, dest=dest)
    sub.add_argument("--cni-path", dest="cni_path", help="plugin directories, ':'-separated")


def _add_create(subs: Any) -> None:
    create = subs.add_parser("create", help="write a new network's conflist")
    create.add_argument("name")
    create.add_argument("--subnet", action="append", default=[], metavar="CIDR")
    create.add_argument("--gateway", action="append", default=[], metavar="IP")
    create.add_argument("--ip-range", action="append", default=[], metavar="CIDR")
    create.add_argument("--ipv6", action="store_true", help="dual-stack (a ULA /64 if no v6 "
                        "--subnet)")
    create.add_argument("--internal", action="store_true",
                        help="containers reach each other and nothing outside the network")
    create.add_argument("--disable-dns", action="store_true",
                        help="no name resolution (no pycni-dns plugin in the chain)")
    create.add_argument("--mtu", type=int)
    create.add_argument("--bridge", default="", help="bridge name (default: derived)")
    create.add_argument("--label", action="append", default=[], metavar="K=V")
    create.add_argument("-o", "--opt", action="append", default=[], metavar="K=V")
    create.add_argument("-d", "--driver", default="bridge", choices=["bridge"])
    _add_locations(create)


def _parser(prog: str) -> _Parser:
    parser = _Parser(prog=prog, description="manage CNI networks (conflists in the conf dir)")
    subs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    _add_create(subs)
    ls = subs.add_parser("ls", aliases=["list"], help="list networks")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.add_argument("-q", "--quiet", action="store_true", help="names only")
    inspect = subs.add_parser("inspect", help="networks as JSON, with their attachments")
    inspect.add_argument("names", nargs="+", metavar="NAME")
    rm = subs.add_parser("rm", aliases=["remove"], help="remove networks")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.add_argument("-f", "--force", action="store_true", help="disconnect attached containers")
    prune = subs.add_parser("prune", help="remove every network of ours with no attachment")
    for sub in (ls, inspect, rm, prune):
        _add_locations(sub)
    return parser


def _create(settings: Any, ns: argparse.Namespace) -> int:
    from pycni.network.manager import create_network
    from pycni.network.spec import CreateRequest

    req = CreateRequest(
        name=ns.name, subnets=tuple(ns.subnet), gateways=tuple(ns.gateway),
        ip_ranges=tuple(ns.ip_range), ipv6=ns.ipv6, internal=ns.internal, mtu=ns.mtu,
        bridge=ns.bridge, labels=tuple(ns.label), options=tuple(ns.opt), dns=not ns.disable_dns,
    )
    network, warnings = create_network(settings, req)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(network.name)
    return 0


def _ls(settings: Any, ns: argparse.Namespace) -> int:
    from pycni.network import report
    from pycni.network.manager import list_networks

    rows = list_networks(settings)
    if ns.quiet:
        text = "\n".join(r.network.name for r in rows)
    else:
        text = report.ls_json_lines(rows) if ns.format == "json" else report.ls_table(rows)
    if text:
        print(text)
    return 0


def _inspect(settings: Any, ns: argparse.Namespace) -> int:
    from pycni.network import report
    from pycni.network.manager import inspect_networks

    found = inspect_networks(settings, ns.names)
    print(json.dumps([report.inspect_document(n, a) for n, a in found], indent=2))
    return 0


def _removal(settings: Any, ns: argparse.Namespace) -> int:
    from pycni.network.manager import prune_networks, remove_networks

    def removed(name: str) -> None:
        print(name, flush=True)

    if ns.verb == "prune":
        failures = prune_networks(settings, removed=removed)
    else:
        failures = remove_networks(settings, ns.names, force=ns.force, removed=removed)
    for name, err in failures:
        print(f"{ns.prog}: {name}: {err}", file=sys.stderr)
    return 1 if failures else 0


_VERBS = {"create": _create, "ls": _ls, "list": _ls, "inspect": _inspect,
          "rm": _removal, "remove": _removal, "prune": _removal}


def main(argv: Sequence[str], *, prog: str = "pycni network", config_file: Path | None = None,
         defaults: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
         usage_status: int = 2) -> int:
    """Run one network command; ``defaults`` are settings a caller resolved already
    (`pycni-run`'s locations), under this command's own flags."""
    from pycni.network.config import load_settings

    try:
        ns = _parser(prog).parse_args(list(argv))
    except _UsageError as err:
        print(err, file=sys.stderr)
        return usage_status
    try:
        flags: dict[str, Any] = {k: getattr(ns, k) for k in _LOCATIONS if getattr(ns, k)}
        if ns.cni_path:
            flags["cni_path"] = tuple(p for p in ns.cni_path.split(os.pathsep) if p)
        given = {**(defaults or {}), **flags}
        if ns.verb in _READS and all(given.get(k) for k in _READS[ns.verb]):
            config_file = None
        elif ns.config:
            config_file = Path(ns.config)
        elif config_file is None:
            from pycni.config_file import find_config_file, is_repo_defaults

            config_file = find_config_file()
            if ns.verb in _READS and config_file is not None and is_repo_defaults(config_file):
                config_file = None  # the built-in defaults, as the file says
        settings = load_settings(config_file, env=os.environ if env is None else env,
                                 overrides=given)
        ns.prog = prog
        return _VERBS[ns.verb](settings, ns)
    except CNIError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
