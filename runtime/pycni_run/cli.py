"""`pycni-run`: Docker-style commands. ``pycni-run [OPTIONS] IMAGE CMD...`` means ``run``.

Exit statuses follow Docker: the command's own code, 125 when the runtime fails (bad flags
included), 126 when the command cannot be executed, 127 when it is not found.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from pycni_run.config import RuntimeConfig, load_config
from pycni_run.errors import EXIT_RUNTIME, RunError
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
from pycni_run.users import parse_user
from pycni_run.volumes import parse_tmpfs, parse_volume

if TYPE_CHECKING:
    from pycni.cni.runner import PluginRunner

__all__ = ["build_spec", "main", "parse_run_args", "split_global_options", "stays_local"]

COMMANDS: Final = (
    "run",
    "exec",
    "ps",
    "inspect",
    "stop",
    "kill",
    "rm",
    "logs",
    "netns",
    "network",
    "daemon",
    "install-client",
    "load",
    "images",
    "image",
    "rmi",
)
# Never through the runtime daemon: the daemon itself, and what writes the client.
_LOCAL_COMMANDS: Final = ("daemon", "install-client")
# Global options (before the command) -> RuntimeConfig field.
GLOBAL_OPTIONS: Final = {
    "--config": "config",
    "--state-dir": "state_dir",
    "--storage-dir": "storage_dir",
    "--image-store": "image_store",
    "--netns-dir": "netns_dir",
    "--cni-path": "cni_path",
    "--conf-dir": "conf_dir",
    "--cni-cache-dir": "cni_cache_dir",
    "--cgroup-parent": "cgroup_parent",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as Docker does: status 125."""

    def error(self, message: str) -> NoReturn:
        raise RunError(f"{self.prog}: {message}")


