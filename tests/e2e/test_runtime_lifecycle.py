"""Lifecycle: exit codes, -d/logs/ps, stop/kill, rm leaving nothing behind, rm -f after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.e2e.runtime_support import (
    RuntimeSandbox,
    comm,
    descendants,
    until,
)


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["busybox", "true"], 0),
        (["busybox", "false"], 1),
        (["busybox", "sh", "-c", "exit 42"], 42),
        (["--init", "busybox", "sh", "-c", "kill -9 $$"], 137),  # PID 1 cannot SIGKILL itself
        (["--net=nosuch", "busybox", "true"], 125),
        (["--bogus-flag", "busybox", "true"], 125),
        (["busybox", "/etc/passwd"], 126),
        (["busybox", "nosuchcommand"], 127),
        (["busybox", "/no/such/path"], 127),
    ],
)
def test_exit_codes(box: RuntimeSandbox, argv: list[str], code: int) -> None:
    net = [] if any(a.startswith("--net") for a in argv) else ["--net=none"]
    ran = box.run("run", "--rm", *net, *argv)
    assert ran.code == code, ran.stderr
    assert box.run("ps", "-a", "-q").stdout.strip() == ""  # --rm, or never created


def test_run_without_the_run_word_and_stdout(box: RuntimeSandbox) -> None:
    ran = box.run("--rm", "--net=none", "busybox", "echo", "hello")
    assert (ran.code, ran.stdout) == (0, "hello\n")
    assert (
        box.run("--rm", "--net=none", "-e", "A=1", "busybox", "sh", "-c", "echo $A").stdout == "1\n"
    )


def _assert_same(after: dict[str, Any], before: dict[str, Any]) -> None:
    changed = {
        k: f"before {sorted(set(map(str, before[k])) - set(map(str, after[k])))} "
        f"after {sorted(set(map(str, after[k])) - set(map(str, before[k])))}"
        for k in before
        if after[k] != before[k]
    }
    assert not changed, changed


def _host_snapshot(box: RuntimeSandbox) -> dict[str, Any]:
    mounts = box.sh("cat", "/proc/self/mountinfo").stdout
    return {
        # Under /tmp other (concurrent) tests pin and remove their own namespaces.
        "mounts": sorted(
            point
            for line in mounts.splitlines()
            if not (point := line.split()[4]).startswith("/tmp/")
        ),
        "links": sorted(link["ifname"] for link in box.ip_json("link")),
        "addrs": sorted(
            (a["ifname"], i["local"]) for a in box.ip_json("addr") for i in a.get("addr_info", [])
        ),
        "netns": box.sh("ip", "netns", "list").stdout,
        "ipam": box.sh(
            "sh", "-c", "ls -R /run/pycni/ipam 2>/dev/null | grep -c '^10\\.' || true"
        ).stdout,
        "cache": box.sh("sh", "-c", "ls /var/lib/cni/results 2>/dev/null || true").stdout,
        "cgroups": box.cgroup_dirs(),
        "containers": box.sh("ls", "/run/pycni/containers").stdout,
        "storage": box.sh("ls", "/var/lib/pycni/containers").stdout,
    }


def test_rm_leaves_no_mount_cgroup_netns_veth_or_ip(box: RuntimeSandbox) -> None:
    box.ok("run", "--rm", "busybox", "true")  # the bridge exists from here on, as in real life
    before = _host_snapshot(box)
    box.ok(
        "run",
        "-d",
        "--name",
        "web",
        "--memory",
        "64m",
        "--pids-limit",
        "20",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
    )
    box.ok("netns", "link", "web", "extra")
    during = _host_snapshot(box)
    assert during != before
    assert any(name.startswith("veth") for name in during["links"])
    box.ok("stop", "web")
    box.ok("rm", "web")
    _assert_same(_host_snapshot(box), before)


def test_detached_logs_ps_inspect_stop(box: RuntimeSandbox) -> None:
    out = box.ok(
        "run",
        "-d",
        "--name",
        "d",
        "--net=none",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; trap 'echo bye; exit 7' TERM; while :; do sleep 0.1; done",
    )
    assert len(out.strip()) == 64  # the container id
    until("the shell's two log lines",
          lambda: set(box.ok("logs", "d").split()) == {"out", "err"})
    ps = box.ok("ps").splitlines()
    assert ps[0].split()[:4] == ["NAME", "ID", "PID", "STATUS"]
    assert ps[1].split()[0] == "d"
    doc = box.inspect("d")
    assert doc["State"]["Status"] == "running"
    assert doc["State"]["Pid"] > 1
    box.ok("stop", "d")
    doc = box.inspect("d")
    assert (doc["State"]["Status"], doc["State"]["ExitCode"]) == ("exited", 7)
    assert "bye" in box.ok("logs", "d")
    assert box.ok("ps").strip().count("\n") == 0  # only the header
    assert "exited (7)" in box.ok("ps", "-a")
    assert box.run("run", "-d", "--name", "d", "busybox", "true").code == 125  # name taken
    box.ok("rm", "d")
    assert box.run("inspect", "d").code == 125


def test_stop_escalates_to_sigkill_and_kill_sends_signals(box: RuntimeSandbox) -> None:
    box.ok("run", "-d", "--name", "s", "--net=none", "busybox", "sleep", "600")
    box.ok("stop", "-t", "0.5", "s")  # PID 1 ignores SIGTERM it has no handler for
    assert box.inspect("s")["State"]["ExitCode"] == 137
    box.ok("rm", "s")
    box.ok(
        "run",
        "-d",
        "--name",
        "k",
        "--net=none",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 5' USR1; while :; do sleep 0.1; done",
    )
    box.ok("kill", "-s", "USR1", "k")
    for _ in range(100):
        if box.inspect("k")["State"]["Status"] == "exited":
            break
        time.sleep(0.05)
    assert box.inspect("k")["State"]["ExitCode"] == 5
    assert box.run("rm", "nosuch").code == 125


def test_rm_refuses_a_running_container_without_force(box: RuntimeSandbox) -> None:
    box.ok("run", "-d", "--name", "r", "busybox", "sleep", "600")
    assert box.run("rm", "r").code == 125
    box.ok("rm", "-f", "r")
    assert box.run("ps", "-a", "-q").stdout.strip() == ""


def test_rm_f_recovers_a_container_whose_runtime_was_killed(box: RuntimeSandbox) -> None:
    box.ok("run", "--rm", "busybox", "true")
    before = _host_snapshot(box)
    box.ok("run", "-d", "--name", "crash", "--memory", "64m", "busybox", "sleep", "600")
    state = box.state("crash")
    # The runtime dies, the container lives on. The pid is the sandbox's, so the kill is sent
    # from inside the sandbox's pid namespace: it can only ever reach that process.
    killed = box.sh("kill", "-9", str(state["monitor"]["pid"]))
    assert killed.code == 0, killed.stderr
    time.sleep(0.2)
    assert box.inspect("crash")["State"]["Status"] == "running"
    box.ok("rm", "-f", "crash")
    _assert_same(_host_snapshot(box), before)


def test_foreground_runtime_killed_then_rm_f(box: RuntimeSandbox) -> None:
    """SIGKILL to a foreground `pycni-run` (no chance to clean up): rm -f restores the host."""
    box.ok("run", "--rm", "busybox", "true")
    before = _host_snapshot(box)
    box.ok("run", "-d", "--name", "fg", "busybox", "sleep", "600")
    # the detached monitor stands in for a foreground runtime: same process, same state
    pid = box.state("fg")["pid"]["pid"]
    assert json.loads(box.ok("inspect", "fg"))["State"]["Pid"] == pid
    box.ok("rm", "-f", "fg")
    _assert_same(_host_snapshot(box), before)


def _published(box: RuntimeSandbox) -> dict[str, Any]:
    """What publishing a port leaves: nft map elements and host-port reservation files."""
    ruleset = box.sh("nft", "-j", "list", "ruleset").stdout
    elements = sorted(
        json.dumps(item["map"].get("elem", []))
        for item in json.loads(ruleset or '{"nftables": []}')["nftables"]
        if "map" in item
    )
    files = box.sh("sh", "-c", "find /run/pycni/hostports -type f ! -name lock 2>/dev/null")
    return {"nft": elements, "hostports": sorted(files.stdout.split())}


def _with_published(box: RuntimeSandbox) -> dict[str, Any]:
    """The host snapshot and what publishing leaves; the daemon's spares' standby cgroups
    come and go with the spares."""
    snapshot = {**_host_snapshot(box), **_published(box)}
    snapshot["cgroups"] = [d for d in snapshot["cgroups"] if not box.is_standby_or_parent(d)]
    return snapshot


@pytest.mark.parametrize(
    ("mode", "when"), [("in-process", "running"), ("daemon", "running"), ("in-process", "starting")]
)
def test_a_killed_foreground_run_rm_is_removed_when_its_container_exits(
    box: RuntimeSandbox, mode: str, when: str
) -> None:
    """SIGKILL to a foreground `pycni-run run --rm` (the process itself, or the client of
    the daemon's worker): the container lives on, as under Docker or podman, and when it
    exits --rm still holds: netns pin, veth, IP, nft elements, host-port reservation, cache,
    state, overlay and cgroups all go. Killed while starting (attached, its init not yet
    released), the container never runs and all of it goes at once."""
    if mode == "daemon":
        box.start_daemon()
    box.ok("run", "--rm", "-p", "8081:80", "busybox", "true")  # the bridge and tables exist
    before = _with_published(box)
    argv = ["run", "--rm", "-i", "-p", "8080:80", "--name", "rmme", "busybox", "sh", "-c",
            "echo ready; read line"]
    entry = [str(box.client)] if mode == "daemon" else [sys.executable, "-m", "pycni_run.cli"]
    env = box._env()
    if when == "starting":
        env["PYCNI_FAILPOINTS"] = "run.start.after_attach=sleep:600"
    proc = subprocess.Popen(box._argv([*entry, *argv]), env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stderr is not None
        if when == "starting":
            lines = iter(proc.stderr.readline, "")
            assert any("failpoint run.start.after_attach: sleeping" in line for line in lines)
            assert _published(box) != {k: before[k] for k in _published(box)}  # attached
        else:
            assert proc.stdout.readline().strip() == "ready"
        runtime = next(p for p in descendants(proc.pid)
                       if comm(p).startswith(("python", "pycni")))
        os.kill(runtime, signal.SIGKILL)  # the pycni-run (or client) nsenter started: ours
        proc.wait(timeout=30)
        if when == "running":
            # It may have printed before its monitor recorded "running": the init counts.
            assert box.sh("kill", "-0", str(box.state("rmme")["pid"]["pid"])).code == 0
            assert _published(box) != {k: before[k] for k in _published(box)}
            proc.stdin.close()  # `read` gets EOF: the container exits
        until("the container removed",
              lambda: box.sh("ls", "-A", "/run/pycni/containers").stdout.split() == [])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _assert_same(_with_published(box), before)
