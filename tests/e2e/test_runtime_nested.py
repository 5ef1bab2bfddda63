"""pycni-run in a pid namespace whose /proc is not its own (issue #17): every namespace it
touches must be the container's, found by descriptor, never by a pid turned into a path.

The sandbox (its own net, mount and pid namespaces and /proc) stands in for the host; the
runtime runs in a pid namespace inside it that keeps the sandbox's /proc (``nested_box``). A
pid of the runtime read through that /proc names a process of the sandbox, so a regression
lands there, never in the machine's namespaces. The oracle is the machine's own view: the
container's init found through its cgroup (``cgroup.procs`` read here gives pids of this pid
namespace) and its ``/proc/PID/ns/*`` read through the machine's /proc.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.runtime_support import RuntimeSandbox, until

KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "uts")
EXEC_SCRIPT = "; ".join(f"readlink /proc/self/ns/{kind}" for kind in KINDS)


def _machine_ns(pid: int) -> dict[str, str]:
    return {kind: os.readlink(f"/proc/{pid}/ns/{kind}") for kind in KINDS}


def _is_pid_1(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        nspid = next(line for line in f if line.startswith("NSpid:"))
    return nspid.split()[-1] == "1"


def _init_seen_from_the_machine(box: RuntimeSandbox, name: str) -> int:
    """The container's init in the machine's pid namespace: the process of its cgroup that
    is PID 1 of its own pid namespace."""
    path = box.inspect(name)["Cgroup"]["Paths"]["pids"]
    with open(os.path.join(path, "cgroup.procs")) as f:
        pids = [int(p) for p in f.read().split()]
    inits = [pid for pid in pids if _is_pid_1(pid)]
    assert len(inits) == 1, pids
    return inits[0]


def _sandbox_host(box: RuntimeSandbox) -> dict[str, Any]:
    """What the sandbox host (the runtime's own netns) looks like: links, addresses, lo."""
    links = {link["ifname"]: link for link in box.ip_json("addr")}
    lo = links["lo"]
    return {
        "names": set(links),
        "lo": (lo["flags"], [(a["local"], a["prefixlen"]) for a in lo["addr_info"]]),
        "addresses": sorted(
            (name, a["local"]) for name, link in links.items() for a in link["addr_info"]
        ),
    }


def _pin_inode(box: RuntimeSandbox, path: str) -> str:
    ran = box.sh("stat", "-c", "%i", path)
    assert ran.code == 0, ran.stderr
    return f"net:[{ran.stdout.strip()}]"


@pytest.fixture
def machine_net() -> str:
    return os.readlink("/proc/self/ns/net")


def _check_container(
    box: RuntimeSandbox, name: str, *, machine_net: str, outer_net: str
) -> dict[str, str]:
    """Every view of ``name``'s namespaces is the one its init is in; returns them."""
    truth = _machine_ns(_init_seen_from_the_machine(box, name))
    doc = box.inspect(name)
    assert {k: doc["Namespaces"][k]["link"] for k in KINDS} == truth
    assert _pin_inode(box, doc["NetworkSettings"]["SandboxKey"]) == truth["net"]
    assert box.ok("exec", name, "sh", "-c", EXEC_SCRIPT).split() == [truth[k] for k in KINDS]
    linked = box.ok("netns", "link", name, f"{name}-link").strip()
    assert _pin_inode(box, linked) == truth["net"]
    assert machine_net not in (truth["net"], outer_net)
    assert "path" not in doc["Namespaces"]["net"]  # /proc/PID would name another process
    return truth


@pytest.mark.parametrize("mode", ["bridge", "none", "host"])
def test_every_namespace_touched_is_the_containers(
    nested_box: RuntimeSandbox, mode: str, machine_net: str
) -> None:
    box = nested_box
    outer_net = os.readlink(f"/proc/{box.init_pid}/ns/net")
    before = _sandbox_host(box)
    box.ok("run", "-d", "--name", "c", f"--net={mode}", "busybox", "sleep", "600")
    truth = _check_container(box, "c", machine_net=machine_net, outer_net=outer_net)
    assert (truth["net"] == outer_net) is (mode == "host")  # host mode: the sandbox host's
    inside = box.ok("exec", "c", "ip", "-o", "link")
    assert ("eth0" in inside) is (mode == "bridge")
    during = _sandbox_host(box)
    assert during["lo"] == before["lo"]
    assert "eth0" not in during["names"]
    box.ok("rm", "-f", "c")
    after = _sandbox_host(box)
    assert after["lo"] == before["lo"]
    bridge = {"pycni0"} if mode == "bridge" else set()  # stays, as Docker's docker0 does
    assert after["names"] == before["names"] | bridge
    assert [a for a in after["addresses"] if a[0] not in bridge] == before["addresses"]


def test_container_mode_joins_the_peers_netns_and_nothing_else(
    nested_box: RuntimeSandbox, machine_net: str
) -> None:
    box = nested_box
    outer_net = os.readlink(f"/proc/{box.init_pid}/ns/net")
    box.ok("run", "-d", "--name", "peer", "busybox", "sleep", "600")
    box.ok("run", "-d", "--name", "j", "--net=container:peer", "busybox", "sleep", "600")
    peer = _check_container(box, "peer", machine_net=machine_net, outer_net=outer_net)
    joined = _check_container(box, "j", machine_net=machine_net, outer_net=outer_net)
    assert joined["net"] == peer["net"]
    assert all(joined[k] != peer[k] for k in KINDS if k != "net")
    result = box.inspect("j")["NetworkSettings"]["CNIResult"]
    assert "eth0" in {i["name"] for i in result["interfaces"]}
    box.ok("rm", "-f", "j", "peer")


@pytest.fixture
def orphaned(nested_box: RuntimeSandbox) -> Iterator[tuple[RuntimeSandbox, int]]:
    """A container whose monitor was killed (its state still says "running"), then its init:
    (the sandbox, the init's pid in the runtime's pid namespace)."""
    box = nested_box
    box.ok("run", "-d", "--name", "r", "busybox", "sleep", "600")
    st = box.state("r")
    assert box.sh("kill", "-KILL", str(st["monitor"]["pid"])).code == 0
    init = int(st["pid"]["pid"])
    assert box.sh("kill", "-KILL", str(init)).code == 0
    until("the init reaped", lambda: box.sh("kill", "-0", str(init)).code != 0)
    yield box, init
    box.run("rm", "-f", "r")


def _take_pid(box: RuntimeSandbox, pid: int) -> None:
    """Start a process that gets ``pid`` in the runtime's pid namespace (ns_last_pid is the
    writer's pid namespace's); it lives in the sandbox host's namespaces."""
    script = f"echo {pid - 1} > /proc/sys/kernel/ns_last_pid; sleep 600 >/dev/null 2>&1 &"

    def taken() -> bool:
        box.sh("sh", "-c", script)
        return box.sh("kill", "-0", str(pid)).code == 0

    until(f"a process with pid {pid}", taken)


def test_exec_after_the_init_died_and_its_pid_was_reused_joins_nothing(
    orphaned: tuple[RuntimeSandbox, int],
) -> None:
    box, init = orphaned
    assert box.state("r")["status"] == "running"  # nobody recorded the end
    _take_pid(box, init)
    ran = box.run("exec", "r", "sh", "-c", EXEC_SCRIPT)
    assert ran.code == 125
    assert ran.stdout == ""  # no command ran, anywhere
    assert "is not running" in ran.stderr
    assert box.run("netns", "link", "r", "r-link").code == 125
    assert box.inspect("r")["State"]["Running"] is False
    box.ok("rm", "-f", "r")
    assert box.sh("kill", "-0", str(init)).code == 0  # the impostor was not killed
    box.sh("kill", "-KILL", str(init))


def test_through_the_daemon_too(nested_box: RuntimeSandbox, machine_net: str) -> None:
    """The runtime daemon, its spare's standby init and a worker: same namespaces."""
    box = nested_box
    outer_net = os.readlink(f"/proc/{box.init_pid}/ns/net")
    box.start_daemon()
    box.ok("run", "-d", "--name", "d", "busybox", "sleep", "600")
    box.ok("run", "-d", "--name", "dj", "--net=container:d", "busybox", "sleep", "600")
    served = _check_container(box, "d", machine_net=machine_net, outer_net=outer_net)
    joined = _check_container(box, "dj", machine_net=machine_net, outer_net=outer_net)
    assert joined["net"] == served["net"]
    out = box.ok("run", "--rm", "busybox", "sh", "-c", EXEC_SCRIPT).split()
    assert out[KINDS.index("net")] not in (machine_net, outer_net, served["net"])
    assert json.loads(box.ok("inspect", "d"))["State"]["Running"] is True
    box.ok("rm", "-f", "dj", "d")
