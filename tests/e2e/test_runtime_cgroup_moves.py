"""``pycni_run.cgroups.enter`` on the real kernel: a process that moves itself moves whole.

A single-threaded caller moves its one thread ("0" to each v1 ``tasks`` file: the kernel's
cheap path, no global lock); a caller with another thread moves as a process
(``cgroup.procs``), so no thread of it is left behind. Each case runs in a forked child, in
cgroups of its own under a throwaway parent, removed whatever happens.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator

import pytest
from pycni_run import cgroups
from pycni_run.spec import Limits

from tests.e2e.runtime_support import sweep_cgroups

pytestmark = [pytest.mark.root]


@pytest.fixture
def cg() -> Iterator[cgroups.Cgroup]:
    if cgroups.detect_version() != 1:
        pytest.skip("the self-move path is cgroup v1's (this VM's)")
    parent = f"pycni-test-moves-{uuid.uuid4().hex[:8]}"
    made = cgroups.create("c", Limits(), parent=parent)
    try:
        yield made
    finally:
        sweep_cgroups(parent)


def _listed(cg: cgroups.Cgroup, name: str) -> list[set[int]]:
    """The ids in file ``name`` of each of the cgroup's directories."""
    out = []
    for path in cg.paths.values():
        with open(os.path.join(path, name)) as f:
            out.append({int(x) for x in f.read().split()})
    return out


def _child_that_enters(cg: cgroups.Cgroup, *, threads: int) -> tuple[int, int]:
    """A forked child with ``threads`` extra threads that enters ``cg`` and then waits; its
    pid and the read end of a pipe that says "entered" (or why not)."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, ended by os._exit
        code = 0
        try:
            os.close(ready_r)
            hold = threading.Event()
            for _ in range(threads):
                threading.Thread(target=hold.wait, daemon=True).start()
            cgroups.enter(cg)
            os.write(ready_w, b"entered")
            signal.pause()
        except BaseException as err:  # reported to the test through the pipe
            os.write(ready_w, repr(err).encode()[:500])
            code = 1
        os._exit(code)
    os.close(ready_w)
    return pid, ready_r


def _end(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.mark.parametrize("threads", [0, 2])
def test_a_process_that_enters_its_cgroup_moves_with_every_thread(
    cg: cgroups.Cgroup, threads: int
) -> None:
    pid, ready = _child_that_enters(cg, threads=threads)
    try:
        try:
            said = os.read(ready, 500)  # the child holds the pipe open: one read, no EOF
        finally:
            os.close(ready)
        assert said == b"entered"
        tids = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
        assert len(tids) == 1 + threads
        assert all(listed == {pid} for listed in _listed(cg, "cgroup.procs"))
        assert all(listed == tids for listed in _listed(cg, "tasks"))
    finally:
        _end(pid)
