"""Kubernetes' node path: kubelet's CRI calls to containerd 1.6, whose CRI plugin runs pycni's
installed plugins and default conflist (``cri_support``: a CRI v1 client generated at test
time, containerd started in the client sandbox, images built locally, nothing pulled).

What kubelet asks and what is checked, from the kernel:
- ``Version`` and ``Status``: NetworkReady (the CRI plugin loaded pycni's conflist).
- ``RunPodSandbox`` with ``port_mappings``, ``dns_config`` and the
  ``kubernetes.io/ingress-bandwidth``/``egress-bandwidth`` annotations, which containerd hands
  the plugins as go-cni's capitalised ``portMappings`` and ``bandwidth`` capability args;
  ``PodSandboxStatus`` for the pod IPs; a container in each pod (``CreateContainer``,
  ``StartContainer``, ``ExecSync``, ``StopContainer``, ``RemoveContainer``).
- The hostPort answers on the node's address from outside the node (a second network
  namespace) and from the node; two pods have different addresses and reach each other; a
  tbf at the annotated ingress rate sits on the pod's host veth and an ifb shapes its egress.
- ``StopPodSandbox`` (CNI DEL) then ``RemovePodSandbox`` (containerd 1.6 sends the whole DEL
  chain again, with an empty ``CNI_NETNS``) leave no veth, ifb, IPAM reservation, nft
  element, results-cache entry, host-port reservation or netns pin; the node's links,
  addresses, routes, qdiscs, nft tables and sysctls are as they were but for what the
  network keeps by design (the ``pycni0`` bridge, pycni's nft tables, ``ip_forward``).

Host changes: as in ``test_containerd`` (cgroups under the test's own, swept; everything else
on the sandbox's tmpfs or in its network namespace), and ``HostCheck`` proves the machine
unchanged. Runs with the plugins in-process and through ``pycni serve`` in the sandbox.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pycni_run.rootfs import ensure_image

from tests.e2e.clients_support import (
    ClientSandbox,
    HostCheck,
    assert_clean,
    assert_plugins_ran_where_told,
    node_state,
    open_sandbox,
    pycni_leftovers,
)
from tests.e2e.cri_support import (
    NODE_IP,
    CriApi,
    CriClient,
    NodeOutside,
    Pod,
    find_cri_proto,
    http_get,
    load_cri_api,
    short_socket_dir,
    start_containerd,
    tc_qdiscs,
)
from tests.support import REPO

pytestmark = pytest.mark.slow

HOST_PORT = 18080
INGRESS = ("10M", 10_000_000)  # the annotation, and the rate in bit/s it stands for
EGRESS = ("20M", 20_000_000)
BANDWIDTH = {"kubernetes.io/ingress-bandwidth": INGRESS[0],
             "kubernetes.io/egress-bandwidth": EGRESS[0]}
# What the network keeps once its last pod is gone, by design (as Docker keeps docker0).
KEPT_LINKS = {"pycni0 bridge"}
KEPT_NFT_TABLES = {"inet pycni", "inet pycni_portmap"}
# ip_forward, and what the kernel sets along with it (devinet's inet_forward_change)
KEPT_SYSCTLS = {"net.ipv4.ip_forward = 1", "net.ipv4.conf.all.forwarding = 1",
                "net.ipv4.conf.default.forwarding = 1", "net.ipv4.conf.all.accept_redirects = 0"}


@dataclass
class Node:
    box: ClientSandbox
    cri: CriClient
    outside: NodeOutside
    pods_dir: Path

    def pod(self, name: str, **kw: Any) -> Pod:
        return Pod(self.cri.api, name, self.pods_dir, **kw)

    def cached_result(self, pod_id: str) -> dict[str, Any]:
        """What go-cni's libcni cached for the pod's attachment to the pycni network."""
        doc: dict[str, Any] = json.loads(self.box.read(f"/var/lib/cni/results/pycni-{pod_id}-eth0"))
        return dict(doc["result"])


@pytest.fixture(scope="session")
def cri_api(tmp_path_factory: pytest.TempPathFactory) -> CriApi:
    try:
        proto = find_cri_proto(REPO)
    except FileNotFoundError as err:
        pytest.fail(str(err))  # never a skip: the CRI path would go untested unnoticed
    return load_cri_api(proto, tmp_path_factory.mktemp("cri-stubs"))


@pytest.fixture
def node(tmp_path: Path, cni_bin: Path, plugin_mode: str, cri_api: CriApi) -> Iterator[Node]:
    for tool in ("containerd", "ctr", "runc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (make test installs containerd and runc)")
    host = HostCheck()
    rootfs = Path(ensure_image(str(tmp_path / "images"), "busybox"))
    with short_socket_dir() as sockets, open_sandbox(
        tmp_path / "box", cni_bin, tag="cri", plugin_mode=plugin_mode or "inprocess"
    ) as box:
        socket = sockets / "containerd.sock"
        start_containerd(box, socket=socket, workdir=tmp_path, rootfs=rootfs)
        cri = CriClient(cri_api, str(socket))
        outside = NodeOutside(box)
        outside.create()
        try:
            yield Node(box, cri, outside, tmp_path / "pods")
        finally:
            cri.close()
    # close() stopped containerd (SIGTERM to its PID), then the sandbox, and swept cgroups
    assert box.cgroup.paths == [], f"cgroups left: {box.cgroup.paths}"
    assert host.restore_sysctls() == [], "a client changed global sysctls (restored)"
    assert host.changes() == []


def test_version_and_network_ready(node: Node) -> None:
    version = node.cri.call("Version", version="v1")
    assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
    assert node.cri.network_ready()


def _root_tbf_rate(box: ClientSandbox, dev: str) -> int | None:
    roots = [q for q in tc_qdiscs(box, dev) if q.get("root") and q["kind"] == "tbf"]
    return int(roots[0]["options"]["rate"]) if roots else None


def _redirect_targets(box: ClientSandbox, dev: str) -> list[str]:
    filters = json.loads(box.sh("tc", "-j", "filter", "show", "dev", dev, "ingress").ok() or "[]")
    return [a["to_dev"] for f in filters for a in f.get("options", {}).get("actions", [])]


def _assert_shaped(node: Node, pod_id: str) -> None:
    """A tbf at the ingress rate on the host veth; egress redirected to an ifb shaped at the
    egress rate (tc reports rates in bytes/s)."""
    interfaces = [i["name"] for i in node.cached_result(pod_id)["interfaces"]]
    veth, ifb = interfaces[1], interfaces[-1]
    assert _root_tbf_rate(node.box, veth) == INGRESS[1] // 8
    assert ifb in pycni_leftovers(node.box)["ifbs"]
    assert _root_tbf_rate(node.box, ifb) == EGRESS[1] // 8
    assert _redirect_targets(node.box, veth) == [ifb]


def _assert_node_as_before(before: dict[str, set[str]], after: dict[str, set[str]]) -> None:
    """What changed on the node is what the network keeps by design, and nothing else (the
    bridge's own addresses and routes go with the bridge)."""
    assert after["links"] - before["links"] == KEPT_LINKS
    assert after["nft tables"] - before["nft tables"] == KEPT_NFT_TABLES
    assert after["sysctls"] - before["sysctls"] <= KEPT_SYSCTLS
    changed = {}
    for key, was in before.items():
        if key in ("links", "nft tables", "sysctls"):
            continue
        gone = {x for x in was - after[key] if "pycni0" not in x}
        new = {x for x in after[key] - was if "pycni0" not in x}
        if gone or new:
            changed[key] = {"gone": sorted(gone), "new": sorted(new)}
    assert changed == {}


@dataclass
class RunningPod:
    pod_id: str
    container_id: str
    ip: str


def _start(node: Node, pod: Pod, *argv: str) -> RunningPod:
    """RunPodSandbox, then one container in it, as kubelet starts a pod."""
    pod_id = node.cri.run_pod(pod.sandbox_config())
    container = node.cri.start_container(pod_id, pod.sandbox_config(),
                                         pod.container_config(argv[0], *argv))
    return RunningPod(pod_id, container, node.cri.pod_ip(pod_id))


def _assert_served_and_reachable(node: Node, web: RunningPod, cli: RunningPod) -> None:
    cri, box = node.cri, node.box
    # StartContainer returns once httpd runs, not once it listens
    box.wait_for(lambda: http_get(box.sh, f"http://{web.ip}/passwd").startswith("root:"),
                 what="httpd listening in the web pod")
    # the hostPort, from outside the node and from the node itself
    assert http_get(node.outside.sh, f"http://{NODE_IP}:{HOST_PORT}/passwd").startswith("root:")
    for address in (NODE_IP, "127.0.0.1"):
        assert http_get(box.sh, f"http://{address}:{HOST_PORT}/group").startswith("root:")
    # pod to pod, both ways, and the pod's DNS as kubelet configured it
    code, out = cri.exec_sync(cli.container_id, "wget", "-qO-", f"http://{web.ip}/passwd")
    assert (code, out[:5]) == (0, "root:")
    assert cri.exec_sync(web.container_id, "ping", "-c1", "-W2", cli.ip)[0] == 0
    resolv = cri.exec_sync(web.container_id, "cat", "/etc/resolv.conf")[1]
    assert "nameserver 10.96.0.10" in resolv


def _stop_and_remove(node: Node, pods: list[RunningPod]) -> None:
    """As kubelet tears pods down; pycni keeps nothing per pod after Stop, nor after Remove."""
    for pod in pods:
        node.cri.stop_container(pod.container_id)
    for pod in pods:
        node.cri.stop_pod(pod.pod_id)  # CNI DEL with the pod's netns
    assert_clean(node.box)
    for pod in pods:
        node.cri.remove_pod(pod.pod_id)  # the DEL chain again, CNI_NETNS=""
    assert node.cri.call("ListPodSandbox").items == []
    assert_clean(node.box)


def test_pods_with_a_host_port_and_bandwidth_work_and_leave_the_node_as_it_was(
    node: Node,
) -> None:
    before = node_state(node.box)
    web = _start(node, node.pod("web", host_ports={HOST_PORT: 80}, annotations=BANDWIDTH),
                 "httpd", "-f", "-p", "80", "-h", "/etc")
    cli = _start(node, node.pod("cli"), "sleep", "infinity")
    assert web.ip.startswith("10.99.")
    assert cli.ip.startswith("10.99.")
    assert web.ip != cli.ip
    _assert_served_and_reachable(node, web, cli)
    _assert_shaped(node, web.pod_id)
    during = pycni_leftovers(node.box)
    assert sorted(during["ipam"]) == sorted([web.ip, cli.ip])
    assert len(during["veths"]) == 2
    assert len(during["ifbs"]) == 1  # the cli pod asked for no shaping
    assert len(during["netns pins"]) == 2
    _stop_and_remove(node, [web, cli])
    assert http_get(node.outside.sh, f"http://{NODE_IP}:{HOST_PORT}/passwd") == ""
    _assert_node_as_before(before, node_state(node.box))
    assert_plugins_ran_where_told(node.box)
