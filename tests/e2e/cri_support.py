"""containerd's CRI plugin driven as kubelet drives it, inside the client sandbox.

- A small CRI v1 client: Python stubs generated at test time with grpcio-tools from the CRI
  API definition kept next to the checkout (``shared/reference/cri/api.proto``: kubelet's
  ``k8s.io/cri-api`` v0.25, what containerd 1.6 serves), never a copy of it in the project.
- containerd (Debian's package) in the sandbox of ``clients_support`` with ``CRI_CONFIG``:
  its CRI plugin's CNI ``bin_dir``/``conf_dir`` are pycni's installed plugins and conflist, its
  sandbox ("pause") image and the containers' image are OCI images built from the static
  busybox and imported with ``ctr images import`` (nothing is pulled). Its gRPC socket lives in
  a short directory the test process reaches too (the sandbox sees the host's ``/tmp``).
- The node's outside: a second network namespace, pinned on the sandbox's ``/run`` tmpfs,
  linked to the node by a veth, from which a pod's hostPort is reached as from another host.

The sandbox's PID 1 takes containerd, its shims and pods with it when it ends, and the
cgroups they made are swept by ``TestCgroup`` (containerd is stopped first, by its PID).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from tests.e2e.clients_support import (
    CONTAINERD_CONFIG,
    IMAGE,
    ClientSandbox,
    OciImage,
    build_oci_archive,
)

__all__ = [
    "CRI_CONFIG",
    "CRI_PROTO_ENV",
    "PAUSE_IMAGE",
    "CriApi",
    "CriClient",
    "NodeOutside",
    "Pod",
    "find_cri_proto",
    "load_cri_api",
    "start_containerd",
]

CRI_PROTO_ENV: Final = "PYCNI_CRI_PROTO"  # another api.proto than the shared reference's
PROTO_IN_SHARED: Final = Path("shared/reference/cri/api.proto")
K8S_NAMESPACE: Final = "k8s.io"  # the containerd namespace the CRI plugin keeps pods in
PAUSE_IMAGE: Final = "localhost/pause:latest"
NODE_IP: Final = "10.200.0.1"  # the node's address on the link to its outside
OUTSIDE_IP: Final = "10.200.0.2"
OUTSIDE_NETNS: Final = "/run/cri-outside"  # on the sandbox's /run tmpfs, not /run/netns
CALL_TIMEOUT: Final = 120.0

# The containerd config the CRI tests boot with (the README quotes it): the containerd
# tests' CNI section, plus the two settings a pod needs on this machine.
CRI_CONFIG: Final = CONTAINERD_CONFIG + f"""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"   # built locally and imported: nothing is pulled
  restrict_oom_score_adj = true     # this VM lacks CAP_SYS_RESOURCE (pause asks for -998)
"""


# --------------------------------------------------------------------------- the API


def find_cri_proto(repo: Path) -> Path:
    """The CRI API definition: ``$PYCNI_CRI_PROTO``, else ``shared/reference/cri/api.proto``
    in the checkout's parent (``../shared``) or the nearest ancestor that has one.
    FileNotFoundError if there is none (the test fails on it: it must not pass by not
    running)."""
    explicit = os.environ.get(CRI_PROTO_ENV)
    candidates = [Path(explicit)] if explicit else [
        parent / PROTO_IN_SHARED for parent in repo.resolve().parents]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = ", ".join(str(c) for c in candidates[:3])
    raise FileNotFoundError(
        f"the CRI API definition is missing (looked at {where}; set {CRI_PROTO_ENV})")


@dataclass(frozen=True)
class CriApi:
    """The generated modules: messages (``api_pb2``) and service stubs (``api_pb2_grpc``)."""

    pb: Any
    grpc: Any


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # api_pb2_grpc imports api_pb2 by that name
    spec.loader.exec_module(module)
    return module


def load_cri_api(proto: Path, out: Path) -> CriApi:
    """Generate the Python stubs of ``proto`` into ``out`` with grpcio-tools and load them."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    status = protoc.main([
        "grpc_tools.protoc", f"-I{proto.parent}", f"--python_out={out}",
        f"--grpc_python_out={out}", str(proto),
    ])
    assert status == 0, f"grpc_tools.protoc failed on {proto} ({status})"
    stem = proto.stem
    pb = _load(f"{stem}_pb2", out / f"{stem}_pb2.py")
    return CriApi(pb=pb, grpc=_load(f"{stem}_pb2_grpc", out / f"{stem}_pb2_grpc.py"))


