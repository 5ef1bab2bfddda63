"""Servers started on demand (issue #18): a plugin executable that finds no `pycni serve` starts
one and runs its own call in-process; the calls after it go through the server.

Each test runs in a runtime sandbox of its own (mount, net and pid namespaces: its callers are
the system's own there) with a private socket path; autostart is on only in the environment
of the callers these tests run. Every server is SIGKILLed by PID at the end of its test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.autostart_support import (
    LO_CONFIG,
    VERSION_STDIN,
    Starts,
    alive,
    answers,
    cmdline,
    open_starts,
    served_by,
    wait_gone,
)
from tests.e2e.runtime_support import Ran, RuntimeSandbox, descendants, sweep_cgroups, until
from tests.support import sched_policy

pytestmark = [pytest.mark.root, pytest.mark.runtime_sandbox]

PARALLEL = 20


@pytest.fixture
def starts(box: RuntimeSandbox, cni_bin: Path) -> Iterator[Starts]:
    with open_starts(box, cni_bin, "serve") as found:
        yield found


def _spawn_add(starts: Starts, cwd: Path, container: str, **env: str) -> subprocess.Popen[str]:
    """A loopback ADD from ``cwd`` inside the sandbox, left running."""
    cwd.mkdir(exist_ok=True)
    if starts.box.sh("ip", "netns", "add", container).code != 0:
        raise AssertionError(f"cannot make netns {container}")
    call_env = starts.env(CNI_COMMAND="ADD", CNI_CONTAINERID=container,
                          CNI_NETNS=f"/run/netns/{container}", CNI_IFNAME="eth0",
                          CNI_PATH=str(starts.cni_bin), **env)
    return starts.box.spawn("sh", "-c", 'cd "$0" && exec "$1"', str(cwd),
                            str(starts.cni_bin / "loopback"), env=call_env, input=LO_CONFIG)


def _lo_is_up(box: RuntimeSandbox, container: str) -> bool:
    (lo,) = box.ip_json("-n", container, "link", "show", "lo")
    return "UP" in lo["flags"]


def test_the_first_calls_start_one_server_and_later_calls_use_it(
    starts: Starts, tmp_path: Path
) -> None:
    """20 first calls at once: every one answered (in-process), one server started between
    them (the start lock, held from the first caller's start until the server listens)."""
    (tmp_path / "version.json").write_text(VERSION_STDIN)
    script = (f'for i in $(seq {PARALLEL}); do "$0" < "$1" > "$2/out.$i" 2>&1 & done; wait')
    ran = starts.box.sh("sh", "-c", script, str(starts.cni_bin / "loopback"),
                        str(tmp_path / "version.json"), str(tmp_path),
                        env=starts.env(CNI_COMMAND="VERSION"))
    assert ran.code == 0, ran.stderr
    for i in range(1, PARALLEL + 1):
        assert '"supportedVersions"' in (tmp_path / f"out.{i}").read_text()
    server = starts.listening()
    until("no other server left", lambda: starts.servers() == [server])
    assert starts.starts_logged() == 1, starts.log.read_text()
    assert sched_policy(server) == 0  # it warmed up in SCHED_IDLE (5); it serves in SCHED_OTHER

    call = _spawn_add(starts, tmp_path / "later", "c1", PYCNI_TEST_SLEEP="5")
    until("the later call running in one of the server's workers",
          lambda: served_by(server, tmp_path / "later"))
    out, err = call.communicate(timeout=120)
    assert call.returncode == 0, out + err
    assert json.loads(out)["interfaces"][0]["name"] == "lo"
    assert _lo_is_up(starts.box, "c1")


def test_an_idle_server_exits_after_its_calls_and_the_next_call_starts_another(
    starts: Starts, tmp_path: Path
) -> None:
    """Idle time 3 s: a call that runs longer than that is finished, not dropped; the server
    leaves once idle (its socket first), and the next caller starts a new one."""
    starts.version(PYCNI_IDLE_TIMEOUT="3")
    first = starts.listening()
    call = _spawn_add(starts, tmp_path / "long", "c1", PYCNI_TEST_SLEEP="6")
    until("the long call in the server", lambda: served_by(first, tmp_path / "long"))
    out, err = call.communicate(timeout=120)
    assert call.returncode == 0, out + err
    assert _lo_is_up(starts.box, "c1")
    wait_gone(first)
    assert not starts.socket.exists()
    assert "no call for 3s: stopping" in starts.log.read_text()

    starts.version()
    second = starts.listening()
    assert second != first
    assert starts.servers() == [second]


def test_a_server_killed_mid_call_fails_that_call_and_the_next_starts_another(
    starts: Starts, tmp_path: Path
) -> None:
    starts.version()
    first = starts.listening()
    call = _spawn_add(starts, tmp_path / "cut", "c1", PYCNI_TEST_SLEEP="60")
    until("the call in the server", lambda: served_by(first, tmp_path / "cut"))
    os.kill(first, signal.SIGKILL)
    out, err = call.communicate(timeout=120)
    assert call.returncode == 1, out + err
    doc = json.loads(out)
    assert (doc["code"], doc["msg"]) == (999, "lost the connection to the pycni server")
    assert not _lo_is_up(starts.box, "c1")  # the worker went with its server, unfinished
    starts.version()  # its socket is left behind, refusing: a new server replaces it
    second = starts.listening()
    assert second != first


def _as_nobody(box: RuntimeSandbox, starts: Starts, socket_path: str, code: str) -> Ran:
    return box.sh("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                  sys.executable, "-c", code, socket_path,
                  env=starts.env(PYCNI_SOCKET=socket_path, CNI_COMMAND="VERSION"))


def test_a_non_root_caller_neither_starts_nor_reaches_a_server(starts: Starts) -> None:
    """The sandbox's /run/pycni is a tmpfs anyone may write to: the only barriers are the
    ones under test. nobody's call runs in-process, starts nothing, creates nothing; root's
    server, in its 0700 directory, cannot even be connected to by nobody."""
    box = starts.box
    launch = ("import sys; sys.stdin = open(0); from pycni.launcher import launch; "
              "launch('loopback')")
    ran = box.sh("sh", "-c", f"printf '%s' '{VERSION_STDIN}' | setpriv --reuid=65534 "
                 "--regid=65534 --clear-groups -- \"$0\" -c \"$1\"", sys.executable, launch,
                 env=starts.env(PYCNI_SOCKET="/run/pycni/nobodys/pycni.sock",
                                CNI_COMMAND="VERSION"))
    assert ran.code == 0, ran.stdout + ran.stderr
    assert '"supportedVersions"' in ran.stdout
    assert box.sh("test", "-e", "/run/pycni/nobodys").code != 0
    assert starts.servers() == []

    roots = "/run/pycni/roots/pycni.sock"
    starts.version(PYCNI_SOCKET=roots)
    until("root's server", lambda: box.sh("test", "-S", roots).code == 0)
    connect = ("import socket, sys\ns = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
               "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)")
    assert _as_nobody(box, starts, roots, connect).code == 13


def test_the_callers_cgroup_going_does_not_take_the_server_along(starts: Starts) -> None:
    """The first caller runs in a cgroup of its own, as a unit or a container scope would;
    the server it starts has left it, and survives its removal (every process in it killed
    first, as systemd stops a unit)."""
    name = f"pycni-test-autostart-{os.getpid()}"
    group = Path("/sys/fs/cgroup/pids") / name
    group.mkdir()
    try:
        starts.box.sh("sh", "-c", f'echo 0 > {group}/cgroup.procs && exec "$0"',
                      str(starts.cni_bin / "loopback"), input=VERSION_STDIN,
                      env=starts.env(CNI_COMMAND="VERSION"))
        server = starts.listening()
        with open(f"/proc/{server}/cgroup") as f:
            assert name not in f.read()
    finally:
        sweep_cgroups(name)  # kills what is left in it, then removes it
    assert not group.exists()
    assert alive(server)
    assert answers(starts.socket)


@pytest.mark.parametrize(
    "wrapper",
    [
        ("unshare", "--mount"),  # a private mount namespace: its /run is nobody else's
        ("unshare", "--pid", "--fork"),  # /proc (and its PID 1) is another pid namespace's
        ("setpriv", "--bounding-set=-all", "--inh-caps=-all"),  # fewer privileges than PID 1
        ("setpriv", "--bounding-set=-net_admin"),  # one fewer (PID 1's ns are still readable)
        ("setpriv", "--no-new-privs"),
    ],
    ids=["mount-ns", "pid-ns", "no-caps", "no-net-admin", "no-new-privs"],
)
def test_only_a_caller_of_the_system_itself_starts_one(
    starts: Starts, wrapper: tuple[str, ...]
) -> None:
    starts.version(*wrapper)
    assert starts.servers() == []
    assert not starts.socket.parent.exists()
    starts.version()  # the same caller, as the system's own: it starts one
    starts.listening()


@pytest.mark.parametrize("switch", ["env", "config", "no-server"])
def test_switches_turn_autostart_off(starts: Starts, tmp_path: Path, switch: str) -> None:
    config = tmp_path / "off.yaml"
    config.write_text(starts.box.config.read_text() + "autostart:\n  plugins: false\n")
    # The config's switch counts where PYCNI_AUTOSTART is not set (empty: unset).
    off, on = {
        "env": ({"PYCNI_AUTOSTART": "0"}, {}),
        "config": ({"PYCNI_AUTOSTART": "", "PYCNI_RUN_CONFIG": str(config)},
                   {"PYCNI_AUTOSTART": ""}),  # the sandbox's config: no section, default on
        "no-server": ({"PYCNI_NO_SERVER": "1"}, {}),
    }[switch]
    starts.version(**off)
    assert starts.servers() == []
    assert not starts.socket.parent.exists()
    starts.version(**on)
    starts.listening()


def test_a_supervised_server_takes_over_from_one_started_on_demand(starts: Starts) -> None:
    starts.version()
    on_demand = starts.listening()
    env = {"PATH": "/usr/bin:/bin", "PYCNI_AUTOSTART": "0"}
    unit = starts.box.spawn(sys.executable, "-m", "pycni.cli", "serve", "--socket",
                            str(starts.socket), env=env)
    try:
        wait_gone(on_demand)
        until("the supervised server listening", lambda: answers(starts.socket))
        (supervised, *_) = descendants(unit.pid)  # nsenter's child: `pycni serve`
        assert "serve" in cmdline(supervised)
        assert "--on-demand" not in cmdline(supervised)
        assert starts.servers() == []
        assert not Path(f"{starts.socket}.ondemand").exists()
    finally:
        kids = descendants(unit.pid)
        if kids:
            os.kill(kids[0], signal.SIGTERM)
        _, log = unit.communicate(timeout=120)
    assert "gave way to this one" in log

