"""The runtime daemon's spares on the real kernel: their standby inits
(``pycni_run.standby``) and their warm-up.

The daemon keeps ``SPARES`` spares; a command takes the oldest. A spare parks the next
container's init in ``.standby-<pid>`` under the cgroup parent; a run adopts it (its cgroup
renamed, its namespaces made ahead of time), a caller whose cgroup is
elsewhere gets it moved, and every other ending leaves no standby cgroup or process behind.
Then the spare copies its pages in the idle scheduling class; nothing it runs keeps that class.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycni_run.daemon.service import SPARES
from pycni_run.standby import PREFIX

from tests.e2e.runtime_support import CGROUP_CONTROLLERS, RuntimeSandbox, sweep_cgroups, until
from tests.support import policy_in, private_share, sched_policy, stat_field

pytestmark = [pytest.mark.root, pytest.mark.runtime_sandbox]



def _standbys(box: RuntimeSandbox) -> dict[str, set[int]]:
    """Every standby cgroup directory under the box's parent and the pids in it (ours). One
    the daemon removes between the listing and the read (its sweep at start) is not one."""
    found: dict[str, set[int]] = {}
    for path in box.cgroup_dirs():
        if os.path.basename(path).startswith(PREFIX):
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    found[path] = {int(p) for p in f.read().split()}
            except FileNotFoundError:
                continue
    return found


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def _made_its_namespaces(pid: int) -> bool:
    """Whether the standby init has unshared what it makes while parked: it enters its cgroups
    first, so a pid seen in all of them may still be in its parent's namespaces."""
    try:
        parent = _ppid(pid)
        return all(os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/{parent}/ns/{ns}")
                   for ns in ("ipc", "uts", "net"))
    except (FileNotFoundError, ProcessLookupError):  # it (or its spare) ended: look again
        return False


def _spare_started(pid: int) -> tuple[int, int]:
    """When the spare of standby init ``pid`` was forked (clock ticks since boot), then its
    pid: the daemon forks its spares one after the other (their standbys may come in either
    order), so this sorts them oldest first."""
    spare = _ppid(pid)
    return stat_field(Path(f"/proc/{spare}/stat").read_text(), 22), spare


def _parked(box: RuntimeSandbox) -> list[int]:
    """The pids (ours) of the daemon's ``SPARES`` parked standby inits, oldest first, once each
    is in all its cgroups and has made its namespaces."""

    def all_parked() -> list[int] | None:
        dirs = _standbys(box)
        by_standby: dict[str, set[int]] = {}
        for path, in_it in dirs.items():
            by_standby.setdefault(os.path.basename(path), set()).update(in_it)
        complete = (len(by_standby) == SPARES and len(dirs) == SPARES * len(CGROUP_CONTROLLERS)
                    and all(len(p) == 1 for p in dirs.values())
                    and all(len(p) == 1 for p in by_standby.values()))
        inits = [p for group in by_standby.values() for p in group] if complete else []
        try:
            if inits and all(_made_its_namespaces(pid) for pid in inits):
                return sorted(inits, key=_spare_started)
        except (FileNotFoundError, ProcessLookupError):
            pass
        return None

    pids: list[int] = until(f"{SPARES} parked standby inits", all_parked)
    return pids


