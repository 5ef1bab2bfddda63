"""`exec` by setns, hostname, PID 1, and the container's view of itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.runtime_support import (
    RuntimeSandbox,
)

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "uts")



@pytest.fixture
def web(box: RuntimeSandbox) -> Iterator[RuntimeSandbox]:
    box.ok(
        "run",
        "-d",
        "--name",
        "web",
        "--hostname",
        "webhost",
        "-e",
        "FOO=bar",
        "busybox",
        "sleep",
        "600",
    )
    yield box
    box.run("rm", "-f", "web")


def test_exec_lands_in_every_namespace_of_the_container(web: RuntimeSandbox) -> None:
    doc = web.inspect("web")
    script = "; ".join(f"readlink /proc/self/ns/{kind}" for kind in NAMESPACES)
    out = web.ok("exec", "web", "sh", "-c", script).split()
    assert out == [doc["Namespaces"][kind]["link"] for kind in NAMESPACES]
    pid = doc["State"]["Pid"]
    from_host = web.sh("readlink", *(f"/proc/{pid}/ns/{k}" for k in NAMESPACES))
    assert out == from_host.stdout.split()  # inode equality with /proc/PID/ns/*
    assert all(not doc["Namespaces"][k]["shared_with_host"] for k in NAMESPACES)


def test_exec_joins_the_cgroup(web: RuntimeSandbox) -> None:
    doc = web.inspect("web")
    out = web.ok("exec", "web", "sh", "-c", "cat /proc/self/cgroup")
    assert "memory:/\n" in out  # the container's cgroup is the root of its cgroup namespace
    procs = web.sh("cat", f"{doc['Cgroup']['Paths']['pids']}/cgroup.procs").stdout.split()
    assert str(doc["State"]["Pid"]) in procs


def test_the_command_is_pid_1_and_exec_is_inside_its_pid_namespace(web: RuntimeSandbox) -> None:
    out = web.ok("exec", "web", "ps", "-o", "pid,comm")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert ["1", "sleep"] in rows
    assert web.ok("run", "--rm", "--net=none", "busybox", "sh", "-c", "echo $$").strip() == "1"


def test_hostname_is_set_and_written_to_etc(web: RuntimeSandbox) -> None:
    assert web.ok("exec", "web", "hostname").strip() == "webhost"
    assert web.ok("exec", "web", "cat", "/etc/hostname").strip() == "webhost"
    ip = web.inspect("web")["NetworkSettings"]["IPAddress"]
    assert f"{ip}\twebhost" in web.ok("exec", "web", "cat", "/etc/hosts")
    assert "nameserver" in web.ok("exec", "web", "cat", "/etc/resolv.conf")
    assert (
        web.ok("run", "--rm", "--name", "named", "--net=none", "busybox", "hostname").strip()
        == "named"
    )


def test_exec_env_workdir_and_exit_codes(web: RuntimeSandbox) -> None:
    assert web.ok("exec", "web", "sh", "-c", "echo $FOO").strip() == "bar"
    assert web.ok("exec", "-e", "FOO=baz", "web", "sh", "-c", "echo $FOO").strip() == "baz"
    assert web.ok("exec", "-w", "/tmp", "web", "pwd").strip() == "/tmp"
    assert web.run("exec", "web", "sh", "-c", "exit 3").code == 3
    assert web.run("exec", "web", "nosuch").code == 127
    assert web.run("exec", "web", "/etc/hostname").code == 126
    assert web.run("exec", "nosuch", "true").code == 125


def test_exec_interactive_passes_stdin(web: RuntimeSandbox) -> None:
    assert web.run("exec", "-i", "web", "cat", input="hello\n").stdout == "hello\n"


def test_tty_is_a_pty_of_the_containers_own_devpts(web: RuntimeSandbox) -> None:
    assert web.ok("run", "--rm", "-t", "--net=none", "busybox", "tty").strip() == "/dev/pts/0"
    assert web.ok("exec", "-t", "web", "tty").strip().startswith("/dev/pts/")
    assert web.run("run", "--rm", "--net=none", "busybox", "tty").code == 1


def test_init_reaps_orphans(box: RuntimeSandbox) -> None:
    box.ok(
        "run",
        "-d",
        "--init",
        "--net=none",
        "--name",
        "z",
        "busybox",
        "sh",
        "-c",
        "(sleep 0.1 &); sleep 600",
    )
    out = box.ok("exec", "z", "sh", "-c", "sleep 0.5; ps -o stat,comm")
    assert not [line for line in out.splitlines() if line.strip().startswith("Z")]
    box.ok("rm", "-f", "z")
