"""A container's end: waiting for it, stopping, killing and removing it, and the teardown.

``teardown`` is the mirror image of ``lifecycle.start`` (kill, CNI DEL, unpin, remove the
cgroup), best-effort and idempotent, collecting errors instead of stopping at the first one,
each step recorded in the state as it is done, so the monitor (``finish``), ``stop`` and
``rm -f`` (after the monitor was killed) can all run it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from pycni_run import cgroups, console, network, process, rootfs, state
from pycni_run.config import RuntimeConfig
from pycni_run.errors import RunError, warn
from pycni_run.state import ContainerState

__all__ = ["finish", "finish_named", "kill", "remove", "stop", "teardown", "wait_container"]


def _step(errors: list[str], what: str, fn: Callable[[], object]) -> bool:
    try:
        fn()
    except (RunError, OSError) as err:
        errors.append(f"{what}: {err}")
        return False
    return True


def teardown(cfg: RuntimeConfig, st: ContainerState) -> list[str]:
    """Kill, CNI DEL, unpin, remove the cgroup; each step recorded when done. Errors, if any."""
    errors: list[str] = []
    cg = cgroups.Cgroup.from_dict(st.cgroup) if st.cgroup else None
    st.pid.signal(signal.SIGKILL)
    if cg is not None:
        _step(errors, "kill", lambda: cgroups.kill_all(cg))
    for att in reversed(list(st.networks)):
        if _step(errors, f"CNI DEL {att.network}", lambda: network.detach(cfg, st, att)):  # noqa: B023
            st.networks.remove(att)
    for link in list(st.links):
        if _step(errors, f"unlink {link}", lambda: network.unpin_netns(link)):  # noqa: B023
            st.links.remove(link)
    if st.netns_path and _step(errors, "unpin netns", lambda: network.unpin_netns(st.netns_path)):
        st.netns_path = ""
    if cg is not None and _step(errors, "remove cgroup", lambda: cgroups.remove(cg)):
        st.cgroup = None
    return errors


def _reload(cfg: RuntimeConfig, st: ContainerState) -> ContainerState | None:
    try:
        return state.load(cfg.containers_dir, st.name)
    except RunError:
        return None


def finish(cfg: RuntimeConfig, st: ContainerState, code: int | None) -> None:
    """The container's init is gone: tear down, record the exit, remove if --rm."""
    finish_named(cfg, st.name, st.id, code)


def finish_named(cfg: RuntimeConfig, name: str, container_id: str, code: int | None) -> None:
    """``finish`` for the container called ``name`` if it is still the one with that id."""
    with contextlib.suppress(RunError), state.locked(cfg.containers_dir, name):
        try:
            current = state.load(cfg.containers_dir, name)
        except RunError:
            return  # never claimed, or removed already
        if current.id != container_id:
            return  # rm -f got here first
        errors = teardown(cfg, current)
        for err in errors:
            warn(err)
        if current.status != "exited":
            current.status, current.exit_code, current.finished = "exited", code, time.time()
        current.error = "; ".join(errors)
        if current.auto_remove and not errors:
            rootfs.remove_layers(current.storage)
            state.release(cfg.containers_dir, current.name)
            return
        state.save(cfg.containers_dir, current)


def wait_container(
    cfg: RuntimeConfig,
    st: ContainerState,
    *,
    master: int | None,
    stdin_fd: int | None,
    stdout_fd: int = 1,
) -> int:
    """Relay the pty (if any), wait for the init, tear everything down; its exit code.
    Signals have been forwarded to the init since ``start`` made it."""
    code: int | None = None
    try:
        if master is not None:
            with (
                console.raw_terminal(stdin_fd) if stdin_fd is not None else contextlib.nullcontext()
            ):
                console.relay(master, stdin_fd=stdin_fd, stdout_fd=stdout_fd)
            os.close(master)
        code = process.wait_exit(st.pid.pid)
    finally:
        finish(cfg, st, code)
    return code


def _settle(cfg: RuntimeConfig, st: ContainerState, code: int | None) -> None:
    """After the init died: let its monitor finish; if the monitor is gone, finish for it."""
    if st.monitor.wait_gone(15.0):
        current = _reload(cfg, st)
        if current is not None and current.id == st.id and current.status != "exited":
            finish(cfg, current, code)


def stop(cfg: RuntimeConfig, name: str, timeout: float | None = None) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` (Docker's stop); then the teardown ran."""
    st = state.load(cfg.containers_dir, name)
    code = None
    grace = cfg.stop_timeout if timeout is None else timeout
    if st.pid.signal(signal.SIGTERM) and not st.pid.wait_gone(grace):
        _kill_all(st)
        st.pid.wait_gone(5.0)
        code = 128 + signal.SIGKILL
    _settle(cfg, st, code)


def _kill_all(st: ContainerState) -> None:
    st.pid.signal(signal.SIGKILL)
    if st.cgroup:
        cgroups.kill_all(cgroups.Cgroup.from_dict(st.cgroup))


def kill(cfg: RuntimeConfig, name: str, sig: int = signal.SIGKILL) -> None:
    st = state.load(cfg.containers_dir, name)
    if not st.pid.signal(sig):
        raise RunError(f"container {name} is not running")


def remove(cfg: RuntimeConfig, name: str, *, force: bool = False) -> None:
    """``rm [-f]``: also recovers a container whose runtime was killed (``-f``)."""
    st = state.load(cfg.containers_dir, name)
    if st.pid.alive() or (st.status in ("created", "running") and st.monitor.alive()):
        if not force:
            raise RunError(f"cannot remove running container {name}: stop it or use rm -f")
        if st.pid.alive():
            _kill_all(st)
            st.pid.wait_gone(5.0)
        st.monitor.wait_gone(15.0)
    if not os.path.isdir(state.container_dir(cfg.containers_dir, name)):
        return  # its monitor removed it (--rm)
    with state.locked(cfg.containers_dir, name):
        current = _reload(cfg, st)
        if current is None:
            return
        errors = teardown(cfg, current)
        if errors:
            state.save(cfg.containers_dir, current)
            raise RunError(f"could not fully remove {name}: " + "; ".join(errors))
        rootfs.remove_layers(current.storage)
    state.release(cfg.containers_dir, name)
