"""User namespaces (issue #20 item 2): `--userns=auto`, `--uidmap`/`--gidmap`, through the
runtime sandbox, with the subordinate ids of a test's own subuid/subgid files. Everything is
read back from the kernel: the init's credentials through a pidfd of it (the state's ProcRef,
never a pid path), file owners in the overlay's upper directory and on a volume, the netns's
owning user namespace, the device a capability cannot make."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from pycni_run.rootfs import ensure_image

from tests.e2e.runtime_support import RuntimeSandbox, shared_image_store
from tests.image_support import (
    PATH_ENV,
    Image,
    directory,
    file,
    layer_tar,
    opaque,
    rootfs_layer,
    whiteout,
    write_docker_archive,
)

SUBIDS = "containers:100000:262144\n"  # four ranges of 65536
AUTO = 100000  # the first free range's start


@pytest.fixture
def ubox(box: RuntimeSandbox, tmp_path: Path) -> RuntimeSandbox:
    """The sandbox, its runtime given subordinate ids for `containers`."""
    for name in ("subuid", "subgid"):
        (tmp_path / name).write_text(SUBIDS)
    with box.config.open("a") as f:
        f.write(f"  subuid_file: {tmp_path / 'subuid'}\n  subgid_file: {tmp_path / 'subgid'}\n")
    return box


_CREDENTIALS = textwrap.dedent(
    """
    import sys
    from pycni_run import pidfds, state
    st = state.load("/run/pycni/containers", sys.argv[1])
    with st.pid.opened("the container") as pidfd:
        status = pidfds.read_proc(pidfd, "status")
    fields = dict(line.split(":", 1) for line in status.splitlines())
    print(fields["Uid"].split()[0], fields["Gid"].split()[0])
    """
)


def _host_ids_of_init(box: RuntimeSandbox, name: str) -> tuple[int, int]:
    """The init's uid and gid as the host sees them, through a pidfd of it."""
    out = box.sh(sys.executable, "-c", _CREDENTIALS, name)
    assert out.code == 0, out.stderr
    uid, gid = out.stdout.split()
    return int(uid), int(gid)


def _owner(box: RuntimeSandbox, path: str) -> tuple[int, int]:
    out = box.sh("stat", "-c", "%u %g", path)
    assert out.code == 0, out.stderr
    uid, gid = out.stdout.split()
    return int(uid), int(gid)


def test_root_inside_is_the_mapped_id_outside(ubox: RuntimeSandbox) -> None:
    ubox.ok("run", "-d", "--name", "u", "--userns=auto", "busybox", "sleep", "60")
    assert ubox.ok("exec", "u", "id", "-u") == "0\n"
    assert ubox.ok("exec", "u", "cat", "/proc/self/uid_map").split() == ["0", str(AUTO), "65536"]
    assert _host_ids_of_init(ubox, "u") == (AUTO, AUTO)
    doc = ubox.inspect("u")
    assert doc["HostConfig"]["UsernsMode"] == "auto"
    assert doc["HostConfig"]["IDMappings"] == {"UidMap": [f"0:{AUTO}:65536"],
                                               "GidMap": [f"0:{AUTO}:65536"]}
    assert doc["Namespaces"]["user"]["shared_with_host"] is False
    # The image's files are root's inside (its layers idmapped, not copied) ...
    assert ubox.ok("exec", "u", "stat", "-c", "%u %g", "/bin/busybox", "/") == "0 0\n0 0\n"
    # ... and what the container writes lands in its upper directory as the mapped ids.
    ubox.ok("exec", "u", "sh", "-c", "echo x > /by-root; touch /tmp/app; chown 1000:2000 /tmp/app")
    upper = ubox.state("u")["rootfs"]["upper"]
    assert _owner(ubox, f"{upper}/by-root") == (AUTO, AUTO)
    assert _owner(ubox, f"{upper}/tmp/app") == (AUTO + 1000, AUTO + 2000)
    assert _owner(ubox, upper) == (AUTO, AUTO)
    ubox.ok("rm", "-f", "u")


