"""``pycni-run run``'s and ``exec``'s command lines: options up to the first positional, and
a run's options and positionals made into a validated ``ContainerSpec`` (no kernel access)."""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Sequence

from pycni_run.errors import RunError
from pycni_run.idmaps import parse_userns
from pycni_run.netspec import parse_dns_options, parse_networks
from pycni_run.security import parse_options
from pycni_run.spec import (
    ContainerSpec,
    Limits,
    new_container_id,
    parse_cpus,
    parse_env,
    parse_memory,
    parse_pids_limit,
    parse_publish,
    validate_name,
    validate_spec,
)
from pycni_run.usage import UsageParser
from pycni_run.users import parse_user
from pycni_run.volumes import parse_tmpfs, parse_volume

__all__ = ["build_spec", "exec_parser", "parse_run_args", "run_parser", "split_at_positional"]


@functools.cache
def run_parser() -> UsageParser:
    """Built once per process (and once for all of the daemon's workers, which inherit it):
    argparse parsers hold no state between parses, and building this one costs ~1 ms."""
    p = UsageParser(prog="pycni-run run", add_help=True, allow_abbrev=False)
    p.add_argument("--name")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--rm", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("--hostname", default="")
    p.add_argument("--net", "--network", dest="net", action="append", default=[])
    p.add_argument("--ip", default="")
    p.add_argument("--ip6", default="")
    p.add_argument("--mac-address", default="")
    p.add_argument("--network-alias", "--net-alias", dest="aliases", action="append",
                   default=[])
    p.add_argument("--dns", action="append", default=[])
    p.add_argument("--dns-search", action="append", default=[])
    p.add_argument("--dns-option", "--dns-opt", dest="dns_option", action="append", default=[])
    p.add_argument("--add-host", action="append", default=[])
    p.add_argument("-p", "--publish", action="append", default=[])
    p.add_argument("-m", "--memory")
    p.add_argument("--cpus")
    p.add_argument("--pids-limit")
    p.add_argument("--rootfs", default="")
    p.add_argument("--init", action="store_true", help="a reaping init as PID 1")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--cap-add", action="append", default=[])
    p.add_argument("--cap-drop", action="append", default=[])
    p.add_argument("--security-opt", action="append", default=[])
    p.add_argument("-v", "--volume", action="append", default=[], help="HOST:CTR[:ro]")
    p.add_argument("--tmpfs", action="append", default=[], help="PATH[:OPTS]")
    p.add_argument("--read-only", action="store_true", help="the rootfs read-only")
    p.add_argument("-u", "--user", default="", help="NAME|UID[:GROUP|GID]")
    p.add_argument("-P", "--publish-all", action="store_true")
    p.add_argument("--entrypoint", help="replaces the image's Entrypoint (and its Cmd)")
    p.add_argument("--userns", default="host", help="host, auto or auto:size=N")
    p.add_argument("--uidmap", action="append", default=[], help="CONTAINER:HOST:SIZE")
    p.add_argument("--gidmap", action="append", default=[], help="CONTAINER:HOST:SIZE")
    return p


def split_at_positional(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Options up to the first positional (IMAGE or CMD); everything after belongs to CMD."""
    takes_value = {
        opt for action in parser._actions if action.nargs != 0 for opt in action.option_strings
    }
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return list(argv[:i]), list(argv[i + 1 :])
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            i += 2 if arg in takes_value else 1
            continue
        # A short cluster: "-it", "-p80:80", "-e" "K=V"
        for pos in range(1, len(arg)):
            if f"-{arg[pos]}" in takes_value:
                i += 1 if pos + 1 < len(arg) else 2
                break
        else:
            i += 1
    return list(argv[:i]), list(argv[i:])


def parse_run_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = run_parser()
    options, positionals = split_at_positional(parser, argv)
    return parser.parse_args(options), positionals


def build_spec(ns: argparse.Namespace, positionals: list[str]) -> ContainerSpec:
    """Options and positionals -> a validated ContainerSpec (no kernel access)."""
    if ns.rootfs:
        image, command = "", positionals
    elif positionals:
        image, command = positionals[0], positionals[1:]
    else:
        raise RunError("pycni-run run: an IMAGE (or --rootfs DIR) is required")
    if not command and (ns.rootfs or image == "busybox") and ns.entrypoint is None:
        command = ["sh"]  # the busybox image's default command
    container_id = new_container_id()
    mode, networks = parse_networks(ns.net, ip=ns.ip, ip6=ns.ip6, mac=ns.mac_address,
                                    aliases=ns.aliases)
    spec = ContainerSpec(
        name=validate_name(ns.name) if ns.name else container_id[:12],
        id=container_id,
        command=tuple(command),
        image=image or "busybox",
        rootfs=os.path.abspath(ns.rootfs) if ns.rootfs else "",
        env=parse_env(ns.env),
        workdir=ns.workdir,
        hostname=ns.hostname,
        net=mode,
        networks=networks,
        ports=tuple(m for p in ns.publish for m in parse_publish(p)),
        dns=parse_dns_options(servers=ns.dns, search=ns.dns_search, options=ns.dns_option,
                              add_hosts=ns.add_host),
        limits=Limits(
            memory=parse_memory(ns.memory) if ns.memory else None,
            cpus=parse_cpus(ns.cpus) if ns.cpus else None,
            pids=parse_pids_limit(ns.pids_limit) if ns.pids_limit else None,
        ),
        detach=ns.detach,
        auto_remove=ns.rm,
        interactive=ns.interactive,
        tty=ns.tty,
        init=ns.init,
        security=parse_options(
            privileged=ns.privileged,
            cap_add=ns.cap_add,
            cap_drop=ns.cap_drop,
            security_opt=ns.security_opt,
        ),
        entrypoint=None if ns.entrypoint is None else tuple(filter(None, [ns.entrypoint])),
        user=parse_user(ns.user),
        mounts=(*map(parse_volume, ns.volume), *map(parse_tmpfs, ns.tmpfs)),
        read_only=ns.read_only,
        publish_all=ns.publish_all,
        userns=parse_userns(ns.userns, ns.uidmap, ns.gidmap),
    )
    validate_spec(spec)
    return spec


def exec_parser() -> UsageParser:
    parser = UsageParser(prog="pycni-run exec", allow_abbrev=False)
    parser.add_argument("-i", "--interactive", action="store_true")
    parser.add_argument("-t", "--tty", action="store_true")
    parser.add_argument("-e", "--env", action="append", default=[])
    parser.add_argument("-w", "--workdir")
    return parser
