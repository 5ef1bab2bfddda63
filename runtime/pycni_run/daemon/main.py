"""Starting the daemon: import and warm everything once, then serve in the foreground.

Every worker is a fork of this process, so what is imported and warmed here is what a
``pycni-run`` through the daemon never pays for: the runtime's modules (argparse, json, yaml,
dataclasses), the CNI invoker, and every pycni plugin with pyroute2 and the firewall backend
(``pycni.plugins.preload``, run in a private network namespace of its own), since plugins run
in the worker (``pycni.plugins.runner.IN_PROCESS``) rather than as executables.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import time
from typing import Final

from pycni.plugins.preload import preload
from pycni.warmfork import serving, started
from pycni.warmfork.warmup import HotPages
from pycni_run.daemon.service import DEFAULT_SOCKET, Daemon, log

__all__ = ["preload_runtime", "serve"]

SOCKET_ENV: Final = "PYCNI_RUN_SOCKET"
_RUNTIME_MODULES: Final = (
    "pycni_run.cli",
    "pycni_run.launch",
    "pycni_run.lifecycle",
    "pycni_run.teardown",
    "pycni_run.enter",
    "pycni_run.named_netns",
    "pycni_run.views",
    "pycni_run.console",
    "pycni_run.seccomp_filter",  # libseccomp: ~17 ms to import, paid here once
    "pycni.cni.invoke",
    "pycni.cni.conf",
    "pycni.cni.cache",
    "pycni_run.netconnect",
    "pycni.network.attach",  # --network, connect, disconnect
    "pycni.network.cli",  # `pycni-run network ...`
    "pycni.network.config",
    "pycni.network.manager",
    "pycni.network.report",
    "pycni.ipam.allocator",  # check_request: --ip against the ranges
    "pycni.ipam.store",
    "pycni.install",  # plugins and default networks where `pycni install` never ran
    "yaml",
)


def preload_runtime() -> float:
    """Import the runtime and the plugins, warm them; seconds spent."""
    started = time.monotonic()
    for name in _RUNTIME_MODULES:
        importlib.import_module(name)
    _warm_parsers()
    _warm_security()
    preload(log)  # plugins, pyroute2, nft
    serving.freeze_heap()
    return time.monotonic() - started


def _warm_parsers() -> None:
    """argparse and the run parser's first use (lazily compiled regexes, gettext)."""
    from pycni_run import cli

    with contextlib.suppress(Exception):
        cli.build_spec(*cli.parse_run_args(["--net=none", "--rm", "busybox", "true"]))
    with contextlib.suppress(Exception):
        cli.stays_local(["exec", "-i", "x", "true"])


def _warm_security() -> None:
    """The default profile's seccomp program for the default capability set, compiled once
    (~12 ms): ``compile_program`` is cached, so every worker's default run reuses it."""
    from pycni_run import security

    with contextlib.suppress(Exception):
        security.resolve(security.SecurityOptions())


def serve(argv: list[str]) -> int:
    """``pycni-run daemon [--socket PATH] [--log-level LEVEL]``, in the foreground (or, with
    ``--on-demand``, as ``pycni.autostart`` starts it for a client that found none)."""
    parser = argparse.ArgumentParser(prog="pycni-run daemon")
    parser.add_argument("--socket", default=os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)
    parser.add_argument("--log-level", default="INFO")
    started.add_arguments(parser)
    ns = parser.parse_args(argv)
    on_demand = started.OnDemand.from_namespace(ns)
    serving.ensure_std_fds()
    serving.log_to_stderr(log, "pycni-run-daemon", ns.log_level)
    log.info("preloaded in %.0f ms", preload_runtime() * 1000)
    daemon = Daemon(ns.socket, _standby_parent(), warm=HotPages.of_this_heap().warm,
                    idle_timeout=None if on_demand is None else on_demand.idle_timeout)
    return serving.run(daemon, started=on_demand, what="daemon")


def _standby_parent() -> str | None:
    """Where spares park their standby init: the configured ``cgroup_parent``, so that a run
    from the daemon's own cgroup with the daemon's config adopts it (``standby``)."""
    from pycni_run.config import load_config
    from pycni_run.errors import RunError

    try:
        return load_config().cgroup_parent
    except RunError as err:
        log.warning("no standby init for spares: %s", err)
        return None