def test_a_volume_file_is_owned_by_the_mapped_id(ubox: RuntimeSandbox, tmp_path: Path) -> None:
    vol = tmp_path / "vol"  # below the test's 0700 directory: the init could not walk to it
    vol.mkdir()
    vol.chmod(0o777)
    (vol / "from-host").write_text("host\n")
    maps = ["--uidmap", "0:165536:65536", "--gidmap", "0:165536:65536"]
    script = ("cat /data/from-host; echo root > /data/by-root; touch /data/by-1000; "
              "chown 1000:1000 /data/by-1000; stat -c '%u %g' /data/from-host")
    out = ubox.ok("run", "--rm", "--net=none", *maps, "-v", f"{vol}:/data", "busybox",
                  "sh", "-c", script)
    # Not idmapped: the host's root owns from-host, unmapped inside (the overflow id).
    assert out == "host\n65534 65534\n"
    assert ((vol / "by-root").stat().st_uid, (vol / "by-root").stat().st_gid) == (165536, 165536)
    assert (vol / "by-1000").stat().st_uid == 166536
    ran = ubox.run("run", "--rm", "--net=none", *maps, "-v", f"{vol}:/data:ro", "busybox",
                   "touch", "/data/x")
    assert ran.code == 1
    assert "Read-only file system" in ran.stderr


def _ranges(box: RuntimeSandbox, name: str) -> tuple[range, range]:
    maps = box.inspect(name)["HostConfig"]["IDMappings"]
    (uid,), (gid,) = maps["UidMap"], maps["GidMap"]
    return tuple(range(int(m.split(":")[1]), int(m.split(":")[1]) + int(m.split(":")[2]))
                 for m in (uid, gid))  # type: ignore[return-value]


def test_auto_ranges_are_disjoint_and_released_at_rm(ubox: RuntimeSandbox) -> None:
    ubox.ok("run", "-d", "--name", "a", "--net=none", "--userns=auto", "busybox", "sleep", "60")
    ubox.ok("run", "-d", "--name", "b", "--net=none", "--userns=auto:size=1000", "busybox",
            "sleep", "60")
    a, b = _ranges(ubox, "a"), _ranges(ubox, "b")
    assert a == (range(AUTO, AUTO + 65536),) * 2
    assert b == (range(AUTO + 65536, AUTO + 66536),) * 2
    assert _host_ids_of_init(ubox, "b") == (AUTO + 65536, AUTO + 65536)
    ubox.ok("stop", "a")  # an exited container keeps its range until it is removed
    ubox.ok("run", "-d", "--name", "c", "--net=none", "--userns=auto", "busybox", "sleep", "60")
    assert _ranges(ubox, "c")[0].start == AUTO + 66536
    ubox.ok("rm", "a")
    ubox.ok("run", "-d", "--name", "d", "--net=none", "--userns=auto", "busybox", "sleep", "60")
    assert _ranges(ubox, "d") == a
    ubox.ok("run", "-d", "--name", "e", "--net=none", "--userns=auto", "busybox", "sleep", "60")
    assert _ranges(ubox, "e")[0].start == AUTO + 66536 + 65536
    ran = ubox.run("run", "--rm", "--net=none", "--userns=auto", "busybox", "true")
    assert ran.code == 125  # 262144 - 3 * 65536 - 1000 ids are left: not 65536
    assert "no free range of 65536 ids" in ran.stderr
    for name in ("b", "c", "d", "e"):
        ubox.ok("rm", "-f", name)


_NETNS_OWNER = textwrap.dedent(
    """
    import fcntl, os, sys
    NS_GET_USERNS = 0xB701
    fd = os.open(sys.argv[1], os.O_RDONLY)
    owner = fcntl.ioctl(fd, NS_GET_USERNS)
    print(f"user:[{os.fstat(owner).st_ino}]")
    """
)


