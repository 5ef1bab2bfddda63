"""`pycni serve`: warm the interpreter once, then run the loop in the foreground."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import sys
import time
from typing import Final

from pycni.plugins import PLUGINS
from pycni.server.loop import DEFAULT_TIMEOUT, Server

__all__ = ["DEFAULT_SOCKET", "preload", "serve"]

DEFAULT_SOCKET: Final = "/run/pycni/pycni.sock"

# What the plugins import lazily (firewall backends are chosen at run time): import it all once
# here so no worker pays for it. Missing optional modules are skipped.
_WARM_MODULES: Final = (
    "pyroute2",
    "netaddr",
    "pycni.cni.delegate",
    "pycni.firewall.nftables",
    "pycni.firewall.nft_lib",
    "pycni.firewall.nft_masq",
    "pycni.firewall.iptables",
    "pycni.firewall.none",
)

log = logging.getLogger("pycni.server")


def preload() -> float:
    """Import every plugin module and its heavy dependencies; seconds spent."""
    started = time.monotonic()
    for name in (*_WARM_MODULES, *(info.module for info in PLUGINS.values())):
        try:
            importlib.import_module(name)
        except ImportError as err:
            log.warning("not preloaded: %s (%s)", name, err)
    gc.collect()
    gc.freeze()  # keep the warm heap out of every worker's collections (fewer copied pages)
    return time.monotonic() - started


def _ensure_std_fds() -> None:
    """Keep 0-2 open, so descriptors received from callers are always >= 3."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def serve(*, socket_path: str = DEFAULT_SOCKET, timeout: float = DEFAULT_TIMEOUT,
          log_level: str = "INFO") -> int:
    _ensure_std_fds()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s pycni-server %(levelname)s %(message)s"))
    log.addHandler(handler)  # our logger only: pyroute2's debug chatter stays off
    log.setLevel(log_level.upper())
    log.propagate = False
    log.info("preloaded plugins %s in %.0f ms", sorted(PLUGINS), preload() * 1000)
    if os.geteuid() != 0:
        log.warning("not running as root: workers cannot join callers' namespaces")
    server = Server(socket_path, timeout=timeout)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0
