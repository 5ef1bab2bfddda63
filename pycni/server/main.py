"""`pycni serve`: warm the interpreter once, then run the loop in the foreground."""

from __future__ import annotations

import logging
import os
from typing import Final

from pycni.plugins import PLUGINS
from pycni.plugins.preload import preload
from pycni.server.loop import DEFAULT_TIMEOUT, Server
from pycni.warmfork import serving
from pycni.warmfork.started import OnDemand
from pycni.warmfork.warmup import HotPages

__all__ = ["DEFAULT_SOCKET", "serve"]

DEFAULT_SOCKET: Final = "/run/pycni/pycni.sock"

log = logging.getLogger("pycni.server")


def serve(*, socket_path: str = DEFAULT_SOCKET, timeout: float = DEFAULT_TIMEOUT,
          log_level: str = "INFO", started: OnDemand | None = None) -> int:
    """Serve in the foreground; ``started``: as a server started on demand (``pycni.autostart``),
    else as the one a supervisor runs (which an on-demand one gives way to)."""
    serving.ensure_std_fds()
    serving.log_to_stderr(log, "pycni-server", log_level)
    log.info("preloaded plugins %s in %.0f ms", sorted(PLUGINS), preload(log) * 1000)
    if os.geteuid() != 0:
        log.warning("not running as root: workers cannot join callers' namespaces")
    # Spares copy the pages calls write, learned from the calls, in the idle class.
    server = Server(socket_path, timeout=timeout, warm=HotPages.of_this_heap().warm,
                    idle_timeout=None if started is None else started.idle_timeout)
    return serving.run(server, started=started, what="server")
