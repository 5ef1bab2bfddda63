"""The runtime daemon started on demand (issue #18): a ``pycni-run`` that finds no daemon
starts one and runs its own command in-process; the commands after it go through the daemon.

The same sandboxes as tests/e2e/test_autostart.py (its rules are pycni.autostart's, tested
there once); here what differs for the runtime: a killed daemon's running command carries on
(its worker reports to its client itself), and `pycni-run daemon` run by hand takes over.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.autostart_support import (
    Starts,
    answers,
    cmdline,
    open_starts,
    wait_gone,
)
from tests.e2e.runtime_support import RuntimeSandbox, comm, descendants, until

pytestmark = [pytest.mark.root, pytest.mark.runtime_sandbox]

PARALLEL = 20


@pytest.fixture
def starts(box: RuntimeSandbox, cni_bin: Path) -> Iterator[Starts]:
    with open_starts(box, cni_bin, "daemon") as found:
        yield found


def _running_in(daemon: int, command: str) -> bool:
    return any(comm(pid) == command for pid in descendants(daemon) if os.path.exists(
        f"/proc/{pid}"))


def test_the_first_commands_start_one_daemon_and_later_ones_use_it(
    starts: Starts, tmp_path: Path
) -> None:
    script = (f'for i in $(seq {PARALLEL}); do "$0" ps -a > "$1/out.$i" 2>&1 & done; wait')
    ran = starts.box.sh("sh", "-c", script, starts.client, str(tmp_path), env=starts.env())
    assert ran.code == 0, ran.stderr
    for i in range(1, PARALLEL + 1):
        assert (tmp_path / f"out.{i}").read_text().split()[:2] == ["NAME", "ID"]
    daemon = starts.listening()
    until("no other daemon left", lambda: starts.servers() == [daemon])
    assert starts.starts_logged() == 1, starts.log.read_text()

    later = starts.box.spawn(starts.client, "run", "--rm", "--net=none", "busybox", "sleep",
                             "5", env=starts.env())
    until("the later command's container under the daemon",
          lambda: _running_in(daemon, "sleep"))
    out, err = later.communicate(timeout=120)
    assert later.returncode == 0, out + err


def test_an_idle_daemon_exits_and_the_next_command_starts_another(starts: Starts) -> None:
    assert starts.pycni_run("ps", "-a", PYCNI_IDLE_TIMEOUT="3").code == 0
    first = starts.listening()
    wait_gone(first)
    assert not starts.socket.exists()
    assert "no command for 3s: stopping" in starts.log.read_text()
    assert starts.pycni_run("ps", "-a").code == 0
    assert starts.listening() != first


def test_a_killed_daemons_command_carries_on_and_the_next_starts_another(
    starts: Starts,
) -> None:
    assert starts.pycni_run("ps", "-a").code == 0
    first = starts.listening()
    command = starts.box.spawn(starts.client, "run", "--rm", "--net=none", "busybox", "sh",
                               "-c", "sleep 3; exit 7", env=starts.env())
    until("the command's container under the daemon", lambda: _running_in(first, "sleep"))
    os.kill(first, signal.SIGKILL)
    out, err = command.communicate(timeout=120)
    assert command.returncode == 7, out + err
    assert starts.pycni_run("ps", "-a").code == 0
    assert starts.listening() != first


def test_a_daemon_run_by_hand_takes_over(starts: Starts) -> None:
    assert starts.pycni_run("ps", "-a").code == 0
    on_demand = starts.listening()
    by_hand = starts.box.spawn(sys.executable, "-m", "pycni_run", "daemon", "--socket",
                               str(starts.socket), env={**starts.env(), "PYCNI_AUTOSTART": "0"})
    try:
        wait_gone(on_demand)
        until("the daemon run by hand listening", lambda: answers(starts.socket))
        assert "--on-demand" not in cmdline(descendants(by_hand.pid)[0])
        assert starts.servers() == []
    finally:
        kids = descendants(by_hand.pid)
        if kids:
            os.kill(kids[0], signal.SIGTERM)
        _, log = by_hand.communicate(timeout=120)
    assert "gave way to this one" in log