def split_global_options(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Leading ``--opt VALUE``/``--opt=VALUE`` runtime settings, and the rest."""
    found: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0].split("=", 1)[0] in GLOBAL_OPTIONS:
        option, sep, value = rest.pop(0).partition("=")
        if not sep:
            if not rest:
                raise RunError(f"{option} needs a value")
            value = rest.pop(0)
        found[GLOBAL_OPTIONS[option]] = value
    return found, rest


@functools.cache
def _run_parser() -> _Parser:
    """Built once per process (and once for all of the daemon's workers, which inherit it):
    argparse parsers hold no state between parses, and building this one costs ~1 ms."""
    p = _Parser(prog="pycni-run run", add_help=True, allow_abbrev=False)
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


def _split_at_positional(
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
    parser = _run_parser()
    options, positionals = _split_at_positional(parser, argv)
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


def stays_local(argv: Sequence[str]) -> bool:
    """True for what the runtime daemon leaves to an in-process ``pycni-run``: ``-t`` (the pty
    relay needs the caller's terminal and its process group), ``daemon``, ``install-client``
    and help. A command line that does not parse is not local: it fails the same either way."""
    try:
        _, rest = split_global_options(argv)
        if not rest or rest[0] in ("-h", "--help", "help", *_LOCAL_COMMANDS):
            return True
        command, args = (rest[0], rest[1:]) if rest[0] in COMMANDS else ("run", rest)
        if command not in ("run", "exec"):
            return False
        parser = _run_parser() if command == "run" else _exec_parser()
        options, _ = _split_at_positional(parser, args)
        if any(o in ("-h", "--help") for o in options):
            return True  # argparse prints the help and exits: nothing to gain from the daemon
        return bool(parser.parse_args(options).tty)
    except RunError:
        return False


# ---------------------------------------------------------------------- commands


def cmd_run(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import launch
    from pycni_run.images.use import resolve_spec

    spec = resolve_spec(cfg, build_spec(*parse_run_args(argv)))
    if spec.detach:
        return launch.run_detached(cfg, spec)
    return launch.run_foreground(cfg, spec)


def _exec_parser() -> _Parser:
    parser = _Parser(prog="pycni-run exec", allow_abbrev=False)
    parser.add_argument("-i", "--interactive", action="store_true")
    parser.add_argument("-t", "--tty", action="store_true")
    parser.add_argument("-e", "--env", action="append", default=[])
    parser.add_argument("-w", "--workdir")
    return parser


def cmd_exec(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run.enter import exec_in

    parser = _exec_parser()
    options, positionals = _split_at_positional(parser, argv)
    ns = parser.parse_args(options)
    if len(positionals) < 2:
        raise RunError("usage: pycni-run exec [-i] [-t] NAME CMD...")
    return exec_in(
        cfg,
        positionals[0],
        positionals[1:],
        env=dict(parse_env(ns.env)),
        workdir=ns.workdir,
        interactive=ns.interactive,
        tty=ns.tty,
    )


def cmd_ps(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import state, views

    parser = _Parser(prog="pycni-run ps")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    ns = parser.parse_args(argv)
    rows = views.ps_rows(state.list_states(cfg.containers_dir), all_=ns.all)
    print("\n".join(r[0] for r in rows[1:]) if ns.quiet else views.render_table(rows))
    return 0


def cmd_inspect(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import state, views

    parser = _Parser(prog="pycni-run inspect")
    parser.add_argument("-f", "--format")
    parser.add_argument("name")
    ns = parser.parse_args(argv)
    doc = views.inspect_doc(state.load(cfg.containers_dir, ns.name))
    print(views.format_template(doc, ns.format) if ns.format else json.dumps(doc, indent=2))
    return 0


def _names_command(
    prog: str,
    action: Callable[[argparse.Namespace, str], None],
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
) -> Callable[[RuntimeConfig, list[str]], int]:
    def command(cfg: RuntimeConfig, argv: list[str]) -> int:
        parser = _Parser(prog=f"pycni-run {prog}")
        if extra:
            extra(parser)
        parser.add_argument("names", nargs="+")
        ns = parser.parse_args(argv)
        ns.cfg = cfg
        failed = 0
        for name in ns.names:
            try:
                action(ns, name)
                print(name)
            except RunError as err:
                print(f"pycni-run: {err}", file=sys.stderr)
                failed = err.code
        return failed

    return command


def _stop(ns: argparse.Namespace, name: str) -> None:
    from pycni_run import lifecycle

    lifecycle.stop(ns.cfg, name, ns.time)


def _kill(ns: argparse.Namespace, name: str) -> None:
    from pycni_run import lifecycle

    text = ns.signal.upper().removeprefix("SIG")
    try:
        sig = int(text) if text.isdigit() else int(signal.Signals[f"SIG{text}"])
    except KeyError:
        raise RunError(f"invalid signal {ns.signal!r}") from None
    lifecycle.kill(ns.cfg, name, sig)


def _rm(ns: argparse.Namespace, name: str) -> None:
    from pycni_run import lifecycle

    lifecycle.remove(ns.cfg, name, force=ns.force)


def cmd_logs(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import state

    parser = _Parser(prog="pycni-run logs")
    parser.add_argument("name")
    ns = parser.parse_args(argv)
    st = state.load(cfg.containers_dir, ns.name)
    if not st.log_path:
        raise RunError(f"{ns.name} was not started with -d: its output went to the terminal")
    try:
        with open(st.log_path, "rb") as f:
            sys.stdout.buffer.write(f.read())
    except FileNotFoundError:
        pass
    sys.stdout.flush()
    return 0


def cmd_netns(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import netlinks

    parser = _Parser(prog="pycni-run netns")
    sub = parser.add_subparsers(dest="verb", required=True)
    link = sub.add_parser("link", help="bind-mount NAME's netns at <netns_dir>/LINK")
    link.add_argument("name")
    link.add_argument("link", nargs="?")
    unlink = sub.add_parser("unlink")
    unlink.add_argument("link")
    ns = parser.parse_args(argv)
    if ns.verb == "link":
        print(netlinks.link(cfg, ns.name, ns.link))
    else:
        netlinks.unlink(cfg, ns.link)
    return 0


def cmd_network(cfg: RuntimeConfig, argv: list[str]) -> int:
    """`pycni network`'s commands, on this runtime's conf dir, plugins, cache and state, and
    `connect`/`disconnect` of a running container."""
    if argv[:1] in (["connect"], ["disconnect"]):
        return _network_connection(cfg, argv)
    from pycni.network.cli import main as network_main

    return network_main(
        argv,
        prog="pycni-run network",
        config_file=Path(cfg.source) if cfg.source else None,
        defaults={"conf_dir": cfg.conf_dir, "cni_path": cfg.cni_path,
                  "cache_dir": cfg.cni_cache_dir, "state_dir": cfg.state_dir},
        env={},  # NETCONFPATH/CNI_PATH are cnitool's, not the runtime's
        usage_status=EXIT_RUNTIME,
    )


def _network_connection(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import netconnect

    if os.geteuid() != 0:
        raise RunError(f"pycni-run network {argv[0]} needs root (CNI ADD/DEL in a netns)")
    return netconnect.command(cfg, argv, _Parser(prog=f"pycni-run network {argv[0]}"))


def cmd_daemon(_cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import warm

    return warm.serve(argv)


def cmd_install_client(_cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run.entry import install_client

    parser = _Parser(prog="pycni-run install-client")
    parser.add_argument("directory", nargs="?", default="/usr/local/bin")
    print(install_client(parser.parse_args(argv).directory))
    return 0


def _image_command(name: str) -> Callable[[RuntimeConfig, list[str]], int]:
    def command(cfg: RuntimeConfig, argv: list[str]) -> int:
        from pycni_run.images import commands

        return commands.HANDLERS[name](cfg, argv)

    return command


HANDLERS: Final[dict[str, Callable[[RuntimeConfig, list[str]], int]]] = {
    "run": cmd_run,
    "exec": cmd_exec,
    "ps": cmd_ps,
    "inspect": cmd_inspect,
    "stop": _names_command("stop", _stop, lambda p: p.add_argument("-t", "--time", type=float)),
    "kill": _names_command(
        "kill", _kill, lambda p: p.add_argument("-s", "--signal", default="KILL")
    ),
    "rm": _names_command("rm", _rm, lambda p: p.add_argument("-f", "--force", action="store_true")),
    "logs": cmd_logs,
    "netns": cmd_netns,
    "network": cmd_network,
    "daemon": cmd_daemon,
    "install-client": cmd_install_client,
    **{name: _image_command(name) for name in ("load", "images", "image", "rmi")},
}

USAGE: Final = """usage: pycni-run [GLOBAL OPTIONS] COMMAND ...
       pycni-run [GLOBAL OPTIONS] [RUN OPTIONS] IMAGE [CMD...]   (same as `run`)

commands: run, exec, ps, inspect, stop, kill, rm, logs, netns link|unlink,
          network create|ls|inspect|rm|prune (as `pycni network`),
          load [-i FILE|DIR], images, image inspect|ls|rm|load, rmi [-f],
          network connect [--ip IP] [--ip6 IP] [--alias A]... NETWORK CONTAINER,
          network disconnect [-f] NETWORK CONTAINER,
          daemon [--socket PATH] (the warm runtime daemon, foreground), install-client [DIR]
global options: --config FILE, --state-dir, --storage-dir, --image-store, --netns-dir,
                --cni-path DIR[:DIR], --conf-dir, --cni-cache-dir, --cgroup-parent
"""


def _dispatch(argv: list[str], plugin_runner: PluginRunner | None) -> int:
    settings, rest = split_global_options(argv)
    if not rest or rest[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if rest else EXIT_RUNTIME
    config_file = settings.pop("config", None)
    cfg = load_config(Path(config_file) if config_file else None).with_overrides(settings)
    cfg = replace(cfg, plugin_runner=plugin_runner)
    command, args = (rest[0], rest[1:]) if rest[0] in COMMANDS else ("run", rest)
    if command in ("run", "exec", "stop", "kill", "rm", "netns", "daemon", "load", "rmi"):
        _require_privileges()
    return HANDLERS[command](cfg, args)


# What pycni-run cannot work without: namespaces and mounts, and the CNI plugins' netlink.
_REQUIRED_CAPABILITIES: Final = {"CAP_SYS_ADMIN": 21, "CAP_NET_ADMIN": 12}


def _require_privileges() -> None:
    """Root with the capabilities it needs, said up front in one line: a root process whose
    capabilities were dropped would otherwise fail somewhere midway with a traceback."""
    if os.geteuid() != 0:
        raise RunError("pycni-run needs root (namespaces, cgroups, mounts)")
    from pycni.server.privileges import UnknownCaller, myself

    try:
        effective = myself().privileges.effective
    except UnknownCaller:
        return  # /proc cannot tell here: the kernel will say what is missing
    missing = [name for name, bit in _REQUIRED_CAPABILITIES.items() if not effective >> bit & 1]
    if missing:
        raise RunError(f"pycni-run needs root with {' and '.join(missing)}; this process "
                       "lacks them (its capabilities were dropped)")


def main(argv: Sequence[str] | None = None, *, plugin_runner: PluginRunner | None = None) -> int:
    """``pycni-run``'s commands; ``plugin_runner``: how pycni's own CNI plugins run (None:
    forked; the daemon's worker passes in-process)."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv), plugin_runner)
    except RunError as err:
        print(f"pycni-run: {err}", file=sys.stderr)
        return err.code
    except PermissionError as err:  # a privilege the up-front check does not know about
        print(f"pycni-run: {err}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pycni-run inspect web | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _entry() -> Any:  # pragma: no cover - `python -m pycni_run.cli`
    sys.exit(main())


if __name__ == "__main__":
    _entry()
