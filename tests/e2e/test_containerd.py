"""containerd 1.6 `ctr run --cni` runs pycni's installed plugins and default network unchanged.

A private containerd daemon (the config in ``CONTAINERD_CONFIG``: its CRI plugin's CNI
``bin_dir``/``conf_dir`` point at pycni, which is what kubelet's pods would use) runs inside a
throwaway sandbox (clients_support) and is killed by its PID. ``ctr run --cni`` does the CNI
work in the ctr process itself, always from the fixed ``/etc/cni/net.d`` (first file only)
and ``CNI_PATH=/opt/cni/bin:/usr/lib/cni`` -- no flag changes them, so the sandbox bind-mounts
pycni's conf dir and executables there and hides Debian's ``/usr/lib/cni``.

What ctr cannot do, and what is tested instead:
- It passes no ``portMappings`` capability (go-cni's ``WithCapabilityPortMap`` is never used
  by ctr), so there is no ``-p``. A ``runtimeConfig`` written into the conflist itself reaches
  the plugin unchanged (libcni only injects ``runtimeConfig`` when the runtime has capability
  args), so a static mapping for the one container started under it is what ctr can publish.
- It sends DEL with an empty ``CNI_NETNS``; pycni must still remove everything (the
  reference bridge leaks its masquerade rule there, clients.md §5.2).
- ``ctr run -d`` never sends DEL at all (only a foreground ``ctr run`` does, when its task
  exits): the containers here run under foreground ``ctr run --rm`` processes in the
  background and are stopped with ``ctr task kill``.

Host changes containerd, its shim and runc make, and how they are undone:
- cgroups: ``/default/<id>`` in every v1 hierarchy (ctr's default cgroup path). The sandbox's
  cgroup namespace is rooted at the test's own cgroup (``pycni-test-containerd-<pid>``), so they
  land under it; the fixture kills what is left there and removes the subtree.
- Nothing else: ``/var/lib/containerd``, ``/run/containerd`` (the shim's hard-coded socket and
  runc root), ``/var/lib/cni`` (go-cni's results cache) and ctr's fifo dir are the sandbox's
  tmpfs; bridge, veths, nft tables and sysctls are in the sandbox netns. ``HostCheck`` asserts
  the root netns, every global sysctl, the top-level cgroups, the kernel modules and the
  clients' usual host paths are as they were.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pycni_run.rootfs import ensure_image

from tests.e2e.clients_support import (
    CONTAINERD_CONFIG,
    IMAGE,
    ClientSandbox,
    HostCheck,
    Ran,
    assert_clean,
    assert_plugins_ran_where_told,
    build_image_archive,
    open_sandbox,
    pycni_leftovers,
    too_new_for_libcni_1_1,
)

pytestmark = pytest.mark.slow

GATEWAY = "10.99.0.1"  # conf/10-pycni.conflist
HOST_PORT = 18081
FIFO_DIR = "/run/ctr-fifo"  # ctr's default /run/containerd/fifo is fine too: both are tmpfs
STATIC_PORTS = "00-pycni-static-ports.conflist"


@dataclass
class Ctr:
    box: ClientSandbox
    workdir: Path

    def __call__(self, *args: str, timeout: float = 120) -> Ran:
        return self.box.sh("ctr", *args, timeout=timeout)

    def ok(self, *args: str, timeout: float = 120) -> str:
        ran = self(*args, timeout=timeout)
        assert ran.code == 0, f"ctr {' '.join(args)} -> {ran.code}: {ran.stderr}"
        return ran.stdout

    def run_rm(self, name: str, *argv: str, timeout: float = 120) -> Ran:
        """``ctr run --rm --cni`` in the foreground: ADD before start, DEL when it exits."""
        return self("run", "--rm", "--cni", "--fifo-dir", FIFO_DIR, IMAGE, name, *argv,
                    timeout=timeout)

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        """The same, left running in the background until its task is killed."""
        proc = self.box.spawn("ctr", "run", "--rm", "--cni", "--fifo-dir", FIFO_DIR, IMAGE,
                              name, *argv, log=self.workdir / f"ctr-{name}.log")
        self.box.wait_for(lambda: self.status(name) == "RUNNING", what=f"task {name}")
        return proc

    def status(self, name: str) -> str:
        for line in self("task", "ls").stdout.splitlines()[1:]:
            words = line.split()
            if words and words[0] == name:
                return words[-1]
        return ""

    def stop(self, name: str, proc: subprocess.Popen[bytes]) -> int:
        self.ok("task", "kill", "-s", "SIGKILL", name)
        code = proc.wait(timeout=60)
        self.box.daemons.remove(proc)
        return code

    def ip(self, name: str) -> str:
        out = self.ok("task", "exec", "--exec-id", f"ip-{name}", name,
                      "ip", "-4", "-o", "addr", "show", "eth0")
        return out.split()[3].split("/")[0]


def _boot_error(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines() if "level=error" in line or
             "level=fatal" in line]
    return lines[-1] if lines else log.read_text().strip().splitlines()[-1]


@pytest.fixture
def ctr(tmp_path: Path, cni_bin: Path, plugin_mode: str) -> Iterator[Ctr]:
    for tool in ("containerd", "ctr", "runc"):
        if shutil.which(tool) is None:
            pytest.skip(f"containerd: {tool} not installed (Debian packages containerd, runc)")
    host = HostCheck()
    rootfs = ensure_image(str(tmp_path / "images"), "busybox")
    archive = build_image_archive(Path(rootfs), tmp_path / "busybox.tar")
    config = tmp_path / "containerd.toml"
    config.write_text(CONTAINERD_CONFIG)
    with open_sandbox(tmp_path / "box", cni_bin, tag="containerd",
                      plugin_mode=plugin_mode or "inprocess") as box:
        assert too_new_for_libcni_1_1(box.conf_dir) == []
        log = tmp_path / "containerd.log"
        daemon = box.spawn("containerd", "--config", str(config), log=log)
        try:
            box.wait_for(lambda: daemon.poll() is not None or
                         box.sh("ctr", "version").code == 0, what="containerd")
        except AssertionError:
            pytest.skip(f"containerd: {_boot_error(log)}")
        if daemon.poll() is not None:
            pytest.skip(f"containerd: {_boot_error(log)}")
        client = Ctr(box, tmp_path)
        client.ok("images", "import", str(archive))
        yield client
    # close() stopped containerd (SIGTERM to its PID) and the sandbox, then swept cgroups
    assert box.cgroup.paths == [], f"cgroups left: {box.cgroup.paths}"
    restored = host.restore_sysctls()
    assert restored == [], f"a client changed global sysctls (restored): {restored}"
    assert host.changes() == []


def test_cri_plugin_reads_pycni_bin_and_conf_dirs(ctr: Ctr, tmp_path: Path) -> None:
    plugins = ctr.ok("plugins", "ls")
    assert any(line.split()[:2] == ["io.containerd.grpc.v1", "cri"] and line.split()[-1] == "ok"
               for line in plugins.splitlines()), plugins
    log = (tmp_path / "containerd.log").read_text()
    assert "NetworkPluginBinDir:/opt/cni/bin" in log
    assert "NetworkPluginConfDir:/etc/cni/net.d" in log
    assert "cni config load failed" not in log
    assert "failed to load cni" not in log.lower()


def test_run_rm_cni_gets_an_address_and_del_without_netns_leaves_nothing(ctr: Ctr) -> None:
    out = ctr.run_rm("one", "sh", "-c",
                     f"ip -4 -o addr show eth0; ip route; ping -c1 -W2 {GATEWAY}").ok()
    assert " 10.99." in out, out
    assert f"default via {GATEWAY}" in out, out
    assert "1 packets received" in out, out
    assert_clean(ctr.box)  # ctr's DEL came with CNI_NETNS="" (masquerade included)
    assert_plugins_ran_where_told(ctr.box)


def _publish_statically(conf_dir: Path, host_port: int) -> Path:
    """The installed pycni conflist with a fixed ``runtimeConfig`` for portmap, as the first
    file of the conf dir (same network name, bridge and IPAM as the default)."""
    doc = json.loads((conf_dir / "10-pycni.conflist").read_text())
    for plugin in doc["plugins"]:
        if plugin["type"] == "portmap":
            plugin["runtimeConfig"] = {"portMappings": [
                {"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]}
    path = conf_dir / STATIC_PORTS
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def test_two_containers_reach_each_other_and_a_static_port_then_leave_nothing(
    ctr: Ctr,
) -> None:
    static = _publish_statically(ctr.box.conf_dir, HOST_PORT)
    web = ctr.start("web", "httpd", "-f", "-p", "80", "-h", "/etc")
    static.unlink()  # the next container gets the default conflist: no port of its own
    cli = ctr.start("cli", "sleep", "600")
    web_ip, cli_ip = ctr.ip("web"), ctr.ip("cli")
    assert web_ip != cli_ip
    assert web_ip.startswith("10.99.")
    assert cli_ip.startswith("10.99.")

    ctr.ok("task", "exec", "--exec-id", "p1", "cli", "ping", "-c1", "-W2", web_ip)
    ctr.ok("task", "exec", "--exec-id", "p2", "web", "ping", "-c1", "-W2", cli_ip)
    got = ctr.ok("task", "exec", "--exec-id", "w1", "cli",
                 "wget", "-qO-", f"http://{web_ip}:80/passwd")
    assert got.startswith("root:")
    # the static mapping: hairpin from the other container, and from the sandbox host
    got = ctr.ok("task", "exec", "--exec-id", "w2", "cli",
                 "wget", "-qO-", f"http://{GATEWAY}:{HOST_PORT}/group")
    assert "nogroup" in got
    for address in ("127.0.0.1", GATEWAY):
        ran = ctr.box.sh("busybox", "wget", "-qO-", f"http://{address}:{HOST_PORT}/passwd")
        assert ran.ok().startswith("root:"), (address, ran)
    during = pycni_leftovers(ctr.box)
    assert sorted(during["ipam"]) == sorted([web_ip, cli_ip])
    assert len(during["veths"]) == 2
    assert len(during["results cache"]) == 2
    assert during["hostports"], "the static mapping was reserved"

    assert ctr.stop("cli", cli) == 137
    assert ctr.stop("web", web) == 137
    assert ctr.ok("containers", "ls", "-q").split() == []  # --rm removed them
    assert_clean(ctr.box)  # both DELs came with CNI_NETNS=""
    assert_plugins_ran_where_told(ctr.box)


def test_ctr_passes_no_port_mappings(ctr: Ctr) -> None:
    """Under the default conflist, portmap is called but ctr gives it nothing to publish."""
    assert "--publish" not in ctr("run", "--help").stdout  # and there is no -p to ask with
    proc = ctr.start("noports", "sleep", "600")
    during = pycni_leftovers(ctr.box)
    assert len(during["ipam"]) == 1
    assert not [name for name in during["nft elements"] if "portmap" in name], during
    assert during["hostports"] == []
    assert ctr.stop("noports", proc) == 137
    assert_clean(ctr.box)
