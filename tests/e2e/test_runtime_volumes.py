"""`-v HOST:CTR[:ro]`, `--tmpfs`, `--read-only` and `--user` on the busybox image, read back
from inside the container (/proc/self/mounts, id, /proc/self/status) and from the host."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.runtime_support import RuntimeSandbox


def _mounts(box: RuntimeSandbox, *args: str) -> dict[str, list[str]]:
    out = box.ok("run", "--rm", "--net=none", *args, "busybox", "cat", "/proc/self/mounts")
    return {line.split()[1]: line.split() for line in out.splitlines()}


def test_a_volume_shares_files_both_ways(box: RuntimeSandbox, tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "from-host").write_text("host\n")
    out = box.ok("run", "--rm", "--net=none", "-v", f"{vol}:/srv/data", "busybox", "sh", "-c",
                 "cat /srv/data/from-host; echo container > /srv/data/from-ctr")
    assert out == "host\n"
    assert (vol / "from-ctr").read_text() == "container\n"
    single = tmp_path / "one-file"
    single.write_text("just me\n")
    assert box.ok("run", "--rm", "--net=none", "-v", f"{single}:/etc/motd", "busybox",
                  "cat", "/etc/motd") == "just me\n"


def test_a_read_only_volume_refuses_writes(box: RuntimeSandbox, tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    ran = box.run("run", "--rm", "--net=none", "-v", f"{vol}:/data:ro", "busybox",
                  "touch", "/data/x")
    assert ran.code == 1
    assert "Read-only file system" in ran.stderr
    assert not (vol / "x").exists()
    assert "ro" in _mounts(box, "-v", f"{vol}:/data:ro")["/data"][3].split(",")
    assert "rw" in _mounts(box, "-v", f"{vol}:/data")["/data"][3].split(",")


def test_tmpfs_is_a_tmpfs(box: RuntimeSandbox) -> None:
    mount = _mounts(box, "--tmpfs", "/scratch:size=1m,mode=700")["/scratch"]
    assert mount[2] == "tmpfs"
    options = mount[3].split(",")
    assert {"rw", "nosuid", "nodev", "noexec", "size=1024k", "mode=700"} <= set(options)
    box.ok("run", "-d", "--name", "t", "--net=none", "--tmpfs", "/scratch", "busybox",
           "sh", "-c", "echo x > /scratch/file; exec sleep 60")
    upper = Path(box.state("t")["rootfs"]["upper"])
    assert box.ok("exec", "t", "cat", "/scratch/file") == "x\n"
    assert box.sh("test", "-e", str(upper / "scratch" / "file")).code == 1  # not in the overlay


def test_read_only_refuses_writes_but_to_tmpfs_and_volumes(
    box: RuntimeSandbox, tmp_path: Path
) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    script = ("touch /x 2>&1; touch /tmp/y 2>&1; touch /run/z && echo run-ok; "
              "touch /dev/shm/s && echo shm-ok; touch /data/v && echo vol-ok")
    out = box.ok("run", "--rm", "--net=none", "--read-only", "--tmpfs", "/run",
                 "-v", f"{vol}:/data", "busybox", "sh", "-c", script)
    assert out.splitlines() == [
        "touch: /x: Read-only file system",
        "touch: /tmp/y: Read-only file system",
        "run-ok", "shm-ok", "vol-ok",
    ]
    assert "ro" in _mounts(box, "--read-only")["/"][3].split(",")
    # a missing working directory is made before the root goes read-only
    assert box.ok("run", "--rm", "--net=none", "--read-only", "-w", "/made/here", "busybox",
                  "pwd") == "/made/here\n"
    # the runtime's own /etc files were written before the root went read-only
    assert box.ok("run", "--rm", "--net=none", "--read-only", "--hostname", "ro", "busybox",
                  "cat", "/etc/hostname") == "ro\n"


def test_user_shows_in_id_with_no_capabilities(box: RuntimeSandbox) -> None:
    assert box.ok("run", "--rm", "--net=none", "--user", "nobody", "busybox", "id") == (
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n")
    assert box.ok("run", "--rm", "--net=none", "-u", "1000:1000", "busybox", "id") == (
        "uid=1000 gid=1000 groups=1000\n")
    status = box.ok("run", "--rm", "--net=none", "-u", "1000", "busybox", "cat",
                    "/proc/self/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert {k: fields[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")} == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapAmb"), "0000000000000000")
    assert fields["CapBnd"] == "00000000a80425fb"  # Docker's 14, as for root
    assert fields["Seccomp"] == "2"  # the default profile holds for any user
    assert fields["Uid"].split() == ["1000"] * 4
    box.ok("run", "-d", "--name", "u", "--net=none", "-u", "nobody", "busybox", "sleep", "60")
    assert box.ok("exec", "u", "id", "-u") == "65534\n"
    ran = box.run("run", "--rm", "--net=none", "-u", "ghost", "busybox", "true")
    assert ran.code == 125
    assert "unable to find user ghost" in ran.stderr


def test_a_volume_target_leading_out_of_the_root_is_refused(
    box: RuntimeSandbox, tmp_path: Path
) -> None:
    rootfs = tmp_path / "rootfs"  # --rootfs: a tree no loader checked
    rootfs.mkdir()
    escape = tmp_path / "escaped"
    depth = len(rootfs.parts)
    os.symlink("../" * depth + str(escape).lstrip("/"), rootfs / "up")
    os.symlink("/" + "../" * 3, rootfs / "abs-up")
    vol = tmp_path / "vol"
    vol.mkdir()
    for target in ("/up/x", "/abs-up/x"):
        ran = box.run("run", "--rm", "--net=none", "--rootfs", str(rootfs), "-v",
                      f"{vol}:{target}", "/bin/true")
        assert ran.code == 125
        assert f"cannot mount {vol} on {target}" in ran.stderr
        assert "leads out of the container's root" in ran.stderr
    assert not escape.exists()  # the host path the relative link climbs to
    assert box.ok("ps", "-a", "-q").strip() == ""  # and no container left behind
