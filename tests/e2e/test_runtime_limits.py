"""cgroup limits (v1 on this host, behind one facade): memory, pids, cpus; removal on exit."""

from __future__ import annotations

import json

from tests.e2e.runtime_support import (
    RuntimeSandbox,
)


def test_memory_over_allocation_is_killed_with_137(box: RuntimeSandbox) -> None:
    ran = box.run(
        "run",
        "--rm",
        "--net=none",
        "--memory",
        "16m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    )
    assert ran.code == 137, ran.stderr
    ran = box.run(
        "run",
        "--rm",
        "--net=none",
        "--memory",
        "64m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=8M",
        "count=1",
    )
    assert ran.code == 0, ran.stderr


def test_pids_limit_stops_a_fork_bomb(box: RuntimeSandbox) -> None:
    # After starting the bomb the shell waits without forking (builtins only): a `sleep` it
    # forks while the bomb holds every pid fails, and ash exits on a failed fork (CI saw it,
    # once in six runs: exit 2, nothing printed).
    wait_without_forking = "i=0; while [ $i -lt 300000 ]; do i=$((i + 1)); done"
    ran = box.run(
        "run",
        "--rm",
        "--net=none",
        "--pids-limit",
        "8",
        "busybox",
        "sh",
        "-c",
        f"f() {{ f | f & }}; f; {wait_without_forking}; echo survived",
        timeout=60,
    )
    assert "can't fork" in ran.stderr
    assert "survived" in ran.stdout


def test_pids_limit_caps_the_count(box: RuntimeSandbox) -> None:
    box.ok("run", "-d", "--name", "p", "--net=none", "--pids-limit", "5", "busybox", "sleep", "60")
    ran = box.run(
        "exec", "p", "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 60 >/dev/null 2>&1 & done"
    )
    assert "can't fork" in ran.stderr
    paths = box.inspect("p")["Cgroup"]["Paths"]
    assert int(box.sh("cat", f"{paths['pids']}/pids.current").stdout) <= 5
    assert box.sh("cat", f"{paths['pids']}/pids.max").stdout.strip() == "5"
    box.ok("rm", "-f", "p")


def test_limits_are_written_and_shown_by_inspect(box: RuntimeSandbox) -> None:
    box.ok(
        "run",
        "-d",
        "--name",
        "l",
        "--net=none",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "32",
        "busybox",
        "sleep",
        "60",
    )
    cgroup = box.inspect("l")["Cgroup"]
    assert cgroup["Version"] == 1
    files = dict(cgroup["Files"])
    assert "c 1:3 rwm" in files.pop("devices").splitlines()  # the device allowlist
    assert files == {
        "memory": str(64 << 20),
        "cpu_quota_us": "50000",
        "cpu_period_us": "100000",
        "pids": "32",
    }
    assert cgroup["Limits"] == {"memory": 64 << 20, "cpus": 0.5, "pids": 32}
    pid = box.inspect("l")["State"]["Pid"]
    for ctrl in ("memory", "cpu", "pids", "devices"):
        procs = box.sh("cat", f"{cgroup['Paths'][ctrl]}/cgroup.procs").stdout.split()
        assert str(pid) in procs
    box.ok("rm", "-f", "l")
    assert box.cgroup_dirs() == []


def test_cgroup_is_removed_when_the_container_exits(box: RuntimeSandbox) -> None:
    box.ok("run", "--name", "gone", "--net=none", "--memory", "32m", "busybox", "true")
    state = box.state("gone")
    assert state["status"] == "exited"
    assert state["exit_code"] == 0
    assert state["cgroup"] is None
    assert box.cgroup_dirs() == []
    box.ok("rm", "gone")


def test_bad_limits_are_refused_before_anything_is_made(box: RuntimeSandbox) -> None:
    for flags in (
        ["--memory", "1m"],
        ["--memory", "lots"],
        ["--cpus", "0"],
        ["--cpus", "999"],
        ["--pids-limit", "x"],
    ):
        ran = box.run("run", "--rm", "--net=none", *flags, "busybox", "true")
        assert ran.code == 125, flags
    assert json.loads(json.dumps(box.cgroup_dirs())) == []