# --------------------------------------------------------------------------- the client


@dataclass
class CriClient:
    """kubelet's side of the CRI: one gRPC channel to containerd's socket. ``last_ms`` is the
    wall time of the last call (what the benchmark reads)."""

    api: CriApi
    socket: str
    last_ms: float = 0.0
    _channel: Any = None

    def __post_init__(self) -> None:
        import grpc

        self._channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.runtime = self.api.grpc.RuntimeServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def call(self, rpc: str, **request: Any) -> Any:
        message = getattr(self.api.pb, f"{rpc}Request")(**request)
        started = time.perf_counter()
        reply = getattr(self.runtime, rpc)(message, timeout=CALL_TIMEOUT)
        self.last_ms = (time.perf_counter() - started) * 1000
        return reply

    def network_ready(self) -> bool:
        conditions = self.call("Status").status.conditions
        return any(c.type == "NetworkReady" and c.status for c in conditions)

    def run_pod(self, config: Any) -> str:
        return str(self.call("RunPodSandbox", config=config).pod_sandbox_id)

    def pod_ip(self, pod_id: str) -> str:
        return str(self.call("PodSandboxStatus", pod_sandbox_id=pod_id).status.network.ip)

    def stop_pod(self, pod_id: str) -> None:
        self.call("StopPodSandbox", pod_sandbox_id=pod_id)

    def remove_pod(self, pod_id: str) -> None:
        self.call("RemovePodSandbox", pod_sandbox_id=pod_id)

    def start_container(self, pod_id: str, pod_config: Any, config: Any) -> str:
        created = self.call("CreateContainer", pod_sandbox_id=pod_id, config=config,
                            sandbox_config=pod_config)
        self.call("StartContainer", container_id=created.container_id)
        return str(created.container_id)

    def stop_container(self, container_id: str) -> None:
        self.call("StopContainer", container_id=container_id, timeout=0)
        self.call("RemoveContainer", container_id=container_id)

    def exec_sync(self, container_id: str, *cmd: str, timeout: int = 30) -> tuple[int, str]:
        reply = self.call("ExecSync", container_id=container_id, cmd=list(cmd), timeout=timeout)
        return int(reply.exit_code), (reply.stdout + reply.stderr).decode(errors="replace")


@dataclass
class Pod:
    """One pod as kubelet asks for it: the sandbox config, then its containers'."""

    api: CriApi
    name: str
    log_root: Path
    host_ports: Mapping[int, int] = field(default_factory=dict)  # hostPort -> containerPort
    annotations: Mapping[str, str] = field(default_factory=dict)
    dns_servers: Sequence[str] = ("10.96.0.10",)
    dns_searches: Sequence[str] = ("default.svc.cluster.local", "svc.cluster.local")

    @property
    def uid(self) -> str:
        return f"uid-{self.name}"

    def sandbox_config(self) -> Any:
        pb = self.api.pb
        log_dir = self.log_root / f"default_{self.name}_{self.uid}"
        log_dir.mkdir(parents=True, exist_ok=True)
        ports = [pb.PortMapping(protocol=pb.TCP, container_port=inner, host_port=outer)
                 for outer, inner in self.host_ports.items()]
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=self.name, uid=self.uid, namespace="default"),
            hostname=self.name,
            log_directory=str(log_dir),
            dns_config=pb.DNSConfig(servers=list(self.dns_servers),
                                    searches=list(self.dns_searches), options=["ndots:5"]),
            port_mappings=ports,
            labels={"io.kubernetes.pod.name": self.name,
                    "io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.uid": self.uid},
            annotations=dict(self.annotations),
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"/kubepods/besteffort/pod{self.uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER,
                                                         ipc=pb.POD)),
            ),
        )

    def container_config(self, name: str, *argv: str) -> Any:
        pb = self.api.pb
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=IMAGE),
            command=list(argv[:1]),
            args=list(argv[1:]),
            log_path=f"{name}/0.log",
            labels={"io.kubernetes.container.name": name},
            linux=pb.LinuxContainerConfig(),
        )


