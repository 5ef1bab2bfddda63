"""pycni.warmfork.ondemand: a daemon started once, detached from its caller in every way
that counts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.warmfork import ondemand


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "run"
    yield directory
    log = directory / "daemon.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        if line.startswith("started "):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[1]), signal.SIGTERM)


def _service(run_dir: Path, *argv: str) -> ondemand.Service:
    sock = str(run_dir / "daemon.sock")
    return ondemand.Service(
        name="test-daemon", socket_path=sock, log_path=str(run_dir / "daemon.log"),
        argv=argv or ondemand.python_argv("tests.unit.ondemand_daemon", sock),
        env={"ONDEMAND_TEST": "1"}, start_timeout=30,
    )


def _state(conn: socket.socket) -> dict[str, Any]:
    with conn:
        conn.settimeout(10)
        doc: dict[str, Any] = json.loads(conn.recv(65536))
        return doc


def _starts(run_dir: Path) -> list[str]:
    return [line for line in (run_dir / "daemon.log").read_text().splitlines()
            if line.startswith("started ")]


def test_the_daemon_is_detached_from_its_caller(run_dir: Path) -> None:
    leak_r, leak_w = os.pipe()  # inheritable descriptors of the caller must not reach it
    os.set_inheritable(leak_r, True)
    try:
        state = _state(ondemand.ensure(_service(run_dir)))
        leaked = os.readlink(f"/proc/self/fd/{leak_r}")
    finally:
        os.close(leak_r)
        os.close(leak_w)
    assert state["pid"] != os.getpid()
    assert state["ppid"] != os.getpid()  # not our child: the middle process exited
    # A session of its own (setsid in the middle process), which it does not lead: it can
    # never acquire a controlling terminal.
    assert state["sid"] != os.getsid(0)
    assert state["sid"] != state["pid"]
    assert state["cwd"] == "/"
    assert state["fds"]["0"] == "/dev/null"
    assert state["fds"]["1"] == state["fds"]["2"] == str(run_dir / "daemon.log")
    others = {fd: target for fd, target in state["fds"].items() if fd not in ("0", "1", "2")}
    assert all(t.startswith("socket:") for t in others.values()), others
    assert leaked not in state["fds"].values()
    # (Python itself sets LC_CTYPE when it starts in the C locale: PEP 538's coercion.)
    env = {k: v for k, v in state["env"].items() if k != "LC_CTYPE"}
    assert env == {"PATH": ondemand.MINIMAL_PATH, "ONDEMAND_TEST": "1"}
    assert os.stat(run_dir).st_mode & 0o777 == 0o700


def test_a_running_daemon_is_reached_not_started_again(run_dir: Path) -> None:
    service = _service(run_dir)
    first = _state(ondemand.ensure(service))
    second = _state(ondemand.ensure(service))
    assert first["pid"] == second["pid"]
    assert len(_starts(run_dir)) == 1


def test_racing_callers_start_one_daemon(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service(run_dir)
    pids: list[int] = []
    errors: list[BaseException] = []
    all_found_none = threading.Barrier(4)
    real_connect = ondemand.connect
    first_try = threading.local()

    def connect(service: ondemand.Service, timeout: float = 5.0) -> socket.socket | None:
        found = real_connect(service, timeout)
        if not getattr(first_try, "done", False):  # every caller has found nobody first
            first_try.done = True
            all_found_none.wait(30)
        return found

    spawned: list[int] = []
    real_spawn = ondemand._spawn

    def spawn(service: ondemand.Service) -> int:
        spawned.append(real_spawn(service))
        return spawned[-1]

    monkeypatch.setattr(ondemand, "connect", connect)
    monkeypatch.setattr(ondemand, "_spawn", spawn)

    def call() -> None:
        try:
            pids.append(_state(ondemand.ensure(service))["pid"])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(pids)) == 1
    assert spawned == [pids[0]]  # one caller started it; the others found it running


def test_a_daemon_that_dies_at_start_reports_its_last_log_line(run_dir: Path) -> None:
    service = _service(run_dir, sys.executable, "-c",
                       "import sys; print('boom: no such config', file=sys.stderr); sys.exit(3)")
    started = time.monotonic()
    with pytest.raises(ondemand.StartError, match="boom: no such config"):
        ondemand.ensure(service)
    assert time.monotonic() - started < service.start_timeout  # noticed, not timed out


def test_a_directory_others_can_enter_is_refused_and_nothing_starts(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o755)
    run_dir.chmod(0o755)
    with pytest.raises(ondemand.StartError, match="accessible to others"):
        ondemand.ensure(_service(run_dir))
    assert not (run_dir / "daemon.log").exists()
    assert ondemand.connect(_service(run_dir)) is None
