"""`pycni-run`: Docker-style commands. ``pycni-run [OPTIONS] IMAGE CMD...`` means ``run``.

Exit statuses follow Docker: the command's own code, 125 when the runtime fails (bad flags
included), 126 when the command cannot be executed, 127 when it is not found. This module
picks the command (``commands``) after the global options; ``run``'s and ``exec``'s command
lines are ``run_options``'. The daemon is not among them: the entry point dispatches it
(``entry``), since its workers run this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pycni_run.commands import HANDLERS
from pycni_run.config import load_config
from pycni_run.errors import EXIT_RUNTIME, RunError
from pycni_run.run_options import (
    build_spec,
    exec_parser,
    parse_run_args,
    run_parser,
    split_at_positional,
)

if TYPE_CHECKING:
    from pycni.cni.runner import PluginRunner

__all__ = [
    "build_spec",
    "main",
    "parse_run_args",
    "require_privileges",
    "split_global_options",
    "stays_local",
]

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
        parser = run_parser() if command == "run" else exec_parser()
        options, _ = split_at_positional(parser, args)
        if any(o in ("-h", "--help") for o in options):
            return True  # argparse prints the help and exits: nothing to gain from the daemon
        return bool(parser.parse_args(options).tty)
    except RunError:
        return False


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
        require_privileges()
    elif command == "network" and args[:1] in (["connect"], ["disconnect"]):
        require_privileges()  # CNI ADD/DEL in a running container's netns
    return HANDLERS[command](cfg, args)


# What pycni-run cannot work without: namespaces and mounts, and the CNI plugins' netlink.
_REQUIRED_CAPABILITIES: Final = {"CAP_SYS_ADMIN": 21, "CAP_NET_ADMIN": 12}


def require_privileges() -> None:
    """Root with the capabilities it needs, said up front in one line: a root process whose
    capabilities were dropped would otherwise fail somewhere midway with a traceback."""
    if os.geteuid() != 0:
        raise RunError("pycni-run needs root (namespaces, cgroups, mounts)")
    from pycni.warmfork.privileges import UnknownCaller, myself

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