def test_networking_and_exec_as_without_it(ubox: RuntimeSandbox) -> None:
    serve = "mkdir /w && echo published > /w/index.html && exec httpd -f -p 80 -h /w"
    ubox.ok("run", "-d", "--name", "web", "--userns=auto", "-p", "8080:80", "busybox",
            "sh", "-c", serve)
    doc = ubox.inspect("web")
    assert doc["NetworkSettings"]["IPAddress"].startswith("10.99.")
    # CNI ADD configured a netns owned by the container's user namespace
    owner = ubox.sh(sys.executable, "-c", _NETNS_OWNER, doc["NetworkSettings"]["SandboxKey"])
    assert owner.stdout.strip() == doc["Namespaces"]["user"]["link"]
    assert "default via 10.99.0.1 dev eth0" in ubox.ok("exec", "web", "ip", "route")
    assert ubox.run("exec", "web", "ping", "-c", "1", "-W", "5", "10.99.0.1").code == 0
    assert ubox.fetch("http://127.0.0.1:8080/").strip() == "published"
    ubox.ok("rm", "-f", "web")
    assert ubox.sh("ip", "netns", "list").stdout.strip() == ""


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_capabilities_are_the_default_set_over_its_own_objects_only(
    ubox: RuntimeSandbox,
) -> None:
    script = "cat /proc/self/status; mknod /tmp/null c 1 3 && echo made"
    inside = ubox.run("run", "--rm", "--net=none", "--userns=auto", "--cap-add", "MKNOD",
                      "busybox", "sh", "-c", script)
    fields = _status(inside.stdout)
    assert fields["CapBnd"] == fields["CapEff"] == "00000000a80425fb"  # Docker's 14, MKNOD in
    assert fields["Seccomp"] == "2"
    assert "made" not in inside.stdout
    assert "Operation not permitted" in inside.stderr
    # the same without a user namespace of its own: the device cgroup lets it make the node
    host = ubox.ok("run", "--rm", "--net=none", "--cap-add", "MKNOD", "busybox", "sh", "-c",
                   script)
    assert host.splitlines()[-1] == "made"
    # root inside may chown what its namespace owns, not what the host's root does
    out = ubox.run("run", "--rm", "--net=none", "--userns=auto", "busybox", "sh", "-c",
                   "touch /x && chown 5:5 /x && stat -c %u /x /dev/null; chown 5 /dev/null")
    assert out.stdout == "5\n65534\n"
    assert "Operation not permitted" in out.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--uidmap", "0:100000:100", "--uidmap", "50:100200:10"], "overlap on the container"),
        (["--uidmap", "0:100000:100", "--uidmap", "100:100050:10"], "overlap on the host"),
        (["--uidmap", "0:400000:65536"], "not all subordinate ids of containers"),
        (["--uidmap", "0:99999:10"], "not all subordinate ids"),
        (["--uidmap", "0:100000:65536", "--gidmap", "0:362144:1"], "invalid --gidmap"),
        (["--uidmap", "0:100000"], "use CONTAINER:HOST:SIZE"),
        (["--uidmap", "0:100000:0"], "use CONTAINER:HOST:SIZE"),
        (["--uidmap", "x:100000:10"], "use CONTAINER:HOST:SIZE"),
        (["--uidmap", "1:100000:10"], "nothing maps the container's root"),
        (["--userns=auto", "--uidmap", "0:100000:10"], "conflicting options"),
        (["--userns=keep-id"], "invalid --userns"),
        (["--userns=auto:size=0"], "invalid --userns"),
        (["--userns=auto", "--net=host"], "conflicting options"),
    ],
)
def test_bad_maps_are_refused_with_nothing_made(
    ubox: RuntimeSandbox, flags: list[str], message: str
) -> None:
    ran = ubox.run("run", "--rm", "--name", "bad", *flags, "busybox", "true")
    assert ran.code == 125
    assert message in ran.stderr
    assert ubox.ok("ps", "-a", "-q").strip() == ""
    assert ubox.sh("ls", "/run/pycni/containers").stdout.strip() == ""
    assert ubox.sh("test", "-e", "/var/lib/pycni/containers/bad").code == 1
    assert ubox.sh("ip", "netns", "list").stdout.strip() == ""
    assert all(ubox.is_standby_or_parent(d) for d in ubox.cgroup_dirs())