# --------------------------------------------------------------------------- containerd


@contextlib.contextmanager
def short_socket_dir() -> Iterator[Path]:
    """A directory for containerd's sockets whose paths fit sun_path (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pycni-cri-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _boot_error(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines()
             if "level=error" in line or "level=fatal" in line]
    return lines[-1] if lines else log.read_text()[-2000:]


def start_containerd(box: ClientSandbox, *, socket: Path, workdir: Path, rootfs: Path) -> Path:
    """containerd with ``CRI_CONFIG`` inside ``box`` and the pause and busybox images
    imported into the CRI's namespace; its log file."""
    config = workdir / "containerd-cri.toml"
    config.write_text(CRI_CONFIG)
    log = workdir / "containerd.log"
    daemon = box.spawn("containerd", "--config", str(config), "--address", str(socket),
                       "--log-level", "debug", log=log)
    box.wait_for(lambda: daemon.poll() is not None or ctr(box, socket, "version").code == 0,
                 what="containerd", timeout=60)
    assert daemon.poll() is None, f"containerd exited: {_boot_error(log)}"
    archive = build_oci_archive(rootfs, workdir / "images.tar", [
        OciImage(name=PAUSE_IMAGE, cmd=(), entrypoint=("/bin/sleep", "infinity")),
        OciImage(name=IMAGE, cmd=("/bin/sh",)),
    ])
    imported = ctr(box, socket, "images", "import", str(archive))
    assert imported.code == 0, imported.stderr
    return log


def ctr(box: ClientSandbox, socket: Path, *args: str) -> Any:
    """``ctr`` on containerd's socket, in the CRI's namespace."""
    return box.sh("ctr", "--address", str(socket), "--namespace", K8S_NAMESPACE, *args,
                  timeout=120)


# --------------------------------------------------------------------------- the outside


@dataclass
class NodeOutside:
    """A second network namespace linked to the node (the sandbox) by a veth: the node has
    ``NODE_IP``, the outside ``OUTSIDE_IP``, and no route to the pods' subnet."""

    box: ClientSandbox

    def create(self) -> None:
        box = self.box
        box.sh("touch", OUTSIDE_NETNS).ok()
        box.sh("unshare", f"--net={OUTSIDE_NETNS}", "true").ok()
        box.sh("ip", "link", "add", "node0", "type", "veth", "peer", "name", "wan0",
               "netns", OUTSIDE_NETNS).ok()
        box.own_links.add("node0")
        box.sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", "node0").ok()
        box.sh("ip", "link", "set", "node0", "up").ok()
        for argv in (["ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "wan0"],
                     ["ip", "link", "set", "wan0", "up"], ["ip", "link", "set", "lo", "up"]):
            self.sh(*argv).ok()

    def sh(self, *argv: str) -> Any:
        return self.box.sh("nsenter", f"--net={OUTSIDE_NETNS}", *argv)


def http_get(run: Any, url: str) -> str:
    """``curl`` through ``run`` (a sandbox's or the outside's ``sh``); "" when it fails."""
    got = run("curl", "-s", "--max-time", "5", url)
    return str(got.stdout) if got.code == 0 else ""


def tc_qdiscs(box: ClientSandbox, dev: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        box.sh("tc", "-j", "qdisc", "show", "dev", dev).ok() or "[]")
    return found