def _parked_in(box: RuntimeSandbox, pid: int) -> set[str]:
    """The standby cgroup directories standby init ``pid`` is in."""
    return {path for path, pids in _standbys(box).items() if pid in pids}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a probe, no signal: ours (the daemon's grandchild) or nobody's
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def served(box: RuntimeSandbox) -> RuntimeSandbox:
    box.start_daemon()
    return box


@pytest.fixture
def sleeper(served: RuntimeSandbox) -> Iterator[Any]:
    """Start ``pycni-run --rm --name NAME ... sleep 60`` in the foreground; rm -f at the end."""
    started: list[tuple[str, subprocess.Popen[str]]] = []

    def start(name: str, *args: str, preexec: Any = None) -> dict[str, Any]:
        assert served.client is not None
        oldest = _parked(served)[0]
        proc = subprocess.Popen(
            served._argv([str(served.client), "--rm", "--name", name, *args, "busybox",
                          "sleep", "60"]),
            env=served._env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=preexec,  # noqa: PLW1509 - this test process runs no threads
        )
        started.append((name, proc))
        # Its call takes the oldest spare before anything else is sent to the daemon (an
        # inspect first would get that spare, and the run the next one).
        until(f"{name} taking the oldest standby", lambda: not _parked_in(served, oldest))

        def running() -> dict[str, Any] | None:
            ran = served.run("inspect", name)
            doc: dict[str, Any] = served.inspect(name) if ran.code == 0 else {}
            return doc if doc.get("State", {}).get("Running") else None

        doc: dict[str, Any] = until(f"{name} running", running)
        return doc

    yield start
    for name, proc in started:
        served.run("rm", "-f", name)
        proc.wait(timeout=30)


def _pid_in(path: str) -> set[int]:
    with open(os.path.join(path, "cgroup.procs")) as f:
        return {int(p) for p in f.read().split()}


def test_a_run_adopts_the_oldest_parked_init(served: RuntimeSandbox, sleeper: Any) -> None:
    pid, younger = _parked(served)
    parked_net = os.readlink(f"/proc/{pid}/ns/net")
    parked_in = {os.stat(path).st_ino for path in _parked_in(served, pid)}
    doc = sleeper("adopted", "--net=none", "-m", "64m", "--pids-limit", "20")
    # The container's init is the parked process: its netns, made while parked, is the
    # container's, and its cgroup directories were renamed to the container's name.
    assert doc["Namespaces"]["net"]["link"] == parked_net == os.readlink(f"/proc/{pid}/ns/net")
    paths = doc["Cgroup"]["Paths"]
    assert sorted(paths) == sorted(CGROUP_CONTROLLERS)
    for path in paths.values():
        assert os.path.basename(path) == "adopted"
        assert pid in _pid_in(path)
    assert {os.stat(path).st_ino for path in paths.values()} == parked_in  # renamed, not made
    assert doc["Cgroup"]["Files"]["memory"] == str(64 << 20)
    assert doc["Cgroup"]["Files"]["pids"] == "20"
    # Adopted; the younger spare went to the inspects (which discard its standby), and no
    # spare is forked while a short command runs.
    until("the younger spare's standby discarded", lambda: _gone(younger))
    until("no standby left", lambda: _standbys(served) == {})
    # Confined as a forked init is: Docker's capabilities and seccomp, its device allowlist
    # written to the renamed cgroup.
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert status["CapEff"] == status["CapBnd"] == "00000000a80425fb"
    assert status["Seccomp"] == "2"
    devices = doc["Cgroup"]["Files"]["devices"].splitlines()
    assert "c 1:3 rwm" in devices
    assert "a *:* rwm" not in devices


@pytest.fixture
def caller_cgroup(served: RuntimeSandbox) -> Iterator[dict[str, str]]:
    """A cgroup of this test's own, per controller, for a caller placed elsewhere; removed
    after ``sleeper`` (requested after this fixture) ended its processes."""
    other = f"{served.cgroup_parent}-caller"
    paths = {c: _cgroup_path(c, other) for c in CGROUP_CONTROLLERS}
    try:
        for path in paths.values():
            os.mkdir(path)
        yield paths
    finally:
        sweep_cgroups(os.path.join(other, served.cgroup_parent))
        sweep_cgroups(other)


def test_a_caller_elsewhere_gets_the_init_moved(
    served: RuntimeSandbox, caller_cgroup: dict[str, str], sleeper: Any
) -> None:
    """A caller in another cgroup: its container's cgroup is under the caller's, made as
    usual; the standby init is moved into it and its standby directories go away."""
    pid = _parked(served)[0]

    def into_caller_cgroup() -> None:
        for path in caller_cgroup.values():
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    doc = sleeper("moved", "--net=none", preexec=into_caller_cgroup)
    for ctrl, path in doc["Cgroup"]["Paths"].items():
        assert path == os.path.join(caller_cgroup[ctrl], served.cgroup_parent, "moved")
        assert pid in _pid_in(path)
    until("no standby left", lambda: _standbys(served) == {})  # the younger: the inspects'
    served.ok("rm", "-f", "moved")
    until("the moved container's cgroup removed",
           lambda: not any(os.path.exists(p) for p in doc["Cgroup"]["Paths"].values()))


def _cgroup_path(controller: str, name: str) -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return os.path.join("/sys/fs/cgroup", controller, path.strip("/"), name)
    raise AssertionError(f"no {controller} hierarchy")


def test_a_host_run_gets_the_callers_netns(served: RuntimeSandbox) -> None:
    """The parked init made a netns of its own: --net=host must replace it with the caller's."""
    _parked(served)
    sandbox_net = served.sh("readlink", "/proc/self/ns/net").stdout.strip()
    ran = served.run("--rm", "--net=host", "busybox", "readlink", "/proc/self/ns/net")
    assert (ran.code, ran.stdout.strip()) == (0, sandbox_net), ran.stderr


def test_a_container_run_joins_the_peers_netns(served: RuntimeSandbox) -> None:
    served.ok("-d", "--name", "peer", "--net=none", "busybox", "sleep", "60")
    try:
        peer_net = served.inspect("peer")["Namespaces"]["net"]["link"]
        _parked(served)
        ran = served.run("--rm", "--net=container:peer", "busybox", "readlink",
                         "/proc/self/ns/net")
        assert (ran.code, ran.stdout.strip()) == (0, peer_net), ran.stderr
    finally:
        served.run("rm", "-f", "peer")


def test_the_callers_umask_reaches_the_command(served: RuntimeSandbox) -> None:
    _parked(served)
    assert served.client is not None
    ran = served.sh("sh", "-c", f"umask 027; exec {served.client} --rm --net=none busybox "
                    "sh -c umask")
    assert (ran.code, ran.stdout.strip()) == (0, "0027"), ran.stderr


def test_other_commands_discard_it(served: RuntimeSandbox) -> None:
    first, second = _parked(served)
    assert served.run("ps", "-a").code == 0
    until("the unused standby ended", lambda: _gone(first))
    now = _parked(served)  # the next spare's, in a directory of its own
    assert now[0] == second
    assert first not in now
    assert len(_standbys(served)) == SPARES * len(CGROUP_CONTROLLERS)


def test_detached_runs_leave_it_to_the_worker(served: RuntimeSandbox) -> None:
    """``-d``: the init must be the monitor's child, so the worker discards its standby."""
    first = _parked(served)[0]
    served.ok("-d", "--name", "bg", "--net=none", "busybox", "sleep", "60")
    try:
        doc = served.inspect("bg")
        assert all(os.path.basename(p) == "bg" for p in doc["Cgroup"]["Paths"].values())
        until("the unused standby ended", lambda: _gone(first))
    finally:
        served.run("rm", "-f", "bg")


def test_stopping_the_daemon_leaves_nothing(served: RuntimeSandbox) -> None:
    pids = _parked(served)
    served.stop_daemon()
    assert all(_gone(pid) for pid in pids)
    assert served.cgroup_dirs() == []


def test_a_container_in_the_foreground_does_not_hold_up_the_next_spare(
    served: RuntimeSandbox,
) -> None:
    """A foreground run holds its worker for the container's life. Once it has run
    ``LONG_COMMAND`` seconds the daemon forks the next spare beside it (with its standby), so
    another terminal's commands (an ``exec`` into it) are not left to plain forks."""
    first = _parked(served)[0]
    long = served.spawn(str(served.client), "run", "--rm", "--name", "long", "--net=none",
                        "busybox", "sleep", "120", env=served._env())
    try:
        until("the long run's container started from the oldest parked standby",
              lambda: not _parked_in(served, first))
        assert first not in _parked(served)
        assert long.poll() is None  # still running: its worker is busy all along
        assert served.run("exec", "long", "true").code == 0
    finally:
        served.run("rm", "-f", "long")
        long.communicate(timeout=60)


def test_a_killed_spare_is_swept(served: RuntimeSandbox) -> None:
    pid = _parked(served)[0]
    parked_in = _parked_in(served, pid)
    os.kill(_ppid(pid), signal.SIGKILL)  # the spare: the daemon's child, started by this test
    until("the killed spare's standby gone", lambda: _gone(pid))
    until("its standby cgroup swept", lambda: not parked_in & set(_standbys(served)))
    assert pid not in _parked(served)  # the daemon forked a new spare with its own standby
    assert served.run("--rm", "--net=none", "busybox", "true").code == 0


def test_a_stale_standby_cgroup_is_swept_at_start(box: RuntimeSandbox) -> None:
    """Left by a daemon that was killed: empty, so the next daemon removes it."""
    stale = [_cgroup_path(c, os.path.join(box.cgroup_parent, f"{PREFIX}99999"))
             for c in CGROUP_CONTROLLERS]
    for path in stale:
        os.makedirs(path)
    box.start_daemon()
    _parked(box)
    assert not any(os.path.exists(p) for p in stale)


def test_a_spare_that_cannot_park_runs_the_usual_way(
    served: RuntimeSandbox, tmp_path: Path
) -> None:
    """The daemon's own cgroup parent is unusable (under a cgroup file): its spares park
    nothing, stay up, and a run forks and moves its init as without a standby."""
    served.stop_daemon()
    bad = tmp_path / "bad-parent.yaml"
    bad.write_text(served.config.read_text().replace(
        f"cgroup_parent: {served.cgroup_parent}", "cgroup_parent: cgroup.procs/nowhere"))
    good, served.config = served.config, bad  # the daemon's config; callers keep the good one
    try:
        served.start_daemon()
    finally:
        served.config = good
    for _ in range(2):
        ran = served.run("--rm", "--net=none", "busybox", "true")
        assert ran.code == 0, ran.stderr
    assert _standbys(served) == {}
    served.stop_daemon()
    assert served.daemon_log is not None
    assert "exited while idle" not in served.daemon_log.read_text()


def test_the_spare_copies_the_pages_commands_write_then_gets_its_policy_back(
    served: RuntimeSandbox,
) -> None:
    """The daemon's first spares have nothing to copy (no command has taught the map yet);
    once a command ran, the next spare copies the pages it wrote in the idle class, and only
    those: most of the daemon's heap stays shared with it."""
    first, second = (_ppid(pid) for pid in _parked(served))
    until("the first warm-ups done", lambda: sched_policy(first) == sched_policy(second)
          == os.SCHED_OTHER)
    untaught = private_share(first)
    ran = served.run("--rm", "--net=none", "busybox", "true")
    assert ran.code == 0, ran.stderr
    spare = _ppid(_parked(served)[-1])
    assert spare not in (first, second)
    until("the warm-up done", lambda: private_share(spare) > untaught + 0.05
           and sched_policy(spare) == os.SCHED_OTHER)
    assert private_share(spare) < 0.6


@pytest.mark.parametrize("detach", [False, True])
def test_commands_never_run_in_the_idle_class(served: RuntimeSandbox, detach: bool) -> None:
    """Taken mid warm-up or after it, a spare's call and its container run at normal policy."""
    args = ["--name", "pol", "--net=none", "busybox", "sh", "-c",
            "cat /proc/self/stat; sleep 60" if detach else "cat /proc/self/stat"]
    if not detach:
        ran = served.run("--rm", *args)
        assert ran.code == 0, ran.stderr
        assert policy_in(ran.stdout) == os.SCHED_OTHER
        return
    served.ok("-d", *args)
    try:
        pid = served.inspect("pol")["State"]["Pid"]
        line = served.sh("cat", f"/proc/{pid}/stat").stdout
        assert policy_in(line) == os.SCHED_OTHER
        monitor = served.state("pol")["monitor"]["pid"]
        assert policy_in(served.sh("cat", f"/proc/{monitor}/stat").stdout) == os.SCHED_OTHER
    finally:
        served.run("rm", "-f", "pol")


def test_the_command_gets_its_stdio_and_nothing_else(served: RuntimeSandbox) -> None:
    """The descriptors handed to the standby init (stdio, its plan, the namespaces) are all
    gone by the exec but the three it was meant to get."""
    _parked(served)
    ran = served.run("--rm", "--net=none", "busybox", "sh", "-c", "ls /proc/$$/fd; true")
    assert ran.code == 0, ran.stderr
    assert sorted(int(fd) for fd in ran.stdout.split()) == [0, 1, 2]  # the shell's
