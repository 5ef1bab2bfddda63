"""Delegated IPAM: our own host-local runs in-process (no fork, no exec), anything else is
exec'd; the caller's process state is left as it was."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

from pycni.cni.delegate import delegate, delegate_add
from pycni.cni.errors import CNIError
from pycni.install import install
from pycni.plugins.runner import DELEGATES
from pycni.warmfork.child import forget_imports_of_other_threads


def _conf(data_dir: Path) -> bytes:
    return json.dumps({
        "cniVersion": "1.0.0", "name": "dnet", "type": "bridge",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.66.0.0/24"}]],
                 "dataDir": str(data_dir)},
    }).encode()


def _env(bin_dir: Path) -> dict[str, str]:
    return {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "dlg1", "CNI_NETNS": "/proc/1/ns/net",
            "CNI_IFNAME": "eth0", "CNI_PATH": str(bin_dir), "PATH": "/usr/bin:/bin"}


@pytest.fixture
def our_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    install(bin_dir=str(bin_dir), conf_dir=None)
    return bin_dir


def test_our_host_local_runs_in_process(our_bin: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise AssertionError("host-local must not be forked")

    monkeypatch.setattr(os, "fork", no_fork)
    environ, cwd = dict(os.environ), os.getcwd()
    fds = sorted(os.listdir("/proc/self/fd"))
    stdin, env = _conf(tmp_path / "ipam"), _env(our_bin)
    result = delegate_add("host-local", stdin=stdin, env=env, path=(str(our_bin),),
                          runner=DELEGATES)
    assert result.ips[0].address == "10.66.0.2/24"
    assert (tmp_path / "ipam" / "dnet" / "10.66.0.2").exists()
    delegate("host-local", command="DEL", stdin=stdin, env=env, path=(str(our_bin),),
             runner=DELEGATES)
    assert not (tmp_path / "ipam" / "dnet" / "10.66.0.2").exists()
    assert dict(os.environ) == environ
    assert os.getcwd() == cwd
    assert sorted(os.listdir("/proc/self/fd")) == fds  # the store lock is not left open


def test_in_process_error_is_reported_like_the_executable(our_bin: Path, tmp_path: Path) -> None:
    bad = json.dumps({"cniVersion": "1.0.0", "name": "dnet", "type": "bridge",
                      "ipam": {"type": "host-local"}}).encode()
    with pytest.raises(CNIError) as err:
        delegate_add("host-local", stdin=bad, env=_env(our_bin), path=(str(our_bin),),
                     runner=DELEGATES)
    assert err.value.msg.startswith("host-local: ")


def test_another_host_local_is_executed(tmp_path: Path) -> None:
    bin_dir = tmp_path / "other"
    bin_dir.mkdir()
    script = bin_dir / "host-local"
    script.write_text('#!/bin/sh\necho \'{"cniVersion": "1.0.0", "ips": '
                      '[{"address": "10.1.2.3/24"}]}\'\n')
    script.chmod(0o755)
    result = delegate_add("host-local", stdin=_conf(tmp_path / "ipam"), env=_env(bin_dir),
                          path=(str(bin_dir),), runner=DELEGATES)
    assert result.ips[0].address == "10.1.2.3/24"


def test_a_forked_plugin_writes_its_stderr_to_fd_2_whatever_sys_stderr_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's sys.stderr is fd 2, as an exec'd plugin's is: not the parent's object
    (here one on a descriptor the child closes), whose writes would fail there. Parallel
    callers share the list of children left to reap (threads)."""
    import io
    import threading

    from pycni.cni.runner import Outcome
    from pycni.plugins.forked import reap as reap_forked
    from pycni.plugins.forked import run_forked

    elsewhere = os.open(tmp_path / "parent-stderr", os.O_WRONLY | os.O_CREAT)
    monkeypatch.setattr("sys.stderr", io.TextIOWrapper(os.fdopen(elsewhere, "wb", 0)))
    conf = json.dumps({
        "cniVersion": "1.0.0", "name": "net", "type": "host-local",
        "ipam": {"type": "host-local", "subnet": "10.5.0.0/24",
                 "dataDir": str(tmp_path / "ipam")},
    }).encode()
    results: list[Outcome] = []

    def call(cid: str) -> None:
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid,
               "CNI_NETNS": str(tmp_path / "no-such-netns"),
               "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent",
               "PYCNI_FAILPOINTS": "hostlocal.add.after_reserve=kill"}
        results.append(run_forked("host-local", stdin=conf, env=env, timeout=30))

    threads = [threading.Thread(target=call, args=(f"c{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    for outcome in results:
        assert outcome.status == -9, (outcome.stdout, outcome.stderr)
        assert outcome.stdout == b""
        assert b"failpoint hostlocal.add.after_reserve: SIGKILL" in outcome.stderr
    reap_forked()


def test_reported_children_are_reaped_by_reap_forked(tmp_path: Path) -> None:
    """A forked plugin that reported its status is left exiting (not waited for); the
    runtime's reap_forked (every Invoker verb ends with it) leaves no zombie behind."""
    from pycni.plugins.forked import reap as reap_forked
    from pycni.plugins.forked import run_forked

    env = {"CNI_COMMAND": "VERSION"}
    for _ in range(3):
        outcome = run_forked("none", stdin=b'{"cniVersion":"1.0.0"}', env=env, timeout=30)
        assert outcome.status == 0
        assert b"supportedVersions" in outcome.stdout
    reap_forked()
    try:  # other children of pytest (a session's fork server) may be alive, not zombies
        zombie, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        zombie = 0
    assert zombie == 0


def test_a_forked_child_imports_what_another_thread_was_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread is inside a module's import (its body waits) when the main thread forks: the
    child, after ``forget_imports_of_other_threads``, imports that module afresh instead of
    waiting forever on the dead thread's import lock."""
    import signal
    import threading
    import types

    gate = types.ModuleType("pycni_test_gate")
    gate.PARENT = os.getpid()  # type: ignore[attr-defined]
    gate.EVENT = threading.Event()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycni_test_gate", gate)
    (tmp_path / "pycni_test_slow.py").write_text(
        "import os, pycni_test_gate as gate\n"
        "if os.getpid() == gate.PARENT:\n"
        "    gate.EVENT.wait(30)\n"
        "VALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importer = threading.Thread(target=importlib.import_module, args=("pycni_test_slow",))
    importer.start()
    try:
        deadline = time.monotonic() + 10
        while "pycni_test_slow" not in sys.modules:  # its body is running (and waiting)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - reports through its exit status
            signal.alarm(10)  # a hang ends as SIGALRM
            forget_imports_of_other_threads()
            module = importlib.import_module("pycni_test_slow")
            os._exit(0 if module.VALUE == 42 else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        gate.EVENT.set()
        importer.join()
        sys.modules.pop("pycni_test_slow", None)
    assert os.waitstatus_to_exitcode(status) == 0
