"""`run` in the foreground (this process is the monitor) or detached (a forked monitor).

The monitor is the process that waits on the container's init and tears everything down when
it exits; with ``-d`` it is a child in its own session whose stdio is the container log, and it
tells the caller over a pipe whether the container started. In the foreground the caller is
the monitor, and a ``watchdog`` finishes the container for it if it is killed.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pycni_run import lifecycle, teardown, watchdog
from pycni_run.config import RuntimeConfig
from pycni_run.errors import EXIT_RUNTIME, RunError
from pycni_run.process import Stdio
from pycni_run.spec import ContainerSpec
from pycni_run.state import ContainerState

__all__ = ["run_detached", "run_foreground"]

LOG_FILE = "container.log"
RUNTIME_LOG = "runtime.log"


def run_foreground(cfg: RuntimeConfig, spec: ContainerSpec) -> int:
    stdin = 0 if spec.interactive else None

    def stdio(_st: ContainerState, _dir: str) -> Stdio:
        return Stdio(stdin=stdin, tty=spec.tty)

    guard = watchdog.start(cfg, spec.name, spec.id)
    try:
        # Undone by itself if it fails; the watchdog knows the init before it may exec.
        st, master = lifecycle.start(cfg, spec, stdio, on_init=guard.watch)
        return teardown.wait_container(cfg, st, master=master, stdin_fd=stdin)
    finally:
        guard.release()


def _open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)


def _monitor(cfg: RuntimeConfig, spec: ContainerSpec, report: int) -> int:
    """In the forked monitor: start, report to the caller, then wait and tear down."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never hold the caller's pipes: `pycni-run -d` must return
        os.dup2(null, fd)
    keep_open: list[int] = []

    def stdio(st: ContainerState, directory: str) -> Stdio:
        st.log_path = os.path.join(directory, LOG_FILE)
        log = _open_log(st.log_path)
        stdin = None
        if spec.interactive and not spec.tty:  # -di: a stdin that stays open, never written
            stdin, writer = os.pipe()
            keep_open.append(writer)
        return Stdio(stdin=stdin, stdout=log, stderr=log, tty=spec.tty)

    try:
        st, master = lifecycle.start(cfg, spec, stdio)
    except RunError as err:
        os.write(report, json.dumps({"error": err.msg, "code": err.code}).encode())
        return err.code
    os.dup2(_open_log(os.path.join(os.path.dirname(st.log_path), RUNTIME_LOG)), 2)
    os.write(report, json.dumps({"id": st.id}).encode())
    os.close(report)
    out = _open_log(st.log_path)
    return teardown.wait_container(cfg, st, master=master, stdin_fd=None, stdout_fd=out)


def run_detached(cfg: RuntimeConfig, spec: ContainerSpec) -> int:
    """Fork the monitor; print the container id once it runs (or the error, with its code)."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:
        code = EXIT_RUNTIME
        try:
            os.close(read_end)
            code = _monitor(cfg, spec, write_end)
        finally:
            os._exit(code)
    os.close(write_end)
    # One write below PIPE_BUF is atomic: one read gets it. Not "read to EOF": a --init
    # reaper inside the container holds a copy of the write end for its whole life.
    try:
        data = os.read(read_end, 65536)
    finally:
        os.close(read_end)
    try:
        doc: dict[str, Any] = json.loads(data)
    except ValueError:
        raise RunError("the container monitor died before reporting") from None
    if "error" in doc:
        raise RunError(str(doc["error"]), int(doc.get("code", EXIT_RUNTIME)))
    print(doc["id"])
    return 0
