"""Images podman builds and saves, run by pycni-run: `podman build` from the local busybox
archive (three RUN layers: a file deleted, a directory replaced) and `podman save` in both
formats, in the podman tests' throwaway sandbox; then `pycni-run load` of each archive and a
run of the image in the runtime sandbox. Nothing is pulled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pycni_run.rootfs import ensure_image

from tests.e2e.clients_support import (
    PODMAN_CONTAINERS_CONF,
    PODMAN_STORAGE_CONF,
    build_image_archive,
)
from tests.e2e.clients_support import open_sandbox as open_client_sandbox
from tests.e2e.runtime_support import open_sandbox, shared_image_store

pytestmark = pytest.mark.slow

CONTAINERFILE = """\
FROM localhost/busybox:latest
RUN mkdir -p /data && echo one > /data/a && echo two > /data/b
RUN rm /data/a && mkdir -p /op && echo x > /op/x
RUN rm -rf /op && mkdir /op && echo y > /op/y
ENV FOO=bar
WORKDIR /data
EXPOSE 8080/tcp
USER nobody
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $FOO; id -un; pwd; ls /data; ls /op"]
"""
NAME = "localhost/built:1"


def _podman_archives(work: Path, cni_bin: Path, busybox: Path) -> dict[str, Path]:
    """Build the image with podman and save it as docker-archive and oci-archive."""
    context = work / "context"
    context.mkdir()
    (context / "Containerfile").write_text(CONTAINERFILE)
    base = build_image_archive(busybox, work / "busybox.tar")
    files = {"/etc/containers/containers.conf": PODMAN_CONTAINERS_CONF,
             "/etc/containers/storage.conf": PODMAN_STORAGE_CONF}
    env = {"CONTAINERS_CONF": "/etc/containers/containers.conf"}
    out = {fmt: work / f"{fmt}.tar" for fmt in ("docker-archive", "oci-archive")}
    with open_client_sandbox(work / "podman", cni_bin, tag="images", files=files) as box:
        box.sh("podman", "load", "-i", str(base), env=env, timeout=300).ok()
        box.sh("podman", "build", "--network", "none", "-t", NAME, str(context), env=env,
               timeout=600).ok()
        for fmt, path in out.items():
            box.sh("podman", "save", "--format", fmt, "-o", str(path), NAME, env=env,
                   timeout=300).ok()
    return out


def test_podman_built_images_run_in_both_formats(
    tmp_path: Path, cni_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman: not installed (Debian package `podman`)")
    busybox = Path(ensure_image(str(shared_image_store(tmp_path_factory)), "busybox"))
    archives = _podman_archives(tmp_path, cni_bin, busybox)
    (tmp_path / "runtime").mkdir()
    with open_sandbox(tmp_path / "runtime", cni_bin, tmp_path / "store") as box:
        ids = set()
        for archive in archives.values():
            assert box.ok("load", "-i", str(archive)) == f"Loaded image: {NAME}\n"
            ids.add(json.loads(box.ok("image", "inspect", NAME))[0]["Id"])
        assert len(ids) == 1  # the same image either way, its layers unpacked once
        assert len(list((box.image_store / "layers").iterdir())) == 4
        out = box.ok("run", "--rm", "--net=none", NAME)
        assert out.splitlines() == ["bar", "nobody", "/data", "b", "y"]
        box.ok("run", "-d", "--name", "p", "-P", NAME, "exec sleep 60")
        ports = box.inspect("p")["NetworkSettings"]["Ports"]
        assert [(p["containerPort"], p["protocol"]) for p in ports] == [(8080, "tcp")]
