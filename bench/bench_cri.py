"""Pod sandbox lifecycle under containerd 1.6's CRI, side by side with the reference plugins:
RunPodSandbox, StopPodSandbox and RemovePodSandbox as kubelet makes them, one run.

    python -m bench.bench_cri [-n PODS]

Two lanes, each a client sandbox of the CRI test (``tests.e2e.cri_support``) with its own
containerd and the same chain: ``bridge`` (+ ``host-local``) -> ``portmap`` -> ``bandwidth`` ->
``firewall`` -> ``loopback``.

- reference: Debian's ``containernetworking-plugins`` (``/usr/lib/cni``), the chain written
  with their keys (iptables underneath);
- pycni: pycni's installed plugins and default conflist, through ``pycni serve`` in the
  sandbox.

Two kinds of pod, in turns (lane after lane, pod after pod, so the VM's drift hits all
alike): ``plain`` (no hostPort, no bandwidth annotations: portmap and bandwidth pass
through) and ``k8s`` (a hostPort and both bandwidth annotations). Medians of the CRI calls'
wall times as the client sees them are printed with the ratio pycni / reference; the target
is <= 1.0x for each call. The CPU time each lane's cgroup spent on a pod (run + stop + remove,
everything in the lane) is printed too: unlike wall time, other jobs on the machine do not
inflate it. Nothing is asserted. Remove is where containerd 1.6 sends the whole
DEL chain a second time, with an empty ``CNI_NETNS``: DELs that have nothing left to do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["main"]

CALLS = ("RunPodSandbox", "StopPodSandbox", "RemovePodSandbox")
CPU = "CPU, whole pod"
KINDS = ("plain", "k8s")
WARMUP = 2
REFERENCE_BIN = Path("/usr/lib/cni")
REFERENCE_PLUGINS = ("bridge", "host-local", "portmap", "bandwidth", "firewall", "loopback")
HOST_PORT = 18080
BANDWIDTH = {"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "20M"}


def reference_conflist() -> dict[str, Any]:
    """pycni's default chain (conf/10-pycni.conflist) in the reference plugins' terms."""
    return {
        "cniVersion": "1.0.0",
        "name": "pycni",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "isDefaultGateway": True,
             "ipMasq": True, "hairpinMode": True, "capabilities": {"mac": True, "ips": True},
             "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam",
                      "ranges": [[{"subnet": "10.99.0.0/16", "gateway": "10.99.0.1"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
            {"type": "firewall"},
            {"type": "loopback"},
        ],
    }


@dataclass
class Lane:
    label: str
    cri: Any  # tests.e2e.cri_support.CriClient
    cpuacct: Path  # the lane's cgroup: containerd, shims, runc, plugins, pycni serve
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def cpu_ms(self) -> float:
        return int((self.cpuacct / "cpuacct.usage").read_text()) / 1e6

    def cycle(self, pod: Any, kind: str, *, record: bool) -> None:
        """One pod's sandbox: run, stop, remove; the three calls' wall ms, and the CPU time
        the whole lane spent on the pod (what the machine's other load cannot inflate)."""
        cpu = self.cpu_ms()
        pod_id = self.cri.run_pod(pod.sandbox_config())
        spent = {"RunPodSandbox": self.cri.last_ms}
        self.cri.stop_pod(pod_id)
        spent["StopPodSandbox"] = self.cri.last_ms
        self.cri.remove_pod(pod_id)
        spent["RemovePodSandbox"] = self.cri.last_ms
        spent[CPU] = self.cpu_ms() - cpu
        if record:
            for call, ms in spent.items():
                self.times.setdefault((kind, call), []).append(ms)


@contextlib.contextmanager
def open_lane(label: str, work: Path, *, api: Any, rootfs: Path) -> Iterator[Lane]:
    from pycni.install import install
    from tests.e2e import clients_support as clients
    from tests.e2e import cri_support as cri

    reference = label == "reference"
    bin_dir = work / "bin"
    if reference:  # copied: the sandbox hides /usr/lib/cni under a tmpfs before its binds
        bin_dir.mkdir(parents=True)
        for name in REFERENCE_PLUGINS:
            shutil.copy2(REFERENCE_BIN / name, bin_dir / name)
    else:
        install(bin_dir=str(bin_dir), conf_dir=None)
    with cri.short_socket_dir() as sockets, clients.open_sandbox(
        work / "box", bin_dir, tag=f"bench-cri-{label}",
        plugin_mode="inprocess" if reference else "server",
    ) as box:
        if reference:
            for path in box.conf_dir.iterdir():
                path.unlink()
            (box.conf_dir / "10-reference.conflist").write_text(json.dumps(reference_conflist()))
        cri.start_containerd(box, socket=sockets / "containerd.sock", workdir=work, rootfs=rootfs)
        client = cri.CriClient(api, str(sockets / "containerd.sock"))
        try:
            if not client.network_ready():
                raise RuntimeError(f"{label}: the CRI plugin's network is not ready")
            cpuacct = next(Path(p) for p in box.cgroup.paths
                           if (Path(p) / "cpuacct.usage").exists())
            yield Lane(label, client, cpuacct)
        finally:
            client.close()


def _pod(api: Any, work: Path, kind: str, n: int) -> Any:
    from tests.e2e.cri_support import Pod

    if kind == "plain":
        return Pod(api, f"plain-{n}", work / "pods")
    return Pod(api, f"k8s-{n}", work / "pods", host_ports={HOST_PORT: 80}, annotations=BANDWIDTH)


def run(pods: int, work: Path) -> list[Lane]:
    from pycni_run.rootfs import ensure_image

    from tests.e2e.cri_support import find_cri_proto, load_cri_api
    from tests.support import REPO

    api = load_cri_api(find_cri_proto(REPO), work / "stubs")
    rootfs = Path(ensure_image(str(work / "images"), "busybox"))
    with contextlib.ExitStack() as stack:
        lanes = [stack.enter_context(open_lane(label, work / label, api=api, rootfs=rootfs))
                 for label in ("reference", "pycni")]
        for n in range(WARMUP + pods):
            for kind in KINDS:
                for lane in lanes:
                    lane.cycle(_pod(api, work, kind, n), kind, record=n >= WARMUP)
        return lanes


def report(lanes: list[Lane], pods: int) -> None:
    ref, ours = lanes
    print(f"\nCRI pod sandboxes under containerd 1.6, median of {pods} pods after {WARMUP} "
          "warm-up pods, lanes and kinds in turns (wall ms, as the CRI client sees them):")
    print(f"  {'pod':5}  {'call':17}  {'reference':>9}  {'pycni serve':>11}  {'ratio':>6}  "
          "target <= 1.0x")
    for kind in KINDS:
        for call in (*CALLS, CPU):
            theirs = statistics.median(ref.times[(kind, call)])
            mine = statistics.median(ours.times[(kind, call)])
            ratio = mine / theirs
            verdict = "met" if ratio <= 1.0 else f"NOT met (+{mine - theirs:.0f} ms)"
            if call == CPU:
                verdict = "(no target: for reading the wall times)"
            print(f"  {kind:5}  {call:17}  {theirs:9.1f}  {mine:11.1f}  {ratio:5.2f}x  {verdict}")
    print("  plain: no hostPort, no bandwidth annotations; k8s: hostPort 18080 and "
          "kubernetes.io/{ingress,egress}-bandwidth 10M/20M; CPU: the lane's cgroup (containerd, "
          "shims, runc, plugins, pycni serve) over run + stop + remove")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_cri")
    parser.add_argument("-n", "--pods", type=int, default=10, help="pods per kind and lane")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_cri: needs root (namespaces, cgroups, containerd); skipped", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory(prefix="pycni-bench-cri-") as work:
        lanes = run(args.pods, Path(work))
    report(lanes, args.pods)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
