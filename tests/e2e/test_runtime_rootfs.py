"""rootfs: the busybox image, a copy-on-write overlay per container, pivot_root, /proc /sys /dev."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.runtime_support import (
    RuntimeSandbox,
)


def test_two_containers_do_not_see_each_others_writes(box: RuntimeSandbox) -> None:
    box.ok("run", "-d", "--name", "a", "--net=none", "busybox", "sleep", "60")
    box.ok("run", "-d", "--name", "b", "--net=none", "busybox", "sleep", "60")
    box.ok("exec", "a", "sh", "-c", "echo from-a > /etc/marker; rm /bin/vi")
    assert box.run("exec", "b", "cat", "/etc/marker").code != 0
    assert box.ok("exec", "b", "ls", "/bin/vi").strip() == "/bin/vi"
    assert box.ok("exec", "a", "cat", "/etc/marker").strip() == "from-a"
    image = box.image_store / "busybox" / "rootfs"
    assert not (image / "etc" / "marker").exists()
    assert (image / "bin" / "vi").is_symlink()
    upper = Path(box.state("a")["rootfs"]["upper"])
    assert box.sh("cat", str(upper / "etc" / "marker")).stdout.strip() == "from-a"
    box.ok("rm", "-f", "a", "b")


def test_the_image_is_busybox_with_applet_links(box: RuntimeSandbox) -> None:
    box.ok("run", "--rm", "--net=none", "busybox", "true")
    image = box.image_store / "busybox" / "rootfs"
    assert (image / "bin" / "busybox").is_file()
    assert (image / "bin" / "sh").is_symlink()
    links = [p for p in image.rglob("*") if p.is_symlink()]
    assert len(links) > 200  # one per applet, in bin, sbin, usr/bin, usr/sbin


def test_mounts_inside_the_container(box: RuntimeSandbox) -> None:
    out = box.ok("run", "--rm", "--net=none", "busybox", "cat", "/proc/self/mounts")
    mounts = {line.split()[1]: line.split() for line in out.splitlines()}
    assert mounts["/"][2] == "overlay"
    assert mounts["/proc"][2] == "proc"
    assert mounts["/sys"][2] == "sysfs"
    assert "ro" in mounts["/sys"][3].split(",")
    assert mounts["/dev"][2] == "tmpfs"
    assert mounts["/dev/pts"][2] == "devpts"
    assert mounts["/dev/shm"][2] == "tmpfs"
    assert not [m for m in mounts if m.startswith(("/run/netns", "/tmp/pytest"))]
    ran = box.run("run", "--rm", "--net=none", "busybox", "sh", "-c", "touch /sys/x")
    assert ran.code == 1
    devs = box.ok("run", "--rm", "--net=none", "busybox", "ls", "/dev").split()
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"} <= set(devs)
    assert (
        box.ok(
            "run",
            "--rm",
            "--net=none",
            "busybox",
            "sh",
            "-c",
            "echo x > /dev/null && head -c 4 /dev/zero | wc -c",
        ).strip()
        == "4"
    )


def test_rootfs_dir_is_the_lower_layer_and_stays_untouched(
    box: RuntimeSandbox, tmp_path: Path
) -> None:
    box.ok("run", "--rm", "--net=none", "busybox", "true")
    lower = box.image_store / "busybox" / "rootfs"
    out = box.ok(
        "run",
        "--rm",
        "--net=none",
        "--rootfs",
        str(lower),
        "sh",
        "-c",
        "echo new > /created; cat /created",
    )
    assert out.strip() == "new"
    assert not (lower / "created").exists()


def test_unknown_image_and_workdir(box: RuntimeSandbox) -> None:
    assert box.run("run", "--rm", "--net=none", "nosuchimage", "true").code == 125
    assert (
        box.ok("run", "--rm", "--net=none", "-w", "/srv/app", "busybox", "pwd").strip()
        == "/srv/app"
    )
    assert box.run("run", "--rm", "--net=none", "-w", "rel", "busybox", "pwd").code == 125
