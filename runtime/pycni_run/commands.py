"""``pycni-run``'s commands, each ``(config, its arguments) -> exit status`` (``HANDLERS``);
``cli`` picks one. What a command needs beyond parsing is imported when it runs."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from pycni_run.config import RuntimeConfig
from pycni_run.errors import EXIT_RUNTIME, RunError
from pycni_run.run_options import build_spec, exec_parser, parse_run_args, split_at_positional
from pycni_run.spec import parse_env
from pycni_run.usage import UsageParser

__all__ = ["HANDLERS"]


def cmd_run(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import launch
    from pycni_run.images.use import resolve_spec

    spec = resolve_spec(cfg, build_spec(*parse_run_args(argv)))
    if spec.detach:
        return launch.run_detached(cfg, spec)
    return launch.run_foreground(cfg, spec)


def cmd_exec(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run.enter import exec_in

    parser = exec_parser()
    options, positionals = split_at_positional(parser, argv)
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

    parser = UsageParser(prog="pycni-run ps")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    ns = parser.parse_args(argv)
    rows = views.ps_rows(state.list_states(cfg.containers_dir), all_=ns.all)
    print("\n".join(r[0] for r in rows[1:]) if ns.quiet else views.render_table(rows))
    return 0


def cmd_inspect(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import state, views

    parser = UsageParser(prog="pycni-run inspect")
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
        parser = UsageParser(prog=f"pycni-run {prog}")
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
    from pycni_run import teardown

    teardown.stop(ns.cfg, name, ns.time)


def _kill(ns: argparse.Namespace, name: str) -> None:
    from pycni_run import teardown

    text = ns.signal.upper().removeprefix("SIG")
    try:
        sig = int(text) if text.isdigit() else int(signal.Signals[f"SIG{text}"])
    except KeyError:
        raise RunError(f"invalid signal {ns.signal!r}") from None
    teardown.kill(ns.cfg, name, sig)


def _rm(ns: argparse.Namespace, name: str) -> None:
    from pycni_run import teardown

    teardown.remove(ns.cfg, name, force=ns.force)


def cmd_logs(cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run import state

    parser = UsageParser(prog="pycni-run logs")
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
    from pycni_run import named_netns

    parser = UsageParser(prog="pycni-run netns")
    sub = parser.add_subparsers(dest="verb", required=True)
    link = sub.add_parser("link", help="bind-mount NAME's netns at <netns_dir>/LINK")
    link.add_argument("name")
    link.add_argument("link", nargs="?")
    unlink = sub.add_parser("unlink")
    unlink.add_argument("link")
    ns = parser.parse_args(argv)
    if ns.verb == "link":
        print(named_netns.link(cfg, ns.name, ns.link))
    else:
        named_netns.unlink(cfg, ns.link)
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

    return netconnect.command(cfg, argv, UsageParser(prog=f"pycni-run network {argv[0]}"))


def cmd_daemon(_cfg: RuntimeConfig, _argv: list[str]) -> int:
    """The daemon is the entry point's (``pycni_run.entry``): its workers run this module."""
    raise RunError("`daemon` is served by the pycni-run executable (`pycni-run daemon`, or "
                   "`python -m pycni_run daemon`), not by pycni_run.cli")


def cmd_install_client(_cfg: RuntimeConfig, argv: list[str]) -> int:
    from pycni_run.executable import install_client

    parser = UsageParser(prog="pycni-run install-client")
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
