"""`pycni-run run IMAGE` of a loaded image: its layers stacked under the container's overlay
(whiteouts and opaque directories honoured, layer directories shared by inode), its config
(Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts with -P), and `rmi` while it runs.

The image is written by the test: busybox's rootfs as the bottom layer (built locally, as
`run busybox` builds it), two small layers above it. Each test has its own store."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycni_run.rootfs import ensure_image

from tests.e2e.runtime_support import RuntimeSandbox, open_sandbox, shared_image_store
from tests.image_support import (
    PATH_ENV,
    Image,
    directory,
    file,
    layer_tar,
    opaque,
    rootfs_layer,
    symlink,
    whiteout,
    write_docker_archive,
)

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nextra:x:2000:app\n"
MIDDLE = layer_tar([
    directory("data"), file("data/a", "lower a\n"), file("data/b", "lower b\n"),
    directory("op"), file("op/old", "old\n"), symlink("abs", "/data/b"),
    file("etc/passwd", PASSWD), file("etc/group", GROUP),
])
TOP = layer_tar([whiteout("data/a"), opaque("op"), file("op/new", "new\n")])
CONFIG = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ['echo "$GREETING from $(pwd) as $(id -un):$(id -G)"'],
    "Env": [PATH_ENV, "GREETING=hello"],
    "WorkingDir": "/data",
    "User": "app",
    "ExposedPorts": {"80/tcp": {}, "5353/udp": {}},
}


@pytest.fixture(scope="module")
def app_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Image, Path]:
    rootfs = ensure_image(str(shared_image_store(tmp_path_factory)), "busybox")
    image = Image(layers=[rootfs_layer(Path(rootfs)), MIDDLE, TOP], config=CONFIG,
                  name="localhost/app:1")
    return image, write_docker_archive(image, tmp_path_factory.mktemp("app") / "app.tar")


@pytest.fixture
def ibox(
    tmp_path: Path, cni_bin: Path, app_archive: tuple[Image, Path]
) -> Iterator[RuntimeSandbox]:
    """The runtime sandbox with a store of its own, the app image loaded."""
    with open_sandbox(tmp_path, cni_bin, tmp_path / "store") as sandbox:
        assert sandbox.ok("load", "-i", str(app_archive[1])) == "Loaded image: localhost/app:1\n"
        yield sandbox


def _layers(box: RuntimeSandbox) -> list[Path]:
    """The app image's layer directories in the store, bottom first."""
    out = json.loads(box.ok("image", "inspect", "app:1"))[0]
    return [box.image_store / "layers" / c[7:] / "diff"
            for c in out["GraphDriver"]["Data"]["ChainIDs"]]


def test_the_layers_are_stacked_with_their_whiteouts(ibox: RuntimeSandbox) -> None:
    out = ibox.ok("run", "--rm", "--net=none", "app:1",
                  "cat /data/b; ls /data; ls /op; cat /abs; ls /bin/busybox")
    assert out.split("\n") == ["lower b", "b", "new", "lower b", "/bin/busybox", ""]
    # the layers themselves are as loaded: the deleted file is still in its own layer
    assert (_layers(ibox)[1] / "data" / "a").read_text() == "lower a\n"
    assert (_layers(ibox)[1] / "op" / "old").exists()


def test_the_image_config_is_honoured(ibox: RuntimeSandbox) -> None:
    out = ibox.ok("run", "--rm", "--net=none", "app:1")
    assert out == "hello from /data as app:1000 2000\n"
    out = ibox.ok("run", "--rm", "--net=none", "-e", "GREETING=hi", "-w", "/op", "-u", "root",
                  "app:1")
    assert out == "hi from /op as root:0\n"
    assert ibox.ok("run", "--rm", "--net=none", "app:1", "echo $PATH") == (
        PATH_ENV.removeprefix("PATH=") + "\n")
    assert ibox.ok("run", "--rm", "--net=none", "--entrypoint", "/bin/echo", "app:1", "x") == "x\n"
    status = ibox.ok("run", "--rm", "--net=none", "app:1",
                     "grep -E 'Cap(Eff|Prm|Bnd)' /proc/$$/status")
    assert status.split() == ["CapPrm:", "0000000000000000", "CapEff:", "0000000000000000",
                              "CapBnd:", "00000000a80425fb"]
    # exec takes the container's user too
    ibox.ok("run", "-d", "--name", "app", "--net=none", "app:1", "exec sleep 60")
    assert ibox.ok("exec", "app", "id", "-un") == "app\n"
    assert ibox.run("run", "--rm", "--net=none", "nosuch:1").code == 125


