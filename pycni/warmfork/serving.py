"""A warm server's process around its loop: standard descriptors, its log, the warm heap
frozen, and starting as a supervised server or as one started on demand (``started``)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from typing import Any

from pycni.warmfork.loop import WarmServer
from pycni.warmfork.started import OnDemand, retire

__all__ = ["ensure_std_fds", "freeze_heap", "log_to_stderr", "run"]


def ensure_std_fds() -> None:
    """Keep 0-2 open, so descriptors received from callers are always >= 3."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def log_to_stderr(log: logging.Logger, name: str, level: str) -> None:
    """``log`` (the server's own logger only: pyroute2's debug chatter stays off) on stderr,
    each line marked with ``name``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False


def freeze_heap() -> None:
    """Keep the warm heap out of every worker's garbage collections (fewer copied pages)."""
    gc.collect()
    gc.freeze()


def run(server: WarmServer[Any, Any], *, started: OnDemand | None, what: str) -> int:
    """Serve in the foreground: as a server started on demand (``started``), else as the one a
    supervisor runs, which one started on demand gives way to (``started.retire``)."""
    if started is None and retire(server.socket_path):
        server.log.info("the %s started on demand at %s gave way to this one", what,
                        server.socket_path)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(None if started is None else started.listening)
    if started is not None:
        started.stopped()
    return 0