def test_without_subordinate_ids_a_user_namespace_is_refused(box: RuntimeSandbox) -> None:
    with box.config.open("a") as f:
        f.write("  subuid_file: /nonexistent/subuid\n")
    ran = box.run("run", "--rm", "--userns=auto", "busybox", "true")
    assert ran.code == 125
    assert "/nonexistent/subuid gives containers none" in ran.stderr
    assert box.ok("ps", "-a", "-q").strip() == ""


def test_through_the_daemon_its_standby_is_not_used(ubox: RuntimeSandbox) -> None:
    ubox.start_daemon()
    out = ubox.ok("run", "--rm", "--net=none", "--userns=auto", "busybox", "sh", "-c",
                  "id -u; cat /proc/self/uid_map")
    assert out.split() == ["0", "0", str(AUTO), "65536"]
    assert ubox.ok("run", "--rm", "--net=none", "busybox", "id", "-u") == "0\n"
    log = json.dumps(ubox.daemon_log.read_text() if ubox.daemon_log else "")
    assert "Traceback" not in log


def test_a_layered_image_in_a_user_namespace(
    ubox: RuntimeSandbox, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whiteouts and opaque directories (overlay's trusted xattrs, read by the host's root
    that mounted the overlay) hold over idmapped layers; the image's user is its mapped id."""
    rootfs = ensure_image(str(shared_image_store(tmp_path_factory)), "busybox")
    middle = layer_tar([
        directory("data"), file("data/gone", "x\n"), file("data/kept", "kept\n"),
        directory("op"), file("op/old", "old\n"), file("etc/passwd", "root:x:0:0::/:/bin/sh\n"
                                                       "app:x:1000:1000::/:/bin/sh\n"),
        directory("home/app", uid=1000, gid=1000),
    ])
    top = layer_tar([whiteout("data/gone"), opaque("op"), file("op/new", "new\n")])
    image = Image(layers=[rootfs_layer(Path(rootfs)), middle, top], name="localhost/uns:1",
                  config={"Env": [PATH_ENV], "User": "app", "Cmd": ["sleep", "60"]})
    ubox.ok("load", "-i", str(write_docker_archive(image, tmp_path / "uns.tar")))
    ubox.ok("run", "-d", "--name", "img", "--net=none", "--userns=auto", "uns:1")
    script = "ls /data; ls /op; stat -c '%u %U' /home/app /bin/busybox; id -u"
    assert ubox.ok("exec", "img", "sh", "-c", script).split() == [
        "kept", "new", "1000", "app", "0", "root", "1000"]
    assert _host_ids_of_init(ubox, "img") == (AUTO + 1000, AUTO + 1000)
    ubox.ok("rm", "-f", "img")


def test_maps_are_written_through_the_pidfd_in_a_nested_pid_namespace(
    nested_box: RuntimeSandbox, tmp_path: Path
) -> None:
    """The runtime's /proc is an ancestor pid namespace's: the intermediate's pid as the
    runtime knows it names another process there; its maps still reach the right one."""
    for name in ("subuid", "subgid"):
        (tmp_path / name).write_text(SUBIDS)
    with nested_box.config.open("a") as f:
        f.write(f"  subuid_file: {tmp_path / 'subuid'}\n  subgid_file: {tmp_path / 'subgid'}\n")
    out = nested_box.ok("run", "--rm", "--net=none", "--userns=auto", "busybox", "sh", "-c",
                        "id -u; cat /proc/self/uid_map /proc/self/gid_map")
    assert out.split() == ["0", "0", str(AUTO), "65536", "0", str(AUTO), "65536"]


def test_a_user_outside_the_map_is_a_clear_error(ubox: RuntimeSandbox) -> None:
    ran = ubox.run("run", "--rm", "--net=none", "--userns=auto:size=1000", "-u", "nobody",
                   "busybox", "true")
    assert ran.code == 125
    assert "cannot run as uid 65534, gid 65534" in ran.stderr
    assert "not mapped in the container's user namespace" in ran.stderr
    assert ubox.ok("run", "--rm", "--net=none", "--userns=auto:size=1000", "-u", "999:999",
                   "busybox", "id", "-u") == "999\n"
