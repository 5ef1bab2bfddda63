"""`portmap` at scale: ADD with 32 published ports when 1000 containers already publish 32
each, against the same ADD on an empty host (issue #5's target: within 1.2x; Docker's
nftables backend took 22.8 s p50 there, moby#53466). Printed, never asserted.

The 1000 x 32 preload goes through the firewall backend and the host-port registry directly
(what an ADD writes, minus the process start); the timed ADDs are real plugin calls: the
installed ``portmap`` executable exec'd with a chained config, and ``skel.run`` in-process
(the same call without the interpreter start-up that dominates the exec'd figure).
Everything happens in a throwaway "host" netns; nothing touches the root netns.

    .venv/bin/python -m bench.bench_portmap [--containers 1000] [--ports 32] [-n 15]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from pycni.cni import skel
from pycni.firewall.hostports import Record, Registry
from pycni.firewall.model import AttachmentKey, PortMap, PortMapping
from pycni.firewall.nftables.portmap import NftPortmap
from pycni.net import netns
from pycni.plugins import PLUGINS

NETWORK = "benchnet"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@contextmanager
def sandbox_host(work: Path) -> Iterator[str]:
    """A host netns with a link routing 10.88.0.0/16 (the containers' subnet): one end of a
    veth pair (no dummy module on every kernel)."""
    host = netns.create(str(work / "host"))
    try:
        with netns.enter(host), IPRoute() as ipr:
            ipr.link("add", ifname="bench0", kind="veth", peer={"ifname": "bench1"})
            ipr.link("set", index=ipr.link_lookup(ifname="bench1")[0], state="up")
            idx = ipr.link_lookup(ifname="bench0")[0]
            ipr.addr("add", index=idx, address="10.88.0.1", prefixlen=16)
            ipr.link("set", index=idx, state="up")
        yield host
    finally:
        netns.remove(host)


def container_ip(i: int) -> str:
    return f"10.88.{i // 250}.{i % 250 + 2}"


def mappings(first_port: int, ports: int) -> tuple[PortMapping, ...]:
    return tuple(PortMapping(None, first_port + j, 80 + j) for j in range(ports))


def preload(data_dir: Path, containers: int, ports: int, contnetns: str) -> float:
    """What ``containers`` ADDs would leave behind; seconds it took."""
    backend, registry = NftPortmap(), Registry(str(data_dir), check_host_sockets=False)
    started = time.perf_counter()
    for i in range(containers):
        pm = PortMap(key=AttachmentKey(NETWORK, f"pre{i}", "eth0"),
                     mappings=mappings(10000 + i * ports, ports),
                     container_ipv4=container_ip(i), subnets=("10.88.0.0/16",))
        registry.reserve(Record(portmap=pm, netns=contnetns,
                                netns_id=f"{os.stat(contnetns).st_dev}:"
                                         f"{os.stat(contnetns).st_ino}", backend="nftables"))
        backend.setup(pm)
    return time.perf_counter() - started


def config(data_dir: Path, cid_ip: str, first_port: int, ports: int) -> bytes:
    prev = {"cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "sandbox": "/bench"}],
            "ips": [{"address": f"{cid_ip}/16", "gateway": "10.88.0.1", "interface": 0}]}
    doc: dict[str, Any] = {
        "cniVersion": "1.1.0", "name": NETWORK, "type": "portmap", "backend": "nftables",
        "dataDir": str(data_dir), "capabilities": {"portMappings": True},
        "runtimeConfig": {"portMappings": [
            {"hostPort": m.host_port, "containerPort": m.container_port, "protocol": "tcp"}
            for m in mappings(first_port, ports)]},
        "prevResult": prev,
    }
    return json.dumps(doc).encode()


def env_for(command: str, cid: str, contnetns: str, bin_dir: Path) -> dict[str, str]:
    return {"PATH": PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
            "CNI_NETNS": contnetns, "CNI_IFNAME": "eth0", "CNI_PATH": str(bin_dir),
            "PYCNI_NO_SERVER": "1"}


def exec_call(bin_dir: Path, command: str, cid: str, contnetns: str, conf: bytes) -> float:
    started = time.perf_counter()
    proc = subprocess.run([str(bin_dir / "portmap")], input=conf, capture_output=True,
                          env=env_for(command, cid, contnetns, bin_dir), check=False, timeout=60)
    took = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        raise RuntimeError(f"portmap {command} failed: {proc.stdout!r} {proc.stderr!r}")
    return took


def inproc_call(bin_dir: Path, command: str, cid: str, contnetns: str, conf: bytes) -> float:
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    code = skel.run(PLUGINS["portmap"], env=env_for(command, cid, contnetns, bin_dir),
                    stdin=io.BytesIO(conf), stdout=out, stderr=err)
    took = (time.perf_counter() - started) * 1000
    if code != 0:
        raise RuntimeError(f"portmap {command} failed: {out.getvalue()} {err.getvalue()}")
    return took


Call = Callable[[Path, str, str, str, bytes], float]


def timed_adds(call: Call, bin_dir: Path, data_dir: Path, contnetns: str, *, n: int,
               ports: int, tag: str) -> tuple[list[float], list[float]]:
    """n ADD/DEL pairs of one container publishing ``ports`` ports (50000+): (adds, dels)."""
    adds, dels = [], []
    warm = config(data_dir, "10.88.250.2", 50000, ports)
    call(bin_dir, "ADD", f"{tag}warm", contnetns, warm)  # untimed: caches, lazy imports
    call(bin_dir, "DEL", f"{tag}warm", contnetns, warm)
    for k in range(n):
        cid = f"{tag}{k}"
        conf = config(data_dir, "10.88.250.2", 50000, ports)
        adds.append(call(bin_dir, "ADD", cid, contnetns, conf))
        dels.append(call(bin_dir, "DEL", cid, contnetns, conf))
    return adds, dels


def p50(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def p90(xs: Sequence[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def row(label: str, xs: Sequence[float]) -> str:
    return f"  {label:<44} p50 {p50(xs):8.2f} ms   p90 {p90(xs):8.2f} ms   (n={len(xs)})"


def run(containers: int, ports: int, n: int) -> None:
    from pycni.install import install

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pycni-bench-pm-")))
        bin_dir, data_dir = work / "bin", work / "hostports"
        bin_dir.mkdir()
        install(bin_dir=str(bin_dir), conf_dir=None)
        host = stack.enter_context(sandbox_host(work))
        contnetns = netns.create(str(work / "container"))
        stack.callback(netns.remove, contnetns)
        stack.enter_context(netns.enter(host))
        print(f"portmap scale bench: {ports} tcp ports per ADD, nftables backend, "
              f"{containers} containers preloaded", flush=True)
        first = exec_call(bin_dir, "ADD", "first", contnetns, config(data_dir, "10.88.250.3",
                                                                      60000, ports))
        print(f"  first ADD on this host (creates the table): {first:8.2f} ms (exec'd)")
        exec_call(bin_dir, "DEL", "first", contnetns, config(data_dir, "10.88.250.3", 60000,
                                                              ports))
        results: dict[str, dict[int, tuple[list[float], list[float]]]] = {"exec": {}, "in": {}}
        for label, call in (("exec", exec_call), ("in", inproc_call)):
            results[label][0] = timed_adds(call, bin_dir, data_dir, contnetns, n=n,
                                           ports=ports, tag=f"{label}0-")
        took = preload(data_dir, containers, ports, contnetns)
        print(f"  preload: {containers} x {ports} mappings in {took:.1f} s "
              f"({containers * (2 * ports + ports)} map elements)", flush=True)
        for label, call in (("exec", exec_call), ("in", inproc_call)):
            results[label][containers] = timed_adds(call, bin_dir, data_dir, contnetns, n=n,
                                                    ports=ports, tag=f"{label}N-")
        for label, name in (("exec", "exec'd plugin"), ("in", "in-process skel.run")):
            base, loaded = results[label][0], results[label][containers]
            print(row(f"ADD {name}, empty host", base[0]))
            print(row(f"ADD {name}, {containers} x {ports} published", loaded[0]))
            print(f"  {'':<44} ratio p50 {p50(loaded[0]) / p50(base[0]):.2f}x (target <= 1.2x)")
            print(row(f"DEL {name}, empty host", base[1]))
            print(row(f"DEL {name}, {containers} x {ports} published", loaded[1]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_portmap", description=__doc__)
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--ports", type=int, default=32)
    parser.add_argument("-n", type=int, default=15, help="timed ADD/DEL pairs per point")
    ns = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_portmap needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    from tests.support import host_left_as_found

    with host_left_as_found():  # the bridge's lock file is on the host's /run
        run(ns.containers, ns.ports, ns.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