def test_two_containers_share_the_layer_directories(ibox: RuntimeSandbox) -> None:
    for name in ("one", "two"):
        ibox.ok("run", "-d", "--name", name, "--net=none", "app:1", "exec sleep 60")
    inodes = {name: ibox.ok("exec", name, "stat", "-c", "%i", "/bin/busybox", "/data/b").split()
              for name in ("one", "two")}
    bottom, middle, _ = _layers(ibox)
    on_disk = [str(os.stat(bottom / "bin" / "busybox").st_ino),
               str(os.stat(middle / "data" / "b").st_ino)]
    assert inodes["one"] == inodes["two"] == on_disk
    rootfs = {name: ibox.state(name)["rootfs"] for name in ("one", "two")}
    assert rootfs["one"]["lower"] == rootfs["two"]["lower"]
    assert rootfs["one"]["upper"] != rootfs["two"]["upper"]
    assert rootfs["one"]["image"] == json.loads(ibox.ok("image", "inspect", "app:1"))[0]["Id"]
    links = rootfs["one"]["lower"].split(":")
    assert [os.readlink(ibox.image_store / "l" / link) for link in reversed(links)] == [
        f"../layers/{p.parent.name}/diff" for p in _layers(ibox)]


def test_publish_all_maps_every_exposed_port(ibox: RuntimeSandbox) -> None:
    serve = "mkdir -p /w && echo published > /w/index.html && exec httpd -f -p 80 -h /w"
    ibox.ok("run", "-d", "--name", "web", "-P", "-u", "0", "app:1", serve)
    ports = {f"{p['containerPort']}/{p['protocol']}": p["hostPort"]
             for p in ibox.inspect("web")["NetworkSettings"]["Ports"]}
    assert set(ports) == {"80/tcp", "5353/udp"}
    assert all(1024 < port < 65536 for port in ports.values())
    assert ibox.fetch(f"http://127.0.0.1:{ports['80/tcp']}/").strip() == "published"
    # -p wins over -P for its port; the other exposed port still gets one
    ibox.ok("run", "-d", "--name", "web2", "-P", "-p", "18080:80", "-u", "0", "app:1", serve)
    mapped = {p["containerPort"]: p["hostPort"]
              for p in ibox.inspect("web2")["NetworkSettings"]["Ports"]}
    assert mapped[80] == 18080
    assert mapped[5353] not in (18080, ports["5353/udp"])


def test_rmi_is_refused_while_a_container_uses_the_image(
    ibox: RuntimeSandbox, app_archive: tuple[Image, Path]
) -> None:
    ibox.ok("run", "-d", "--name", "user", "--net=none", "app:1", "exec sleep 60")
    ran = ibox.run("rmi", "-f", "app:1")
    assert ran.code == 125
    assert "container user uses image" in ran.stderr
    ibox.ok("stop", "-t", "0", "user")
    ran = ibox.run("rmi", "app:1")  # a stopped container still stacks it: -f is needed
    assert ran.code == 125
    assert "rmi -f" in ran.stderr
    ibox.ok("rm", "user")
    out = ibox.ok("rmi", "app:1").splitlines()
    assert out[:2] == ["Untagged: localhost/app:1", f"Deleted: {app_archive[0].id}"]
    assert len(out) == 5  # and its three layers
    assert list((ibox.image_store / "layers").iterdir()) == []
    assert ibox.ok("images", "-q") == "\n"


def test_an_images_symlinks_never_lead_the_runtime_to_the_host(
    ibox: RuntimeSandbox, tmp_path: Path, app_archive: tuple[Image, Path]
) -> None:
    """/etc and /dev as absolute symlinks to a host directory: the runtime writes the
    container's /etc files and makes its /dev mount point inside the container's root."""
    trap = tmp_path / "trap"
    trap.mkdir()
    hostile = Image(layers=[*app_archive[0].layers,
                            layer_tar([symlink("etc", str(trap)), symlink("dev", f"{trap}/dev")])],
                    config={"Cmd": ["/bin/cat", f"{trap}/hostname"]}, name="localhost/hostile:1")
    ibox.ok("load", "-i", str(write_docker_archive(hostile, tmp_path / "hostile.tar")))
    assert ibox.ok("run", "--rm", "--net=none", "--hostname", "inside", "hostile:1") == "inside\n"
    assert list(trap.iterdir()) == []
