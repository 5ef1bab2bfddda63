"""podman 4.3 with its CNI backend runs pycni's installed plugins and default network unchanged.

podman runs inside a throwaway sandbox (clients_support): its own mount, network, pid and
cgroup namespaces, tmpfs over every directory it writes, pycni's executables on /opt/cni/bin
and `pycni install`'s conf dir on /etc/cni/net.d. The busybox image is built locally and
loaded as a docker-archive (no registry is reachable).

Host changes podman makes, and how they are undone:
- cgroups: its cgroupfs manager creates ``libpod_parent/conmon`` and
  ``libpod_parent/libpod-<id>`` in every v1 hierarchy. The sandbox's cgroup namespace is rooted
  at the test's own cgroup (``pycni-test-podman-<pid>``), so they land under it; the fixture
  kills what is left there and removes the whole subtree.
- Nothing else: ``/var/lib/containers``, ``/var/lib/cni`` (libcni's results cache),
  ``/run/{netns,runc,libpod,containers}``, ``/dev/shm``, ``/var/tmp`` and ``/etc/containers``
  are the sandbox's tmpfs; the bridge, veths, nft tables, ``ip_forward`` and conmon's host-port
  socket are in the sandbox netns. ``HostCheck`` asserts the root netns (links, addresses,
  routes, rules, nft ruleset), every global sysctl, the top-level cgroups, the kernel modules
  and those host paths are as they were.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycni_run.rootfs import ensure_image

from tests.e2e.clients_support import (
    CONF_DIR,
    IMAGE,
    NETWORK,
    PODMAN_CONTAINERS_CONF,
    PODMAN_STORAGE_CONF,
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
HOST_PORT = 18080


class Podman:
    """`podman ...` inside the sandbox, configured by /etc/containers there (its tmpfs)."""

    def __init__(self, box: ClientSandbox) -> None:
        self.box = box

    def __call__(self, *args: str, timeout: float = 120) -> Ran:
        # CONTAINERS_CONF: this file only, on top of podman's built-in defaults (whose
        # capability set has NET_RAW: busybox ping works without --cap-add).
        return self.box.sh("podman", *args, timeout=timeout,
                           env={"CONTAINERS_CONF": "/etc/containers/containers.conf"})

    def ok(self, *args: str, timeout: float = 120) -> str:
        ran = self(*args, timeout=timeout)
        assert ran.code == 0, f"podman {' '.join(args)} -> {ran.code}: {ran.stderr}"
        return ran.stdout

    def ip(self, name: str) -> str:
        return self.ok("inspect", "-f", f"{{{{.NetworkSettings.Networks.{NETWORK}.IPAddress}}}}",
                       name).strip()


@pytest.fixture
def podman(tmp_path: Path, cni_bin: Path, plugin_mode: str) -> Iterator[Podman]:
    if shutil.which("podman") is None:
        pytest.skip("podman: not installed (Debian package `podman`)")
    host = HostCheck()
    rootfs = ensure_image(str(tmp_path / "images"), "busybox")
    archive = build_image_archive(Path(rootfs), tmp_path / "busybox.tar")
    files = {
        "/etc/containers/containers.conf": PODMAN_CONTAINERS_CONF,
        "/etc/containers/storage.conf": PODMAN_STORAGE_CONF,
    }
    with open_sandbox(tmp_path / "box", cni_bin, tag="podman", files=files,
                      plugin_mode=plugin_mode or "inprocess") as box:
        assert too_new_for_libcni_1_1(box.conf_dir) == []
        client = Podman(box)
        info = client("info", "--format", "{{.Host.NetworkBackend}} {{.Host.CgroupsVersion}}")
        if info.code != 0:
            pytest.skip(f"podman: {info.stderr.strip().splitlines()[-1]}")
        assert info.stdout.split() == ["cni", "v1"], info.stdout
        client.ok("load", "-i", str(archive))
        try:
            yield client
        finally:
            client("rm", "-a", "-f", "-t", "0")
    assert box.cgroup.paths == [], f"cgroups left: {box.cgroup.paths}"
    restored = host.restore_sysctls()
    assert restored == [], f"a client changed global sysctls (restored): {restored}"
    assert host.changes() == []


def test_podman_sees_the_installed_pycni_network(podman: Podman) -> None:
    inspect = json.loads(podman.ok("network", "inspect", NETWORK))[0]
    assert inspect["driver"] == "bridge"
    assert inspect["network_interface"] == "pycni0"
    assert inspect["subnets"][0]["subnet"] == "10.99.0.0/16"
    assert inspect["subnets"][0]["gateway"] == GATEWAY
    names = podman.ok("network", "ls", "--format", "{{.Name}}").split()
    assert NETWORK in names
    assert podman.box.ls(CONF_DIR)[0] == "10-pycni.conflist"


def test_run_rm_gets_an_address_and_a_route_and_leaves_nothing(podman: Podman) -> None:
    out = podman.ok("run", "--rm", "--network", NETWORK, IMAGE, "sh", "-c",
                    f"ip -4 -o addr show eth0; ip route; ping -c1 -W2 {GATEWAY}")
    assert " 10.99." in out, out
    assert f"default via {GATEWAY}" in out, out
    assert "1 packets received" in out, out
    assert_clean(podman.box)
    assert_plugins_ran_where_told(podman.box)


def test_two_containers_reach_each_other_and_a_published_port_then_leave_nothing(
    podman: Podman,
) -> None:
    podman.ok("run", "-d", "--name", "web", "--network", NETWORK, "-p", f"{HOST_PORT}:80",
              IMAGE, "httpd", "-f", "-p", "80", "-h", "/etc")
    podman.ok("run", "-d", "--name", "cli", "--network", NETWORK, IMAGE, "sleep", "600")
    web, cli = podman.ip("web"), podman.ip("cli")
    assert web != cli
    assert web.startswith("10.99.")
    assert cli.startswith("10.99.")

    # container to container, both ways, ICMP and TCP
    podman.ok("exec", "cli", "ping", "-c1", "-W2", web)
    podman.ok("exec", "web", "ping", "-c1", "-W2", cli)
    assert podman.ok("exec", "cli", "wget", "-qO-", f"http://{web}:80/passwd").startswith("root:")
    # the published port: from another container through the gateway (hairpin through the
    # bridge), and from the sandbox host on loopback and on the bridge address
    assert "nogroup" in podman.ok("exec", "cli", "wget", "-qO-",
                                  f"http://{GATEWAY}:{HOST_PORT}/group")
    for address in ("127.0.0.1", GATEWAY):
        got = podman.box.sh("busybox", "wget", "-qO-", f"http://{address}:{HOST_PORT}/passwd")
        assert got.ok().startswith("root:"), (address, got)
    during = pycni_leftovers(podman.box)
    assert sorted(during["ipam"]) == sorted([web, cli])
    assert len(during["veths"]) == 2
    assert len(during["results cache"]) == 2

    podman.ok("stop", "-t", "0", "web", "cli")
    podman.ok("rm", "web", "cli")
    assert_clean(podman.box)
    assert str(HOST_PORT) not in podman.box.sh("ss", "-ltn").stdout  # conmon let the port go
    assert_plugins_ran_where_told(podman.box)


def test_a_network_made_by_pycni_network_create_works_under_podman(podman: Podman) -> None:
    box = podman.box

    def pycni_network(*args: str) -> Ran:
        # pycni's defaults are podman's paths: /etc/cni/net.d, /var/lib/cni, /opt/cni/bin
        return box.sh(sys.executable, "-m", "pycni.cli", "network", *args)

    assert pycni_network("create", "--label", "app=shop", "appnet").ok() == "appnet\n"
    assert "appnet" in podman.ok("network", "ls", "--format", "{{.Name}}").split()
    inspect = json.loads(podman.ok("network", "inspect", "appnet"))[0]
    subnet = inspect["subnets"][0]["subnet"]
    assert subnet == "10.100.0.0/24"  # the first of the default pool: the sandbox routes none
    assert inspect["labels"] == {"app": "shop"}
    assert inspect["network_interface"].startswith("pycni-")

    for name in ("one", "two"):
        podman.ok("run", "-d", "--name", name, "--network", "appnet", IMAGE, "sleep", "600")
    ips = {n: podman.ok("inspect", "-f", "{{.NetworkSettings.Networks.appnet.IPAddress}}",
                        n).strip() for n in ("one", "two")}
    assert all(ip.startswith("10.100.0.") for ip in ips.values()), ips
    podman.ok("exec", "one", "ping", "-c1", "-W2", ips["two"])
    podman.ok("exec", "two", "ping", "-c1", "-W2", ips["one"])

    # podman's attachments are in libcni's cache: pycni sees them, by name
    (doc,) = json.loads(pycni_network("inspect", "appnet").ok())
    assert sorted((c["Name"], c["IPv4Address"].split("/")[0]) for c in doc["Containers"]) == \
        sorted(ips.items())
    refused = pycni_network("rm", "appnet")
    assert refused.code == 1
    assert "containers one, two" in refused.stderr

    podman.ok("stop", "-t", "0", "one", "two")
    podman.ok("rm", "one", "two")
    assert pycni_network("rm", "appnet").ok() == "appnet\n"
    assert "appnet" not in podman.ok("network", "ls", "--format", "{{.Name}}").split()
    assert inspect["network_interface"] not in {
        link["ifname"] for link in box.ip_json("link", "show")}
    assert_clean(box, "appnet")


def test_dns_network_created_by_podman_resolves_container_names_and_aliases(
    podman: Podman,
) -> None:
    """`podman network create` finds pycni's `dnsname` executable in cni_plugin_dirs and puts
    it in the chain; pycni's resolver then answers the containers by name and alias."""
    upstream = podman.box.workdir / "resolv.conf"  # the sandbox host's resolver: nothing there
    upstream.write_text("nameserver 127.0.0.53\n")
    podman.box.sh("mount", "--bind", str(upstream), "/etc/resolv.conf").ok()  # sandbox only
    podman.ok("network", "create", "--subnet", "10.77.0.0/24", "dnsnet")
    conflist = json.loads(podman.box.read(f"{CONF_DIR}/dnsnet.conflist"))
    assert conflist["plugins"][-1] == {"type": "dnsname", "domainName": "dns.podman",
                                       "capabilities": {"aliases": True}}
    podman.ok("run", "-d", "--name", "web", "--network", "dnsnet", "--network-alias", "www",
              IMAGE, "httpd", "-f", "-p", "80", "-h", "/etc")
    podman.ok("run", "-d", "--name", "cli", "--network", "dnsnet", IMAGE, "sleep", "600")
    web = podman.ok("inspect", "-f", "{{.NetworkSettings.Networks.dnsnet.IPAddress}}",
                    "web").strip()
    # podman wrote the result's resolver and search domain first (then its fallbacks for the
    # host's loopback server, which no container could reach)
    resolv = podman.ok("exec", "cli", "cat", "/etc/resolv.conf").splitlines()
    assert resolv[:2] == ["search dns.podman", "nameserver 127.0.0.11"], resolv
    for name in ("web", "www", "WEB.dns.podman"):
        out = podman.ok("exec", "cli", "nslookup", name, "127.0.0.11")
        assert f"Address: {web}" in out, (name, out)
    # by name through the C library's resolver, which asks the first nameserver
    assert podman.ok("exec", "cli", "wget", "-qO-", "http://www/passwd").startswith("root:")
    assert "Address: 10.77.0." in podman.ok("exec", "web", "nslookup", "cli", "127.0.0.11")
    assert len(podman.box.files_under("/run/pycni/dns/records")) == 2
    podman.ok("stop", "-t", "0", "web", "cli")
    podman.ok("rm", "web", "cli")
    assert podman.box.files_under("/run/pycni/dns/records") == []
    assert_clean(podman.box, "dnsnet")
    if podman.box.plugin_mode == "server":
        assert {"dnsname ADD", "dnsname DEL"} <= set(podman.box.server_calls())
