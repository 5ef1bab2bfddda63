"""The resolver process: ``python -m pycni.dns --run-dir DIR --resolv-conf PATH``.

Started on demand by the plugin (``pycni.warmfork.ondemand``): detached, in the host's network
namespace, logging to ``<run dir>/resolver.log``. It rebuilds its state from the records
before it listens on its control socket, so whoever reaches it sees every attachment served.
SIGTERM or SIGINT: close every socket (those in container namespaces too) and exit.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from pycni import atomicfile
from pycni.dns.control import CONTROL_SOCKET, DEFAULT_RESOLV_CONF, PID_FILE
from pycni.dns.loop import Loop
from pycni.dns.records import DEFAULT_RUN_DIR, RecordStore
from pycni.dns.registry import Registry
from pycni.dns.service import ControlServer
from pycni.dns.upstream import Forwarder, ResolvConf
from pycni.warmfork import ondemand
from pycni.warmfork.listener import SocketInUse

__all__ = ["main"]

SWEEP_SECONDS = 5.0
log = logging.getLogger("pycni.dns")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pycni.dns",
                                     description="pycni's container name resolver")
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR,
                        help="control socket, records, pid file and log (0700)")
    parser.add_argument("--resolv-conf", default=DEFAULT_RESOLV_CONF,
                        help="where the upstream servers are read")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _write_pid(path: str) -> None:
    atomicfile.write(path, f"{os.getpid()}\n".encode())


def _stop_on_signals(loop: Loop) -> None:
    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        loop.stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def serve(run_dir: str, resolv_conf: str) -> None:
    ondemand.prepare_directory(run_dir)
    loop = Loop()
    registry = Registry(RecordStore(run_dir), loop, Forwarder(loop, ResolvConf(resolv_conf)))
    pid_file = os.path.join(run_dir, PID_FILE)
    _stop_on_signals(loop)
    try:
        registry.rebuild()
        control = ControlServer(os.path.join(run_dir, CONTROL_SOCKET), loop, registry)
        _write_pid(pid_file)
        log.info("serving (pid %d), upstreams from %s", os.getpid(), resolv_conf)
        loop.every(SWEEP_SECONDS, registry.sweep)
        try:
            loop.run()
        finally:
            control.close()
    finally:
        registry.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pid_file)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s pycni-dns[%(process)d] %(levelname)s %(message)s")
    problem = ""
    try:
        serve(args.run_dir, args.resolv_conf)
    except SocketInUse as err:
        problem = f"another resolver already serves {err}"
    except ondemand.StartError as err:
        problem = str(err)
    if problem:
        log.error("%s", problem)  # the last line of the log: what the starting plugin reports
        return 1
    return 0
